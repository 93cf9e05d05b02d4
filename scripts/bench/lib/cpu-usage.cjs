// Preloaded into a measured Node program (`--require <this file>` in NODE_OPTIONS, as
// lib/proc.ts `runWithPreciseCpu` starts it): as the process exits, writes the CPU time it has
// used, user and system, in microseconds, to the file RAKE_BENCH_CPU_FILE names. The figure
// is `process.cpuUsage()`: getrusage(2) of the whole process, every thread (V8's compiler
// and garbage collector threads, libuv's pool) counted from the process's start, at the
// kernel's own resolution, where GNU time prints 10 ms ticks. What runs after the last 'exit'
// listener (Node's teardown) is not counted, the same few hundred microseconds every run.
//
// CommonJS, so that preloading it does not start Node's ES module loader in a program that
// would not otherwise start it (bin/rake-ts.js). The variable is removed from the
// environment, so no child the program starts writes the file too.
'use strict';
const { writeFileSync } = require('node:fs');

const file = process.env.RAKE_BENCH_CPU_FILE;
if (file !== undefined && file !== '') {
  delete process.env.RAKE_BENCH_CPU_FILE;
  process.on('exit', () => {
    const { user, system } = process.cpuUsage();
    writeFileSync(file, `${user} ${system}\n`);
  });
}
