/**
 * The hand-over between a one-slot server's jobs (issue 20; docs/server.md, "A queued job
 * starts in the helper"): how long a slot stands empty between one job's end and the next
 * job's start, as the jobs themselves see it. Every action is
 *
 *   remote-echo s $(date +%s%N) $PPID; sleep S; echo e $(date +%s%N) $PPID
 *
 * ($PPID: the spawn helper, one per server), so the gap from a job's `e` stamp to the next
 * `s` stamp of the same server spans the shell's exit, its reaping, the next job's start,
 * its shell's start and one `date` fork: everything between two jobs, whoever does it. Per
 * host count (`--hosts`, default 1,8): medians and p10–p90 of the gaps over `--runs` runs
 * of `--per-host` jobs per server, the hosts that got any job, the job's own `s`→`e` span
 * and the 1-minute load at each run's start. With `--baseline REV`, rake-ts as it was at
 * REV is measured too, its runs interleaved with this tree's.
 *
 *   node --import tsx scripts/bench/handover.ts [--hosts 1,8] [--per-host 50] [--sleep 0.1]
 *                                               [--runs 3] [--baseline REV]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { markdownTable } from './lib/markdown.js';
import {
  compilePrograms,
  compileRev,
  type Programs,
  progress,
  runChecked,
  SCRATCH,
  startRakeservers,
} from './lib/proc.js';
import { median, quantile } from './lib/stats.js';

const { values } = parseArgs({
  options: {
    hosts: { type: 'string', default: '1,8' },
    'per-host': { type: 'string', default: '50' },
    sleep: { type: 'string', default: '0.1' },
    runs: { type: 'string', default: '3' },
    baseline: { type: 'string' },
  },
});
const hostCounts = values.hosts.split(',').map(Number);
const perHost = Number(values['per-host']);
const sleep = values.sleep;
const runs = Number(values.runs);
const dir = join(SCRATCH, 'handover');
mkdirSync(dir, { recursive: true });

interface Side {
  readonly label: string;
  readonly programs: Programs;
}
const sides: Side[] = [{ label: 'now', programs: compilePrograms(join(dir, 'build')) }];
if (values.baseline !== undefined) {
  sides.push({ label: values.baseline, programs: compileRev('handover', values.baseline) });
}

/** Gaps (ms) between a job's end and the next job's start on the same host, from the output. */
function gapsOf(output: string): { gaps: number[]; spans: number[]; hosts: number } {
  const byHost = new Map<string, Array<[bigint, bigint]>>();
  const open = new Map<string, bigint>();
  for (const line of output.split('\n')) {
    const m = /^([se]) (\d+) (\d+)$/.exec(line.trim());
    if (m === null) continue;
    const [, kind, stamp, host] = m as unknown as [string, string, string, string];
    if (kind === 's') open.set(host, BigInt(stamp));
    else {
      const start = open.get(host);
      if (start === undefined) continue;
      const list = byHost.get(host) ?? [];
      list.push([start, BigInt(stamp)]);
      byHost.set(host, list);
    }
  }
  const gaps: number[] = [];
  const spans: number[] = [];
  for (const jobs of byHost.values()) {
    jobs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [s, e] of jobs) spans.push(Number(e - s) / 1e6);
    for (let i = 1; i < jobs.length; i++) {
      gaps.push(
        Number((jobs[i] as [bigint, bigint])[0] - (jobs[i - 1] as [bigint, bigint])[1]) / 1e6,
      );
    }
  }
  return { gaps, spans, hosts: byHost.size };
}

const rows = [
  ['hosts', 'side', 'gap: median (p10–p90) ms', 'max ms', 'hosts used', 'job s→e ms', 'load'],
];
for (const hosts of hostCounts) {
  const servers = new Map<string, Awaited<ReturnType<typeof startRakeservers>>>();
  for (const side of sides) {
    servers.set(
      side.label,
      await startRakeservers(
        side.programs,
        hosts,
        ['--max-jobs', '1'],
        join(dir, `servers-${side.label}-${hosts}`),
      ),
    );
  }
  const seen = new Map<string, { gaps: number[]; spans: number[]; hosts: number[] }>();
  const loads: number[] = [];
  try {
    for (let r = 0; r < runs; r++) {
      loads.push(loadavg()[0] ?? 0);
      for (const side of r % 2 === 0 ? sides : [...sides].reverse()) {
        const list = servers.get(side.label) ?? [];
        const rakefile = join(dir, `Rakefile-${side.label}-${hosts}`);
        const action = `remote-echo s $(date +%s%N) $PPID; sleep ${sleep}; echo e $(date +%s%N) $PPID`;
        writeFileSync(
          rakefile,
          [
            `HOSTS = ${list.map((s) => `${s.host}:${s.port}`).join(' ')}`,
            '',
            'all:',
            ...Array.from({ length: perHost * hosts }, () => `\t${action}`),
            '',
          ].join('\n'),
        );
        const out = await runChecked(
          [
            process.execPath,
            side.programs.rake,
            '-f',
            rakefile,
            '--progress=never',
            '--no-embedded',
            '--no-fallback',
          ],
          { cwd: dir },
        );
        const got = gapsOf(out.stdout);
        const acc = seen.get(side.label) ?? { gaps: [], spans: [], hosts: [] };
        acc.gaps.push(...got.gaps);
        acc.spans.push(...got.spans);
        acc.hosts.push(got.hosts);
        seen.set(side.label, acc);
      }
      progress(`${hosts} hosts: run ${r + 1}/${runs}`);
    }
  } finally {
    for (const list of servers.values()) await Promise.all(list.map((s) => s.stop()));
  }
  for (const side of sides) {
    const acc = seen.get(side.label);
    if (acc === undefined || acc.gaps.length === 0) continue;
    rows.push([
      String(hosts),
      side.label,
      `${median(acc.gaps).toFixed(2)} (${quantile(acc.gaps, 0.1).toFixed(2)}–${quantile(acc.gaps, 0.9).toFixed(2)})`,
      Math.max(...acc.gaps).toFixed(1),
      acc.hosts.join(', '),
      median(acc.spans).toFixed(1),
      `${median(loads).toFixed(1)} (${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)})`,
    ]);
  }
}
process.stdout.write(
  `${markdownTable(rows)}\n\n${perHost} × \`remote-sleep ${sleep}\` (timestamped) per one-slot server, ${runs} runs per side; gaps pooled over the runs. Reproduce: \`node --import tsx scripts/bench/handover.ts --hosts ${values.hosts} --per-host ${perHost} --sleep ${sleep} --runs ${runs}${values.baseline === undefined ? '' : ` --baseline ${values.baseline}`}\`.\n`,
);
