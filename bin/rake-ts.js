#!/usr/bin/env node
// The CLI, bundled into one module (dist/rake-ts.mjs) by `npm run build`, which `npm install`
// runs via `prepare`: one file to load at start instead of some 300 (scripts/bundle.mjs).
import { main } from '../dist/rake-ts.mjs';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 70;
  },
);
