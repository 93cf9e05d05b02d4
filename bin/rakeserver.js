#!/usr/bin/env node
// The server, bundled into one module (dist/rakeserver.mjs) by `npm run build`, which
// `npm install` runs via `prepare` (scripts/bundle.mjs). This file is CommonJS, as
// bin/rake-ts.js is (bin/package.json); the bundle is an ES module, imported below.
const v8 = require('node:v8');

// A server is a daemon: the sooner V8 optimizes its per-job code, the less CPU each job
// takes from the commands beside it. Functions are optimized after an eighth of V8's default
// budget (66 KiB of bytecode): the first build a server serves costs it more (0.7-0.9 s of
// CPU more for 100 compiles), and from the fifth its CPU per build was 9-16% lower
// (scripts/bench/server-warmup.ts; docs/server.md). Set before the bundle is loaded.
if (!process.execArgv.some((a) => a.startsWith('--interrupt-budget'))) {
  v8.setFlagsFromString('--interrupt-budget=8192');
}
import('../dist/rakeserver.mjs')
  .then(({ main }) => main(process.argv.slice(2)))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err);
      process.exitCode = 70;
    },
  );
