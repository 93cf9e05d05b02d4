/**
 * What starting a job costs on its path (issue 20): the server's launcher (the spawn helper,
 * cgroup containment) asked to start `--jobs` jobs one after another, each after the last
 * one ended, as a one-slot server does. Per job: the launch (asked → running, its output
 * connected) and the end (the process exited → the launcher says so, its cgroup checked),
 * in milliseconds, for each way a job's first process enters its cgroup:
 *
 * - `auto`: the default: cloned after a pause, moved within a burst (docs/server.md);
 * - `clone3`: always created inside it with clone3(CLONE_INTO_CGROUP)
 *   (`RAKE_CLONE_INTO_CGROUP=1`);
 * - `moved`: the helper moves itself into the cgroup, spawns, moves back
 *   (`RAKE_CLONE_INTO_CGROUP=0`, what the server did before, and does where clone3 cannot).
 *
 * The two alternate in each round (order rotating), medians and ranges over `--runs` rounds,
 * with the 1-minute load average at each round's start. Each command is run as given
 * (`--commands`, default `sleep 0.05` and `true`): a gap between jobs is what makes a cgroup
 * move wait for an RCU grace period, so `sleep` shows it and back-to-back `true` much less.
 * Needs cgroups (root or a delegated cgroup2 subtree); says why not otherwise.
 *
 *   node --import tsx scripts/bench/launch-latency.ts [--runs 5] [--jobs 40]
 *                                                     [--commands 'sleep 0.05,true']
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createContainment } from '../../src/server/containment.js';
import { createLauncher, HelperLauncher, type Launcher } from '../../src/server/launcher.js';
import { markdownTable } from './lib/markdown.js';
import { formatSpread, median, spread } from './lib/stats.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    jobs: { type: 'string', default: '40' },
    commands: { type: 'string', default: 'sleep 0.05,true' },
  },
});
const runs = Number(values.runs);
const jobs = Number(values.jobs);
const commands = values.commands.split(',').map((c) => c.trim());
const silent = pino({ level: 'silent' });

const probe = await createContainment('cgroup', silent).then(
  async (c) => {
    await c.close();
    return undefined;
  },
  (err: unknown) => (err as Error).message,
);
if (probe !== undefined) {
  process.stdout.write(`Not measured: no cgroups here (${probe}).\n`);
  process.exit(0);
}

const MODES = ['auto', 'clone3', 'moved'] as const;
type Mode = (typeof MODES)[number];

/** Resolves when the stream has closed (at once if it already has). */
const closed = (s: Readable) =>
  new Promise<void>((r) => {
    s.resume();
    if (s.closed) r();
    else s.once('close', () => r());
  });

/** A launcher whose helper enters cgroups as `mode` says. */
const verdicts = new Set<string>();
async function launcherFor(mode: Mode): Promise<HelperLauncher> {
  const saved = process.env.RAKE_CLONE_INTO_CGROUP;
  if (mode === 'auto') delete process.env.RAKE_CLONE_INTO_CGROUP;
  else process.env.RAKE_CLONE_INTO_CGROUP = mode === 'moved' ? '0' : '1';
  try {
    const launcher = await createLauncher('python3', silent, 'python3', 'cgroup');
    if (!(launcher instanceof HelperLauncher)) throw new Error('the spawn helper did not start');
    // As a server that has run a while: the helper has measured what a cgroup move costs
    // here (it probes once idle, within about 150 ms of its start).
    for (let i = 0; i < 200 && launcher.cgroupMoves === 'unknown'; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    if (mode === 'auto') verdicts.add(launcher.cgroupMoves);
    return launcher;
  } finally {
    if (saved === undefined) delete process.env.RAKE_CLONE_INTO_CGROUP;
    else process.env.RAKE_CLONE_INTO_CGROUP = saved;
  }
}

/** Medians of one series of jobs: launch and end, ms. */
async function series(
  launcher: Launcher,
  command: string,
  dir: string,
  mode: Mode,
): Promise<{ launch: number; end: number }> {
  const launch: number[] = [];
  const end: number[] = [];
  for (let i = 0; i < jobs; i++) {
    const t0 = performance.now();
    const job = await launcher.launch(command, dir);
    const t1 = performance.now();
    if (mode !== 'auto' && job.entry !== mode) {
      throw new Error(`asked for ${mode}, the helper did ${job.entry}`);
    }
    let exitedAt = 0;
    const stdio = Promise.all([closed(job.stdout), closed(job.stderr)]).then(() => {
      exitedAt ||= performance.now();
    });
    const status = await job.exited;
    const t2 = performance.now();
    await stdio;
    if (status !== 0) throw new Error(`${command}: status ${status}`);
    launch.push(t1 - t0);
    // From the output's end (the process is gone) to the launcher's word that it ended.
    end.push(Math.max(0, t2 - exitedAt));
  }
  return { launch: median(launch), end: median(end) };
}

const dir = mkdtempSync(join(tmpdir(), 'rake-launch-latency-'));
const results = new Map<string, { launch: number[]; end: number[] }>();
const loads: number[] = [];
try {
  for (let r = 0; r < runs; r++) {
    loads.push(loadavg()[0] ?? Number.NaN);
    const order = [...MODES.slice(r % MODES.length), ...MODES.slice(0, r % MODES.length)];
    for (const mode of order) {
      const launcher = await launcherFor(mode);
      try {
        // One untimed job: the helper's start and first cgroup out of the way.
        await series(launcher, 'true', dir, mode).catch(() => undefined);
        for (const command of commands) {
          const s = await series(launcher, command, dir, mode);
          const key = `${command}\u0000${mode}`;
          const acc = results.get(key) ?? { launch: [], end: [] };
          acc.launch.push(s.launch);
          acc.end.push(s.end);
          results.set(key, acc);
        }
      } finally {
        await launcher.close();
      }
    }
    process.stderr.write(`round ${r + 1}/${runs} done\n`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const rows: string[][] = [];
for (const command of commands) {
  for (const mode of MODES) {
    const acc = results.get(`${command}\u0000${mode}`);
    if (acc === undefined) continue;
    rows.push([
      `\`${command}\``,
      mode,
      formatSpread(spread(acc.launch), 2),
      formatSpread(spread(acc.end), 2),
    ]);
  }
}
process.stdout.write(
  [
    `Starting a job (${jobs} jobs in a row per series; medians of ${runs} rounds, range in brackets; load ${formatSpread(spread(loads), 1)}):`,
    '',
    markdownTable([['command', 'enters its cgroup', 'launch (ms)', 'end (ms)'], ...rows]),
    '',
    `\`auto\` as the helper judged cgroup moves here (its idle probe): ${[...verdicts].join(', ') || 'not run'}. Where they are \`cheap\` (cgroup2 with favordynmods), \`auto\` moves every job; where \`costly\`, it clones a job after a pause and moves within a burst.`,
    '',
    'Reproduce: `node --import tsx scripts/bench/launch-latency.ts' +
      ` --runs ${runs} --jobs ${jobs} --commands '${commands.join(',')}'\`.`,
    '',
  ].join('\n'),
);
