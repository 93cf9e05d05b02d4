/**
 * Client start (issue 20): the whole life of `rake-ts` on a 1-action Rakefile (`remote-true`
 * on one loopback rakeserver), run as a user runs it (the program executed: `bin/rake-ts.js`,
 * through its `#!` line), against rake-ts at `--baseline REV` (default f774e28, main before
 * this work) in the same rounds, interleaved in rotating order. Wall time from spawn to exit
 * and CPU (`process.cpuUsage()` as it exits, to the microsecond: lib/cpu-usage.cjs preloaded
 * through NODE_OPTIONS), medians and ranges of `--runs` rounds, the 1-minute load
 * average beside them. Each program is measured with this environment as it is (which may set
 * NODE_EXTRA_CA_CERTS, as this build machine does) and with NODE_EXTRA_CA_CERTS removed, and
 * `node -e 0` gives the floor: what any Node process costs here.
 *
 *   node --import tsx scripts/bench/startup.ts [--runs 20] [--baseline REV]
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SERVER_FLAGS } from './compare.js';
import { markdownTable } from './lib/markdown.js';
import {
  compilePrograms,
  compileRev,
  progress,
  runWithPreciseCpu,
  SCRATCH,
  startRakeservers,
} from './lib/proc.js';
import { formatSpread, spread } from './lib/stats.js';
import { SCALE_BASELINE } from './scale.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    baseline: { type: 'string', default: SCALE_BASELINE },
  },
});
const runs = Number(values.runs);
if (!(Number.isInteger(runs) && runs >= 1)) throw new Error('--runs must be a whole number ≥ 1');
const rev = values.baseline ?? SCALE_BASELINE;

const dir = join(SCRATCH, 'startup');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
progress('compiling rake-ts');
const now = compilePrograms(join(SCRATCH, 'startup-build'));
const base = compileRev('startup-baseline', rev);

const [server] = await startRakeservers(now, 1, SERVER_FLAGS, join(dir, 'server'));
if (server === undefined) throw new Error('no server');
writeFileSync(
  join(dir, 'Rakefile'),
  `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nrun:\n\tremote-true\n`,
);
const flags = ['-q', '--progress=never', '--no-embedded', '--no-fallback'];
const withoutCa: NodeJS.ProcessEnv = { ...process.env };
delete withoutCa.NODE_EXTRA_CA_CERTS;
const caNote =
  process.env.NODE_EXTRA_CA_CERTS === undefined
    ? 'not set here'
    : `set here (${process.env.NODE_EXTRA_CA_CERTS})`;

interface Variant {
  readonly label: string;
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
}
const variants: Variant[] = [
  { label: 'now', argv: [now.rake, ...flags], env: process.env },
  { label: `before (${rev})`, argv: [base.rake, ...flags], env: process.env },
  { label: 'now, without NODE_EXTRA_CA_CERTS', argv: [now.rake, ...flags], env: withoutCa },
  {
    label: `before (${rev}), without NODE_EXTRA_CA_CERTS`,
    argv: [base.rake, ...flags],
    env: withoutCa,
  },
  { label: '`node -e 0`', argv: [process.execPath, '-e', '0'], env: process.env },
  {
    label: '`node -e 0`, without NODE_EXTRA_CA_CERTS',
    argv: [process.execPath, '-e', '0'],
    env: withoutCa,
  },
];
const wall = new Map<string, number[]>(variants.map((v) => [v.label, []]));
const cpu = new Map<string, number[]>(variants.map((v) => [v.label, []]));
const loads: number[] = [];
try {
  // Untimed: each program writes its V8 code cache on its first run, as after an install.
  for (const v of variants) await runWithPreciseCpu(v.argv, { cwd: dir, env: v.env });
  for (let r = 0; r < runs; r++) {
    loads.push(loadavg()[0] ?? Number.NaN);
    const order = [
      ...variants.slice(r % variants.length),
      ...variants.slice(0, r % variants.length),
    ];
    for (const v of order) {
      const x = await runWithPreciseCpu(v.argv, { cwd: dir, env: v.env });
      wall.get(v.label)?.push(x.seconds * 1000);
      cpu.get(v.label)?.push(x.cpuSeconds * 1000);
    }
    if ((r + 1) % 5 === 0) progress(`startup: ${r + 1}/${runs} rounds`);
  }
} finally {
  await server.stop();
}
const rows = [['', 'wall (ms)', 'CPU (ms)']];
for (const v of variants) {
  rows.push([
    v.label,
    formatSpread(spread(wall.get(v.label) ?? []), 0),
    formatSpread(spread(cpu.get(v.label) ?? []), 0),
  ]);
}
process.stdout.write(
  [
    markdownTable(rows),
    '',
    `A 1-action Rakefile (\`remote-true\` on one loopback \`rakeserver ${SERVER_FLAGS.join(' ')}\`), the program executed as a user runs it (\`bin/rake-ts.js ${flags.join(' ')}\`), timed from spawn to exit; CPU is user + system of the process (\`process.cpuUsage()\` as it exits, scripts/bench/lib/cpu-usage.cjs preloaded through NODE_OPTIONS; it counts the shell of the \`#!\` line, which \`exec\`s node in the same process). Medians of ${runs} rounds (range in brackets), all rows interleaved in rotating order; load ${formatSpread(spread(loads), 1)} (1-minute average at the start of each round). NODE_EXTRA_CA_CERTS is ${caNote}. Reproduce: \`node --import tsx scripts/bench/startup.ts --runs ${runs} --baseline ${rev}\`.`,
    '',
  ].join('\n'),
);
