/**
 * Benchmark: how a rakeserver's CPU per build falls as it warms up, under V8's default tier-up
 * budget and under the smaller one `bin/rakeserver.js` sets (docs/server.md, "A daemon's code
 * is optimized early").
 *
 *   node --import tsx scripts/bench/server-warmup.ts [--builds 20] [--units 100] [--from 5]
 *
 * Two pairs of fresh rakeservers (`--max-jobs 1`), one started with node's
 * `--interrupt-budget=67584` (V8's default: bin/rakeserver.js then leaves it alone), one as
 * bin/rakeserver.js starts itself. Each pair gets its own copy of the generated C project;
 * builds alternate between the pairs (the order swapped every build), each a clean build by the
 * built `rake-ts`. Per build: wall time, and the CPU the servers themselves spent (each server
 * and its spawn helper, read from /proc; not the compilers). Printed: every build, and the
 * medians of builds `--from` to the last, when both servers are past their first builds.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { runPartAsMain } from './lib/cli.js';
import { markdownTable } from './lib/markdown.js';
import {
  type Daemon,
  type Programs,
  progress,
  runChecked,
  SCRATCH,
  serverCpu,
  startRakeservers,
} from './lib/proc.js';
import { type CProject, checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { median } from './lib/stats.js';

/** V8's own interrupt budget (66 KiB) in this Node's V8; bin/rakeserver.js sets 8 KiB. */
const V8_DEFAULT_BUDGET = 67_584;

const VARIANTS = [
  { name: "V8's default budget", nodeFlags: [`--interrupt-budget=${V8_DEFAULT_BUDGET}`] },
  { name: "rakeserver's budget", nodeFlags: [] },
] as const;

interface Build {
  readonly seconds: number;
  readonly serverCpu: number;
}

interface Pair {
  readonly name: string;
  readonly servers: readonly Daemon[];
  readonly project: CProject;
  readonly builds: Build[];
}

/** The servers' own CPU seconds so far (server and spawn helper, not their jobs). */
const ownCpu = (servers: readonly Daemon[]) =>
  servers.reduce((sum, s) => sum + (serverCpu(s.child.pid as number)?.self ?? Number.NaN), 0);

export async function measureServerWarmup(
  programs: Programs,
  flags: { builds: number; units: number; from: number },
): Promise<string> {
  const root = join(SCRATCH, 'server-warmup');
  const pairs: Pair[] = [];
  for (const [i, v] of VARIANTS.entries()) {
    const dir = join(root, `variant${i + 1}`);
    rmSync(dir, { recursive: true, force: true });
    const servers = await startRakeservers(programs, 2, ['--max-jobs', '1'], dir, v.nodeFlags);
    const project = writeCProject(join(dir, 'project'), flags.units, {
      hosts: servers.map((s) => `127.0.0.1:${s.port}`),
      port: servers[0]?.port ?? 0,
    });
    pairs.push({ name: v.name, servers, project, builds: [] });
  }
  try {
    for (let b = 0; b < flags.builds; b++) {
      for (const pair of b % 2 === 0 ? pairs : [...pairs].reverse()) {
        cleanBuild(pair.project);
        const before = ownCpu(pair.servers);
        const r = await runChecked(
          [process.execPath, programs.rake, '-q', '--progress=never', '--no-embedded'],
          { cwd: pair.project.dir },
        );
        checkProgram(pair.project, `rake-ts (${pair.name})`);
        pair.builds.push({ seconds: r.seconds, serverCpu: ownCpu(pair.servers) - before });
      }
      const [a, c] = pairs.map((p) => p.builds.at(-1) as Build);
      progress(
        `server warm-up build ${b + 1}/${flags.builds}: servers' CPU ${a?.serverCpu.toFixed(2)} s (V8's budget) vs ${c?.serverCpu.toFixed(2)} s (rakeserver's)`,
      );
    }
  } finally {
    for (const p of pairs) for (const s of p.servers) await s.stop();
  }
  const rows = Array.from({ length: flags.builds }, (_, b) => [
    String(b + 1),
    ...pairs.flatMap((p) => {
      const x = p.builds[b] as Build;
      return [x.seconds.toFixed(2), x.serverCpu.toFixed(2)];
    }),
  ]);
  const late = (p: Pair, f: (x: Build) => number) => median(p.builds.slice(flags.from - 1).map(f));
  return [
    `## Server warm-up: CPU per build as a rakeserver ages`,
    '',
    `2 rakeservers per column (\`--max-jobs 1\`), ${flags.units}-unit C project + link, clean builds alternating between the columns.`,
    '',
    markdownTable([
      ['build', ...pairs.flatMap((p) => [`${p.name}: wall (s)`, `${p.name}: servers' CPU (s)`])],
      ...rows,
      [
        `median ${flags.from}–${flags.builds}`,
        ...pairs.flatMap((p) => [
          late(p, (x) => x.seconds).toFixed(2),
          late(p, (x) => x.serverCpu).toFixed(3),
        ]),
      ],
    ]),
  ].join('\n');
}

await runPartAsMain(import.meta.url, { builds: 20, units: 100, from: 5 }, (flags, programs) =>
  measureServerWarmup(programs, flags),
);
