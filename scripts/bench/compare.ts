/**
 * Build: the generated C project (lib/project.ts) built three ways in one run, side by side:
 * `make -jK` on this machine, distcc (`make -jK CC="distcc cc"` with K `distccd` on
 * loopback, one job each), and rake-ts (the CLI, K `rakeserver` processes on loopback with
 * `--max-jobs 1`, so every build runs at most K compiles at once). The order of the three
 * rotates from round to round; ratios are taken per round against that round's `make`, and
 * every build's program is run and its output checked before its time counts.
 *
 *   node --import tsx scripts/bench/compare.ts [--units 100,400] [--hosts 2] [--runs 3]
 *                                              [--baseline REV]
 *
 * (standalone it prints its table; `npm run bench` runs it as part of the suite).
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { markdownTable } from './lib/markdown.js';
import {
  compilePrograms,
  compileRev,
  type Daemon,
  freePort,
  haveCommand,
  type Programs,
  progress,
  runChecked,
  runWithCpu,
  SCRATCH,
  SPEEDUP_BASELINE,
  serverCpu,
  startDaemon,
  startRakeservers,
} from './lib/proc.js';
import { type CProject, checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { formatSpread, ratios, spread } from './lib/stats.js';

/**
 * Untimed builds by each rake-ts before the first size (make gets one). A rakeserver is a
 * daemon and its CPU per build keeps falling for about its first 10 builds, as V8 optimizes
 * its per-job code (scripts/bench/server-warmup.ts, 2026-12-03: two servers spent 0.74 s of CPU
 * on their 4th build, a median 0.56 s on builds 5–10 and 0.47 s on builds 11–14). Timing
 * builds 4 onwards would charge rake-ts for a young server, which a user's long-running one
 * is not. It was 10 until the suite, on a loaded afternoon, took 10.0 minutes against its
 * budget of 10: 6 keeps it about 40 s shorter and still times servers past their 4th build
 * (a little in rake-ts's disfavour against 10).
 */
export const WARMUP_BUILDS = 6;

/** The flags every benchmarked rakeserver gets: one job at a time, as `distccd --jobs 1`. */
export const SERVER_FLAGS = ['--max-jobs', '1'] as const;

/**
 * make's and distcc's compiles run as make starts them, in make's session. (Until the
 * spawn helper, rakeserver started every job in a session of its own, which under the
 * kernel's autogroup scheduling is a unit of CPU share; the first suite runs gave make's
 * compiles the same footing with `setsid -w`. rakeserver's jobs now share its helper's
 * session, so that wrapper would only add an exec to every one of make's compiles.)
 */

/** The rake-ts command line of every benchmarked build (plus `--trace`). */
export const RAKE_FLAGS = ['--progress=never', '-q', '--no-embedded', '--no-fallback'] as const;

export interface CompareOptions {
  readonly programs: Programs;
  readonly units: readonly number[];
  /** K: servers, distccd daemons and `make -j`. */
  readonly hosts: number;
  readonly runs: number;
  readonly dir?: string;
  /**
   * The programs before the speed-ups (lib/proc.ts `compileBaseline`): measured as a fourth
   * build, with servers of their own, for the sizes in `baselineUnits`.
   */
  readonly baseline?: Programs;
  readonly baselineUnits?: readonly number[];
  /** The commit the baseline was compiled from (default: `SPEEDUP_BASELINE.rev`). */
  readonly baselineRev?: string;
}

type Tool = 'make' | 'distcc' | 'rake' | 'before';

/** The wall times of one project size, seconds, index = round. */
export interface BuildTimes {
  readonly units: number;
  readonly make: number[];
  readonly distcc: number[];
  readonly rake: number[];
  /** rake-ts before the speed-ups (empty when not measured). */
  readonly before: number[];
  /**
   * CPU seconds per build: `make` (make and every compiler), and for rake-ts the commands
   * (the servers' waited-for children: sh and cc), the servers themselves, the client.
   */
  readonly cpu: {
    make: number[];
    commands: number[];
    servers: number[];
    client: number[];
    /** The client before the speed-ups. */
    clientBefore: number[];
    /** The servers themselves (with their spawn helpers) before the speed-ups. */
    serversBefore: number[];
  };
  /** The `--trace` file of each rake-ts build. */
}

export interface CompareResult {
  readonly hosts: number;
  readonly runs: number;
  /** The commit the "before" builds were compiled from, when there are any. */
  readonly baselineRev: string;
  readonly builds: readonly BuildTimes[];
  /** `distcc 3.4 x86_64-pc-linux-gnu`, or why distcc was not measured. */
  readonly distcc:
    | { readonly ok: true; readonly version: string }
    | { readonly ok: false; readonly why: string };
  readonly ccVersion: string;
}

/** The K distccd daemons, and how many jobs they have reported finishing. */
interface Distcc {
  readonly daemons: readonly Daemon[];
  readonly env: NodeJS.ProcessEnv;
  compiled(): number;
}

/**
 * Starts K `distccd` on loopback (DISTCC_DIR in a temporary directory). As root, distccd
 * drops to its own user; if it refuses to start, it is tried again with `--user nobody`.
 */
async function startDistcc(k: number, dir: string): Promise<Distcc> {
  const distccDir = join(dir, 'distcc-dir');
  mkdirSync(distccDir, { recursive: true });
  const env = { ...process.env, DISTCC_DIR: distccDir };
  const daemons: Daemon[] = [];
  try {
    for (let i = 0; i < k; i++) {
      const port = await freePort();
      const argv = [
        'distccd',
        '--daemon',
        '--no-detach',
        '--listen',
        '127.0.0.1',
        '--port',
        String(port),
        '--allow',
        '127.0.0.1',
        '--jobs',
        '1',
        '--log-stderr',
        '--log-level',
        'info',
      ];
      const logFile = join(dir, `distccd${i + 1}.log`);
      let daemon: Daemon;
      try {
        daemon = await startDaemon(argv, { host: '127.0.0.1', port, logFile, env, session: true });
      } catch {
        daemon = await startDaemon([...argv, '--user', 'nobody'], {
          host: '127.0.0.1',
          port,
          logFile,
          env,
          session: true,
        });
      }
      daemons.push(daemon);
    }
  } catch (err) {
    await Promise.all(daemons.map((d) => d.stop()));
    throw err;
  }
  return {
    daemons,
    env: {
      ...env,
      DISTCC_HOSTS: daemons.map((d) => `127.0.0.1:${d.port}/1`).join(' '),
      // Fail rather than quietly compile here: every counted job must have been distributed.
      DISTCC_FALLBACK: '0',
    },
    compiled: () =>
      daemons.reduce(
        (n, d) => n + (readFileSync(d.logFile, 'utf8').match(/COMPILE_OK/g)?.length ?? 0),
        0,
      ),
  };
}

/** Runs the comparison; see the module comment. */
export async function runCompare(o: CompareOptions): Promise<CompareResult> {
  const dir = o.dir ?? join(SCRATCH, 'compare');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const ccVersion =
    (await runChecked(['cc', '--version'], { cwd: dir })).stdout.split('\n')[0] ?? 'cc';

  let distcc: Distcc | undefined;
  let distccInfo: CompareResult['distcc'];
  if (!haveCommand('distcc') || !haveCommand('distccd')) {
    distccInfo = {
      ok: false,
      why: 'distcc is not installed (scripts/bench/install-tools.sh installs it as root)',
    };
  } else {
    try {
      distcc = await startDistcc(o.hosts, dir);
      const v = await runChecked(['distcc', '--version'], { cwd: dir });
      distccInfo = { ok: true, version: v.stdout.split('\n')[0]?.trim() ?? 'distcc' };
    } catch (err) {
      distccInfo = { ok: false, why: `distccd did not start: ${(err as Error).message}` };
    }
  }
  const servers = await startRakeservers(o.programs, o.hosts, SERVER_FLAGS, join(dir, 'servers'));
  const rakefileHosts = {
    hosts: servers.map((s) => `127.0.0.1:${s.port}`),
    port: servers[0]?.port ?? 6238,
  };
  const baselineServers =
    o.baseline === undefined
      ? []
      : await startRakeservers(o.baseline, o.hosts, SERVER_FLAGS, join(dir, 'baseline-servers'));
  const baselineHosts = {
    hosts: baselineServers.map((s) => `127.0.0.1:${s.port}`),
    port: baselineServers[0]?.port ?? 6238,
  };
  const builds: BuildTimes[] = [];
  try {
    for (const units of o.units) {
      const project = writeCProject(join(dir, `c${units}`), units, rakefileHosts);
      const times = emptyTimes(units);
      const tools: Tool[] = ['make', ...(distcc === undefined ? [] : ['distcc' as const]), 'rake'];
      if (o.baseline !== undefined && (o.baselineUnits ?? []).includes(units)) {
        tools.push('before');
      }
      // Untimed builds before the first size: page cache and compiler warm, and the
      // rakeservers (both versions) past their start-up (spawn helper, job directories, and
      // V8's optimizing compiles, about a sixth of a young server's CPU: a rakeserver is a
      // daemon, so its steady state is what users get).
      if (units === o.units[0]) {
        cleanBuild(project);
        await runChecked(['make', '-s', `-j${o.hosts}`], { cwd: project.dir });
        const warm = emptyTimes(units); // what the warm-up builds measure is dropped
        const warmups = tools.filter((t) => t === 'rake' || t === 'before');
        for (const tool of Array.from({ length: WARMUP_BUILDS }, () => warmups).flat()) {
          await buildOnce(tool, project, o, distcc, warm, baselineHosts, servers, baselineServers);
        }
      }
      for (let r = 0; r < o.runs; r++) {
        // New sources each round, so no build finds its objects (or a server its inputs)
        // from the round before; all builds of the round compile the same sources.
        if (r > 0) writeCProject(project.dir, units, rakefileHosts, `round ${r + 1}`);
        const order = [...tools.slice(r % tools.length), ...tools.slice(0, r % tools.length)];
        for (const tool of order) {
          const seconds = await buildOnce(
            tool,
            project,
            o,
            distcc,
            times,
            baselineHosts,
            servers,
            baselineServers,
          );
          times[tool].push(seconds);
        }
        progress(
          `build N=${units} round ${r + 1}/${o.runs}: make ${times.make.at(-1)?.toFixed(2)} s, distcc ${times.distcc.at(-1)?.toFixed(2) ?? '–'} s, rake-ts ${times.rake.at(-1)?.toFixed(2)} s${times.before.length > 0 ? `, rake-ts before the speed-ups ${times.before.at(-1)?.toFixed(2)} s` : ''}`,
        );
      }
      builds.push(times);
    }
  } finally {
    await Promise.all(
      [...servers, ...baselineServers, ...(distcc?.daemons ?? [])].map((d) => d.stop()),
    );
  }
  return {
    hosts: o.hosts,
    runs: o.runs,
    baselineRev: o.baselineRev ?? SPEEDUP_BASELINE.rev,
    builds,
    distcc: distccInfo,
    ccVersion,
  };
}

/** One clean build by `tool`, checked; resolves its wall time in seconds. */
async function buildOnce(
  tool: Tool,
  project: CProject,
  o: CompareOptions,
  distcc: Distcc | undefined,
  times: BuildTimes,
  baselineHosts: { hosts: readonly string[]; port: number },
  servers: readonly Daemon[],
  baselineServers: readonly Daemon[],
): Promise<number> {
  cleanBuild(project);
  const cwd = project.dir;
  const j = `-j${o.hosts}`;
  let seconds: number;
  switch (tool) {
    case 'make': {
      const r = await runWithCpu(['make', '-s', j], { cwd });
      seconds = r.seconds;
      times.cpu.make.push(r.cpuSeconds);
      break;
    }
    case 'distcc': {
      if (distcc === undefined) throw new Error('distcc is not running');
      const before = distcc.compiled();
      seconds = (await runChecked(['make', '-s', j, 'CC=distcc cc'], { cwd, env: distcc.env }))
        .seconds;
      // distccd logs a job a moment after its client has the object; give it that moment.
      let done = distcc.compiled() - before;
      for (let i = 0; i < 20 && done < project.units + 1; i++) {
        await new Promise((r) => setTimeout(r, 50));
        done = distcc.compiled() - before;
      }
      if (done !== project.units + 1) {
        throw new Error(`distcc: ${done} compiles reached distccd, expected ${project.units + 1}`);
      }
      break;
    }
    case 'rake': {
      // As a user runs it: no --trace (the phases are overhead.ts's business).
      const cpu0 = servers.map((s) => serverCpu(s.child.pid ?? 0));
      const r = await runWithCpu(
        [process.execPath, o.programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS],
        {
          cwd,
        },
      );
      const cpu1 = servers.map((s) => serverCpu(s.child.pid ?? 0));
      seconds = r.seconds;
      times.cpu.client.push(r.cpuSeconds);
      times.cpu.servers.push(cpuDelta(cpu0, cpu1, (c) => c.self));
      times.cpu.commands.push(cpuDelta(cpu0, cpu1, (c) => c.children));
      break;
    }
    case 'before': {
      if (o.baseline === undefined) throw new Error('no baseline programs');
      // The same Rakefile, pointed at the baseline's own servers.
      const argv = [process.execPath, o.baseline.rake, '-f', 'Rakefile', ...RAKE_FLAGS];
      argv.push('--hosts', baselineHosts.hosts.join(' '), '--port', String(baselineHosts.port));
      const cpu0 = baselineServers.map((s) => serverCpu(s.child.pid ?? 0));
      const r = await runWithCpu(argv, { cwd });
      const cpu1 = baselineServers.map((s) => serverCpu(s.child.pid ?? 0));
      seconds = r.seconds;
      times.cpu.clientBefore.push(r.cpuSeconds);
      times.cpu.serversBefore.push(cpuDelta(cpu0, cpu1, (c) => c.self));
      break;
    }
  }
  checkProgram(project, tool);
  return seconds;
}

/** The Markdown section body of a comparison. */
export function compareMarkdown(r: CompareResult): string {
  const k = r.hosts;
  const rows: string[][] = [
    [
      'N units',
      `\`make -j${k}\` (s)`,
      'distcc (s)',
      'rake-ts (s)',
      `distcc / make -j${k}`,
      `rake-ts / make -j${k}`,
      'rake-ts / distcc',
    ],
  ];
  const withBefore = r.builds.some((b) => b.before.length > 0);
  if (withBefore) rows[0]?.push('rake-ts before the speed-ups (s)', `before / make -j${k}`);
  for (const b of r.builds) {
    const f = (v: number[]) => (v.length === 0 ? '–' : formatSpread(spread(v), 2));
    const rr = (a: number[], base: number[]) =>
      a.length === 0 || base.length === 0 ? '–' : formatSpread(spread(ratios(a, base)), 2);
    rows.push([
      String(b.units),
      f(b.make),
      f(b.distcc),
      f(b.rake),
      rr(b.distcc, b.make),
      `**${rr(b.rake, b.make)}**`,
      `**${rr(b.rake, b.distcc)}**`,
      ...(withBefore ? [f(b.before), rr(b.before, b.make)] : []),
    ]);
  }
  const distcc = r.distcc.ok
    ? `${r.distcc.version}, ${k} \`distccd --jobs 1\` on loopback, \`make -j${k} CC="distcc cc"\` (each daemon in a session of its own), DISTCC_FALLBACK=0 (every compile is checked to have reached a daemon; the link runs locally, as distcc does it)`
    : `not measured: ${r.distcc.why}`;
  const cpuRows: string[][] = [
    [
      'N units',
      `\`make -j${k}\`: make and compilers`,
      'rake-ts: the commands (sh, cc)',
      'rake-ts: the servers themselves',
      'rake-ts: the client',
    ],
  ];
  for (const b of r.builds) {
    const f = (v: number[]) => (v.some(Number.isNaN) ? '–' : formatSpread(spread(v), 1));
    cpuRows.push([
      String(b.units),
      f(b.cpu.make),
      f(b.cpu.commands),
      f(b.cpu.servers),
      f(b.cpu.client),
    ]);
  }
  return [
    markdownTable(rows),
    '',
    'CPU seconds per build (user + system; the machine has 2 cores, so every second rake-ts itself spends is taken from the compilers):',
    '',
    markdownTable(cpuRows),
    '',
    `Wall times, median of ${r.runs} rounds (range in brackets); each ratio is taken within a round (the three builds back to back, in rotating order) and then its median is shown. Targets: rake-ts / distcc ≤ 1, rake-ts / make -j${k} ≤ 1.25.`,
    '',
    `- \`make -j${k}\`: local, ${r.ccVersion}, \`cc -O2 -c\` per unit, then \`cc -o prog *.o\`, each compile started by make in make's session (the first suite runs wrapped each in \`setsid -w\`, when rakeserver still gave every job a session of its own; with the spawn helper its jobs share one session, as make's do).`,
    `- distcc: ${distcc}.`,
    `- rake-ts: the CLI (\`node bin/rake-ts.js -f Rakefile ${RAKE_FLAGS.join(' ')}\`), a new process per build, timed from spawn to exit; ${k} \`rakeserver ${SERVER_FLAGS.join(' ')}\` processes on loopback (default logging at info; each in the workdir a server picks by default, here a fresh directory in /dev/shm: docs/server.md, "Where jobs run"). Actionset \`compile\` (N + 1 \`remote-cc -O2 -c uK.c\`, each \`requires uK.c common.h\`), then \`link\` (\`remote-cc -o prog *.o\`, requiring every object).`,
    ...(withBefore
      ? [
          `- rake-ts before the speed-ups: rake-ts as it was at commit ${r.baselineRev}${r.baselineRev === SPEEDUP_BASELINE.rev ? ' (lib/proc.ts `SPEEDUP_BASELINE`)' : ' (`--baseline`)'}, compiled whole, with ${k} servers of their own (the same flags), in the same rounds.`,
        ]
      : []),
    `- Every build starts clean, from new sources each round; its program is run and must print the sum computed by the generator. Before the first size, one untimed build by make and ${WARMUP_BUILDS} by each rake-ts, so that the page cache, the compiler and the servers (spawn helper, job directories, V8's optimizing compiles: a rakeserver is a daemon) are past their start-up.`,
  ].join('\n');
}

/** Per-round ratios to `make` of each measured tool, per size (for the chart). */
export function compareRatios(
  r: CompareResult,
): { units: number; ratios: { tool: string; values: number[] }[] }[] {
  return r.builds.map((b) => ({
    units: b.units,
    ratios: [
      { tool: 'distcc', values: ratios(b.distcc, b.make) },
      { tool: 'rake-ts', values: ratios(b.rake, b.make) },
      { tool: 'rake-ts, before', values: ratios(b.before, b.make) },
    ].filter((t) => t.values.length > 0),
  }));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      units: { type: 'string', default: '100,400' },
      hosts: { type: 'string', default: '2' },
      runs: { type: 'string', default: '3' },
      // A commit to build as a fourth tool in the same rounds, at every size: what a change
      // since then did (as the suite does with SPEEDUP_BASELINE).
      baseline: { type: 'string' },
    },
  });
  progress('compiling rake-ts');
  const programs = compilePrograms();
  const units = (values.units ?? '100').split(',').map(Number);
  const rev = values.baseline;
  let baseline: Programs | undefined;
  if (rev !== undefined) {
    const base = compileRev('compare-baseline', rev);
    baseline = base;
  }
  const result = await runCompare({
    programs,
    units,
    hosts: Number(values.hosts),
    runs: Number(values.runs),
    ...(baseline === undefined ? {} : { baseline, baselineUnits: units, baselineRev: rev }),
  });
  process.stdout.write(`${compareMarkdown(result)}\n`);
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main();

/** Summed change, over servers, of one CPU figure; NaN if any server could not be read. */
function cpuDelta(
  before: readonly ({ self: number; children: number } | undefined)[],
  after: readonly ({ self: number; children: number } | undefined)[],
  pick: (c: { self: number; children: number }) => number,
): number {
  return before.reduce<number>((n, a, i) => {
    const b = after[i];
    return a === undefined || b === undefined ? Number.NaN : n + pick(b) - pick(a);
  }, 0);
}

function emptyTimes(units: number): BuildTimes {
  return {
    units,
    make: [],
    distcc: [],
    rake: [],
    before: [],
    cpu: { make: [], commands: [], servers: [], client: [], clientBefore: [], serversBefore: [] },
  };
}
