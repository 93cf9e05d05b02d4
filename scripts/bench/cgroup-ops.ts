/**
 * What a job's cgroup costs the server (src/server/containment.ts): making one (mkdir),
 * `cgroup.kill` on an empty one, reading `cgroup.events`, and removing one (listing its
 * control files, rmdir), each `--ops` times in a row under this process's cgroup, as a
 * rakeserver with cgroup containment does them; per operation, wall and CPU (this process's
 * user + system), medians and ranges of `--runs` rounds, with the load average. Needs a
 * writable cgroup2 hierarchy (root); says why not otherwise.
 *
 *   node --import tsx scripts/bench/cgroup-ops.ts [--runs 5] [--ops 200]
 */
import { mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createContainment } from '../../src/server/containment.js';
import { markdownTable } from './lib/markdown.js';
import { formatSpread, spread } from './lib/stats.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '5' }, ops: { type: 'string', default: '200' } },
});
const runs = Number(values.runs);
const ops = Number(values.ops);
const c = await createContainment('cgroup', pino({ level: 'silent' })).catch(
  (err: unknown) => (err as Error).message,
);
if (typeof c === 'string') {
  process.stdout.write(`Not measured: no cgroups here (${c}).\n`);
  process.exit(0);
}
const OPS = {
  mkdir: (d: string) => mkdirSync(d),
  'cgroup.kill, empty': (d: string) => writeFileSync(join(d, 'cgroup.kill'), '1'),
  'read cgroup.events': (d: string) => readFileSync(join(d, 'cgroup.events'), 'utf8'),
  'remove (list, rmdir)': (d: string) => {
    readdirSync(d, { withFileTypes: true });
    rmdirSync(d);
  },
} as const;
const wall = new Map<string, number[]>();
const cpu = new Map<string, number[]>();
const loads: number[] = [];
try {
  for (let r = 0; r < runs; r++) {
    loads.push(loadavg()[0] ?? Number.NaN);
    const root = join(c.detail, `bench-${r}`);
    mkdirSync(root);
    const dirs = Array.from({ length: ops }, (_, i) => join(root, `job-${i}`));
    for (const [name, op] of Object.entries(OPS)) {
      const c0 = process.cpuUsage();
      const w0 = performance.now();
      for (const d of dirs) op(d);
      const used = process.cpuUsage(c0);
      wall.set(name, [...(wall.get(name) ?? []), (performance.now() - w0) / ops]);
      cpu.set(name, [...(cpu.get(name) ?? []), (used.user + used.system) / 1000 / ops]);
    }
    rmdirSync(root);
  }
} finally {
  await c.close();
}
const rows = [['operation', 'wall (ms)', 'CPU (ms)']];
for (const name of Object.keys(OPS)) {
  rows.push([
    name,
    formatSpread(spread(wall.get(name) ?? []), 3),
    formatSpread(spread(cpu.get(name) ?? []), 3),
  ]);
}
process.stdout.write(
  `${markdownTable(rows)}\n\nPer operation, ${ops} in a row per round, medians of ${runs} rounds (range in brackets); load ${formatSpread(spread(loads), 1)}. Reproduce: \`node --import tsx scripts/bench/cgroup-ops.ts --runs ${runs} --ops ${ops}\`.\n`,
);
