/**
 * The standalone server fuzzer (docs/reliability.md):
 *
 *   node --import tsx scripts/fuzz/server.ts --sessions 10000 [--seed S] [--concurrency 4]
 *        [--time-limit SECONDS] [--json]
 *
 * Prints progress on stderr and a report on stdout; exits 1 if anything was found.
 */
import { runFuzzer, showCounts } from './common.js';
import { fuzzServer } from './server-fuzz.js';

await runFuzzer('server', fuzzServer, (report) => [
  `  generators: ${showCounts(report.generators)}`,
  `  endings:    ${showCounts(report.endings)}`,
  `  outcomes:   ${showCounts(report.outcomes)}`,
  `  refusals:   ${showCounts(report.refusals)}`,
  `  jobs run ${report.jobs}; follow-up requests ok ${report.followUps}; exact replies ${report.exactReplies}`,
  `  peak RSS ${report.peakRssMiB} MiB`,
]);
