/**
 * The standalone client fuzzer (docs/reliability.md): a hostile server against `run()`.
 *
 *   node --import tsx scripts/fuzz/client.ts --sessions 10000 [--seed S] [--concurrency 4]
 *        [--time-limit SECONDS] [--json]
 *
 * Prints progress on stderr and a report on stdout; exits 1 if anything was found.
 */
import { fuzzClient } from './client-fuzz.js';
import { runFuzzer, showCounts } from './common.js';

await runFuzzer('client', fuzzClient, (report) => [
  `  generators: ${showCounts(report.generators)}`,
  `  results:    ${showCounts(report.results)}`,
  `  exact outcomes ${report.exactOutcomes}; slowest session ${report.slowestMs} ms`,
]);
