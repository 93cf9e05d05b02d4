/**
 * Overhead: where the milliseconds of one action go, split into the phases the client
 * reports (poll, connect, upload, run, download; src/client/events.ts `PhaseTimings`), read
 * from the Chrome trace the CLI writes with `--trace`. The `run` phase is split once more
 * with the servers' own log: the command itself (`/bin/sh -c …` from spawn to exit, the
 * `durationMs` of each `job end` record) and the rest (the wire and the server's bookkeeping
 * around it).
 *
 * Workloads, over K loopback rakeservers (`--max-jobs 1`, as in the build comparison):
 * - `remote-true` × T with `-j 1`: one action at a time, so each phase is pure latency;
 * - `remote-true` × T with the default `-j`: everything in flight, for actions per second;
 * - `remote-cc -O2 -c uK.c` × U with `-j 1`: a compile with two requirements and one output.
 *
 *   node --import tsx scripts/bench/overhead.ts [--trues 200] [--units 40] [--runs 3]
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PHASES, type PhaseName } from '../../src/observe/timeline.js';
import { RAKE_FLAGS, SERVER_FLAGS } from './compare.js';
import { runPartAsMain } from './lib/cli.js';
import { writeCompileRakefile } from './lib/compile-rakefile.js';
import { markdownTable } from './lib/markdown.js';
import {
  type Daemon,
  type Programs,
  progress,
  runChecked,
  runWithCpu,
  SCRATCH,
  startRakeservers,
} from './lib/proc.js';
import { CFLAGS, writeCProject } from './lib/project.js';
import { formatSpread, median, spread } from './lib/stats.js';
import { readTrace, type TracedRun } from './lib/trace.js';

export interface OverheadOptions {
  readonly programs: Programs;
  readonly runs: number;
  readonly trues: number;
  readonly units: number;
  readonly hosts: number;
  readonly dir?: string;
  /** The programs before the speed-ups: their `-j 1` workloads are measured too. */
  readonly baseline?: Programs;
}

/** One run of one workload, reduced to medians over its actions. */
export interface OverheadRun {
  /** Median ms per phase over the run's actions. */
  readonly phases: Readonly<Record<PhaseName, number>>;
  /** Median of the actions' wall times, ms. */
  readonly actionMs: number;
  /** Median of the commands' own time on the servers (spawn to exit), ms. */
  readonly commandMs: number;
  /** The client process from spawn to exit, s. */
  readonly processSeconds: number;
  /** The run as its trace spans it (first to last event), s. */
  readonly spanSeconds: number;
  readonly actions: number;
}

export interface OverheadWorkload {
  readonly name: string;
  readonly jobs: string;
  /** Measured with the programs before the speed-ups. */
  readonly before: boolean;
  readonly runs: OverheadRun[];
}

/** `rake-ts --version`, a bare start and exit: wall and CPU seconds per start. */
export interface StartupTimes {
  readonly wall: number[];
  readonly cpu: number[];
}

export interface OverheadResult {
  readonly hosts: number;
  /** Start-up of the current programs and, when measured, of those before the speed-ups. */
  readonly startup: { readonly now: StartupTimes; readonly before?: StartupTimes };
  readonly workloads: readonly OverheadWorkload[];
}

/** The `durationMs` of every `job end` record in a rakeserver's NDJSON log. */
function jobDurations(logFile: string): number[] {
  const out: number[] = [];
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    if (!line.includes('"job end"')) continue;
    try {
      const o = JSON.parse(line) as { msg?: string; durationMs?: number };
      if (o.msg === 'job end' && typeof o.durationMs === 'number') out.push(o.durationMs);
    } catch {}
  }
  return out;
}

/** Medians of one traced run. */
export function phaseMedians(run: TracedRun): Record<PhaseName, number> {
  return Object.fromEntries(
    PHASES.map((p) => [p, median(run.actions.map((a) => a.phases[p]))]),
  ) as Record<PhaseName, number>;
}

/** Runs the CLI once on `dir`'s Rakefile with `--trace`; reduces it to an {@link OverheadRun}. */
export async function tracedRun(
  programs: Programs,
  dir: string,
  extra: readonly string[],
  servers: readonly Daemon[],
  env?: NodeJS.ProcessEnv,
): Promise<OverheadRun> {
  const trace = join(dir, 'trace.json');
  rmSync(trace, { force: true });
  const before = servers.map((s) => jobDurations(s.logFile).length);
  const r = await runChecked(
    [process.execPath, programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS, '--trace', trace, ...extra],
    { cwd: dir, ...(env === undefined ? {} : { env }) },
  );
  const run = readTrace(trace);
  const commands = servers.flatMap((s, i) => jobDurations(s.logFile).slice(before[i]));
  return {
    phases: phaseMedians(run),
    actionMs: median(run.actions.map((a) => a.wallMs)),
    commandMs: median(commands),
    processSeconds: r.seconds,
    spanSeconds: run.spanMs / 1000,
    actions: run.actions.length,
  };
}

function writeTrues(dir: string, n: number, servers: readonly Daemon[]): void {
  rmSync(dir, { recursive: true, force: true });
  writeCProject(dir, 0, { hosts: [], port: 0 }); // makes the directory
  writeFileSync(
    join(dir, 'Rakefile'),
    [
      `PORT = ${servers[0]?.port}`,
      `HOSTS = ${servers.map((s) => `127.0.0.1:${s.port}`).join(' ')}`,
      '',
      'trues:',
      ...Array.from({ length: n }, () => '\tremote-true'),
      '',
    ].join('\n'),
  );
}

function writeCompiles(dir: string, units: number, servers: readonly Daemon[], salt: string): void {
  writeCProject(dir, units, { hosts: [], port: 0 }, salt);
  writeCompileRakefile(dir, units, {
    hosts: servers.map((s) => `127.0.0.1:${s.port}`),
    port: servers[0]?.port,
  });
}

/** Runs the three workloads `runs` times each, interleaved. */
export async function runOverhead(o: OverheadOptions): Promise<OverheadResult> {
  const dir = o.dir ?? join(SCRATCH, 'overhead');
  rmSync(dir, { recursive: true, force: true });
  const servers = await startRakeservers(o.programs, o.hosts, SERVER_FLAGS, join(dir, 'servers'));
  const before =
    o.baseline === undefined
      ? []
      : await startRakeservers(o.baseline, o.hosts, SERVER_FLAGS, join(dir, 'baseline-servers'));
  const trues = join(dir, 'trues');
  const compiles = join(dir, 'compiles');
  const truesName = `\`remote-true\` × ${o.trues}`;
  const ccName = `\`remote-cc ${CFLAGS} -c uK.c\` × ${o.units}`;
  type Planned = OverheadWorkload & {
    dir: string;
    extra: string[];
    programs: Programs;
    servers: Daemon[];
  };
  const plan = (
    name: string,
    jobs: string,
    dir: string,
    extra: string[],
    then?: Programs,
  ): Planned => ({
    name,
    jobs,
    dir,
    before: then !== undefined,
    programs: then ?? o.programs,
    servers: then === undefined ? servers : before,
    // The same Rakefiles; the baseline's runs are pointed at its own servers.
    extra:
      then === undefined
        ? extra
        : [
            ...extra,
            '--hosts',
            before.map((s) => `127.0.0.1:${s.port}`).join(' '),
            '--port',
            String(before[0]?.port),
          ],
    runs: [],
  });
  const workloads: Planned[] = [
    plan(truesName, '1', trues, ['-j', '1']),
    plan(truesName, 'default (256)', trues, []),
    plan(ccName, '1', compiles, ['-j', '1']),
  ];
  if (o.baseline !== undefined) {
    workloads.push(
      plan(truesName, '1', trues, ['-j', '1'], o.baseline),
      plan(ccName, '1', compiles, ['-j', '1'], o.baseline),
    );
  }
  const startup = { now: { wall: [] as number[], cpu: [] as number[] } };
  const startupBefore = { wall: [] as number[], cpu: [] as number[] };
  try {
    // Start-up alone, alternating with the baseline: CPU seconds are steadier than wall
    // time on a loaded machine.
    for (let i = 0; i < 3 * o.runs; i++) {
      for (const [p, into] of [
        [o.programs, startup.now],
        ...(o.baseline === undefined ? [] : [[o.baseline, startupBefore] as const]),
      ] as const) {
        const r = await runWithCpu([process.execPath, p.rake, '--version'], { cwd: dir });
        into.wall.push(r.seconds);
        into.cpu.push(r.cpuSeconds);
      }
    }
    progress(
      `overhead: start-up (rake-ts --version) ${median(startup.now.wall).toFixed(2)} s, ${median(startup.now.cpu).toFixed(2)} CPU s${o.baseline === undefined ? '' : `; before the speed-ups ${median(startupBefore.wall).toFixed(2)} s, ${median(startupBefore.cpu).toFixed(2)} CPU s`}`,
    );
    writeTrues(trues, o.trues, servers);
    for (let r = 0; r < o.runs; r++) {
      for (const w of workloads) {
        // New sources each run: every compile uploads, as in a first build.
        if (w.dir === compiles) writeCompiles(compiles, o.units, servers, `run ${r} ${w.before}`);
        const run = await tracedRun(w.programs, w.dir, w.extra, w.servers);
        w.runs.push(run);
        progress(
          `overhead ${w.name.replaceAll('`', '')} -j ${w.jobs}${w.before ? ' (before the speed-ups)' : ''} run ${r + 1}/${o.runs}: ${run.actionMs.toFixed(1)} ms/action, ${(run.actions / run.spanSeconds).toFixed(0)} actions/s, client start + exit ${(run.processSeconds - run.spanSeconds).toFixed(2)} s`,
        );
      }
    }
  } finally {
    await Promise.all([...servers, ...before].map((s) => s.stop()));
  }
  return {
    hosts: o.hosts,
    startup: o.baseline === undefined ? startup : { ...startup, before: startupBefore },
    workloads: workloads.map(({ name, jobs, before, runs }) => ({ name, jobs, before, runs })),
  };
}

/** `x (a–b)` over runs of one figure of an {@link OverheadRun}. */
function fig(runs: readonly OverheadRun[], f: (r: OverheadRun) => number, digits = 1): string {
  return formatSpread(spread(runs.map(f)), digits);
}

/** The per-phase table (ms per action). */
export function overheadTable(workloads: readonly OverheadWorkload[]): string {
  const rows: string[][] = [
    [
      'workload',
      '-j',
      ...PHASES.map((p) => `${p} (ms)`),
      'of run: the command (ms)',
      'Σ phases (ms)',
      'action wall (ms)',
      'wall − command (ms)',
      'actions/s',
      'client start + exit (s)',
    ],
  ];
  for (const w of workloads) {
    rows.push([
      w.before ? `${w.name}, before the speed-ups` : w.name,
      w.jobs,
      ...PHASES.map((p) => fig(w.runs, (r) => r.phases[p])),
      fig(w.runs, (r) => r.commandMs),
      fig(w.runs, (r) => PHASES.reduce((n, p) => n + r.phases[p], 0)),
      fig(w.runs, (r) => r.actionMs),
      fig(w.runs, (r) => r.actionMs - r.commandMs),
      fig(w.runs, (r) => r.actions / r.spanSeconds, 0),
      fig(w.runs, (r) => r.processSeconds - r.spanSeconds, 2),
    ]);
  }
  return markdownTable(rows);
}

export function overheadMarkdown(r: OverheadResult): string {
  const n = r.workloads[0]?.runs.length ?? 0;
  const start = (t: StartupTimes) =>
    `${formatSpread(spread(t.wall))} s wall, ${formatSpread(spread(t.cpu))} s CPU`;
  return [
    `Start-up alone (\`rake-ts --version\`, ${r.startup.now.wall.length} times): ${start(r.startup.now)}${r.startup.before === undefined ? '' : `; before the speed-ups ${start(r.startup.before)}`}. A bare \`node -e 0\` takes about 0.1 s here.`,
    '',
    overheadTable(r.workloads),
    '',
    `Per action, medians over the run's actions, then the median of ${n} runs (range in brackets). ${r.hosts} loopback \`rakeserver ${SERVER_FLAGS.join(' ')}\`; the client is the CLI with \`--trace\`, whose phase spans these are. *poll*: the cost queries (a new connection to every host, \`!E0\` → \`!E1 cost\`) until a host is chosen; *connect*: the job's TCP connect; *upload*: the handshake (\`!X hello\` → \`ok\`), the cache offer (\`!X have\` → \`need\`) and the requirements' filestream; *run*: from \`!C\` to the reply's header, of which *the command* is \`/bin/sh -c …\` from spawn to exit as the server logs it; *download*: the output files' filestream. *wall − command*: what rake-ts adds to the command (at \`-j 1\`). *client start + exit*: the CLI process's wall time outside the trace (Node start-up, reading the Rakefile, writing the trace). With \`-j\` above 1 the phases of concurrent actions overlap and *run* includes waiting for a job slot.`,
  ].join('\n');
}

await runPartAsMain(
  import.meta.url,
  { trues: 200, units: 40, runs: 3, hosts: 2 },
  async (flags, programs) => overheadMarkdown(await runOverhead({ programs, ...flags })),
);
