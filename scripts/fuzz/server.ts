/**
 * The standalone server fuzzer (docs/reliability.md):
 *
 *   node --import tsx scripts/fuzz/server.ts --sessions 10000 [--seed S] [--concurrency 4]
 *        [--time-limit SECONDS] [--json]
 *
 * Prints progress on stderr and a report on stdout; exits 1 if anything was found.
 */
import { parseRunnerArgs } from './common.js';
import { fuzzServer } from './server-fuzz.js';

const args = parseRunnerArgs(process.argv.slice(2), {
  sessions: 10_000,
  seed: Date.now() % 2 ** 31,
  concurrency: 4,
  timeLimitMs: Number.POSITIVE_INFINITY,
  json: false,
});
const report = await fuzzServer({
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
    `server fuzz: seed ${report.seed}, ${report.sessions} sessions in ${(report.ms / 1000).toFixed(1)} s`,
  );
  console.log(`  generators: ${show(report.generators)}`);
  console.log(`  endings:    ${show(report.endings)}`);
  console.log(`  outcomes:   ${show(report.outcomes)}`);
  console.log(`  refusals:   ${show(report.refusals)}`);
  console.log(
    `  jobs run ${report.jobs}; follow-up requests ok ${report.followUps}; exact replies ${report.exactReplies}`,
  );
  console.log(`  peak RSS ${report.peakRssMiB} MiB`);
  console.log(`  findings: ${report.findings.length}`);
  for (const f of report.findings) console.log(`    #${f.session} ${f.kind}: ${f.detail}`);
}
process.exitCode = report.findings.length > 0 ? 1 : 0;
