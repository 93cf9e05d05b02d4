#!/usr/bin/env node
// The compiled server lives in dist/ (built by `npm run build`, which `npm install` runs via `prepare`).
import { main } from '../dist/src/cli/rakeserver.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 70;
  },
);
