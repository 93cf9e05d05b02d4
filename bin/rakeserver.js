#!/usr/bin/env node
// The server, bundled into one module (dist/rakeserver.mjs) by `npm run build`, which
// `npm install` runs via `prepare` (scripts/bundle.mjs).
import { main } from '../dist/rakeserver.mjs';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 70;
  },
);
