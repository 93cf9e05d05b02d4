/**
 * The standalone client fuzzer (docs/reliability.md): a hostile server against `run()`.
 *
 *   node --import tsx scripts/fuzz/client.ts --sessions 10000 [--seed S] [--concurrency 4]
 *        [--time-limit SECONDS] [--json]
 *
 * Prints progress on stderr and a report on stdout; exits 1 if anything was found.
 */
import { fuzzClient } from './client-fuzz.js';
import { parseRunnerArgs } from './common.js';

const args = parseRunnerArgs(process.argv.slice(2), {
  sessions: 10_000,
  seed: Date.now() % 2 ** 31,
  concurrency: 4,
  timeLimitMs: Number.POSITIVE_INFINITY,
  json: false,
});
const report = await fuzzClient({
  sessions: args.sessions,
  seed: args.seed,
  concurrency: args.concurrency,
  ...(Number.isFinite(args.timeLimitMs) ? { timeLimitMs: args.timeLimitMs } : {}),
  log: (line) => console.error(`fuzz: ${line}`),
});
if (args.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const show = (counts: Record<string, number>) =>
    Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  console.log(
    `client fuzz: seed ${report.seed}, ${report.sessions} sessions in ${(report.ms / 1000).toFixed(1)} s`,
  );
  console.log(`  generators: ${show(report.generators)}`);
  console.log(`  results:    ${show(report.results)}`);
  console.log(`  exact outcomes ${report.exactOutcomes}; slowest session ${report.slowestMs} ms`);
  console.log(`  findings: ${report.findings.length}`);
  for (const f of report.findings) console.log(`    #${f.session} ${f.kind}: ${f.detail}`);
}
process.exitCode = report.findings.length > 0 ? 1 : 0;
