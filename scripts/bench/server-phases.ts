/**
 * The server's per-job work, phase by phase (issue 20): the 100-unit C project (lib/project.ts,
 * 101 compiles + a link) built `--builds` times on 2 one-slot rakeservers started with V8's
 * sampling profiler (`node --cpu-prof`), for this tree and for rake-ts at `--baseline REV`
 * (default f774e28, main before this work) with servers of their own, builds alternating.
 * Each sample of the servers' profiles is charged to the innermost phase on its stack, by the
 * functions that do that phase's work (`PHASES` below; the server's own methods, so the
 * profile needs no marks in the code), and each phase's time is divided by the jobs run:
 * milliseconds per job of the server's main thread busy (a sample is taken whatever the
 * thread is doing but waiting for events: a blocking system call counts, and on a loaded
 * machine so does time it was runnable but not running). The profiles cover each server's whole life; its start
 * (module loading, before any job) falls under "outside any phase", as does idle time's
 * absence: idle samples are not counted. The servers' CPU from /proc (self, without the
 * commands they run) is printed beside it as a check.
 *
 *   node --import tsx scripts/bench/server-phases.ts [--builds 6] [--baseline REV|none]
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RAKE_FLAGS, SERVER_FLAGS } from './compare.js';
import { markdownTable } from './lib/markdown.js';
import {
  compilePrograms,
  compileRev,
  type Daemon,
  type Programs,
  progress,
  runChecked,
  SCRATCH,
  serverCpu,
  startRakeservers,
} from './lib/proc.js';
import { checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { formatSpread, spread } from './lib/stats.js';
import { SCALE_BASELINE } from './scale.js';

/**
 * Each phase and the server functions (src/server/, src/protocol/) that do its work. A sample
 * goes to the phase of the innermost of these on its stack; async functions appear on the
 * stack of the code they resume, so time after an `await` is charged too. Both sides' names
 * are listed: before the split of connection.ts (issue 19) its private methods (`#ok`,
 * `#costReply`, `#requirements`, `#reply`, …), after it the functions of handshake.ts,
 * intake.ts and reply.ts.
 */
export const PHASES: readonly { readonly phase: string; readonly functions: readonly string[] }[] =
  [
    {
      phase: 'handshake (hello, ok)',
      functions: [
        '#extension',
        '#ok',
        '#requireAuthenticated',
        'onHeader',
        'onExtension',
        'greet',
        'okMessage',
        'parsed',
      ],
    },
    { phase: 'cost query', functions: ['#costReply', 'costReply'] },
    {
      phase: 'cache offer (have/need, input cache)',
      functions: [
        '#have',
        '#cacheUploads',
        '#settleExpected',
        'claim',
        'lease',
        'materialize',
        'copyHashing',
        'copyHashingSync',
        '#insert',
        '#makeRoom',
        '#touch',
      ],
    },
    { phase: 'requirements (upload)', functions: ['#requirements', 'requirements'] },
    {
      phase: 'directory set-up',
      functions: [
        '#ensureDir',
        'take',
        'give',
        'layoutOf',
        'layoutKey',
        '#empty',
        '#spareCount',
        'runIn',
      ],
    },
    {
      phase: 'listing (before and after)',
      functions: ['listRegularFiles', 'changedFiles', 'isSmallListing'],
    },
    {
      phase: 'spawn and exit',
      functions: [
        'runJob',
        'launch',
        '#event',
        '#accept',
        '#drop',
        'jobEnvironment',
        'resolveLaunch',
        'resolveExit',
        '#heartbeat',
        'acquire',
        // The chained start of a queued job (b75c490).
        'prepareJob',
        'prepare',
        '#chain',
        '#stream',
      ],
    },
    {
      phase: 'reply (and output files)',
      functions: [
        '#reply',
        '#failure',
        '#writeAll',
        'sendReply',
        'sendFailure',
        'sendOutputs',
        'writeAll',
      ],
    },
    {
      phase: 'removal of the job directory',
      functions: ['#removeDir', 'removeDeep', 'removeTree', 'removeDir'],
    },
    {
      // The load stream to watching clients (extension `load`): from ca64e82 plain timers
      // (`EveryBeat`); before, RxJS operators whose frames name no function of ours, so the
      // baseline's share of it falls under "outside any phase".
      phase: 'load stream (extension load)',
      functions: ['#atOnce', '#onBeat', '#settle', 'watchLoad'],
    },
    { phase: 'logging (pino)', functions: ['asJson', 'LOG', '#log'] },
    {
      phase: 'reading headers, the connection',
      functions: ['#converse', '#command', '#run', '#close', 'readHeaderOrEnd', 'readPayload'],
    },
  ];
const OUTSIDE = 'outside any phase (start, sockets, timers)';
const GC = '(garbage collector)';

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string };
    children?: number[];
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** Milliseconds of CPU per phase in the profiles under `dir` (idle excluded). */
export function phaseTimes(dir: string): Map<string, number> {
  const byName = new Map<string, string>();
  for (const p of PHASES) for (const f of p.functions) byName.set(f, p.phase);
  const out = new Map<string, number>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    const prof = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
    const parent = new Map<number, number>();
    for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const byId = new Map(prof.nodes.map((n) => [n.id, n]));
    const phaseOf = new Map<number, string>();
    const resolve = (id: number): string => {
      const known = phaseOf.get(id);
      if (known !== undefined) return known;
      const node = byId.get(id);
      const name = node?.callFrame.functionName ?? '';
      let phase: string;
      if (name === '(idle)' || name === '(program)') phase = name;
      else if (name === GC) phase = GC;
      else
        phase = byName.get(name) ?? (parent.has(id) ? resolve(parent.get(id) as number) : OUTSIDE);
      phaseOf.set(id, phase);
      return phase;
    };
    prof.samples.forEach((id, i) => {
      const phase = resolve(id);
      if (phase === '(idle)') return;
      const key = phase === '(program)' ? OUTSIDE : phase;
      out.set(key, (out.get(key) ?? 0) + (prof.timeDeltas[i] ?? 0) / 1000);
    });
  }
  return out;
}

interface Side {
  readonly label: string;
  readonly programs: Programs;
  servers: Daemon[];
  readonly profiles: string;
  jobs: number;
  cpu: number;
  walls: number[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      builds: { type: 'string', default: '6' },
      baseline: { type: 'string', default: SCALE_BASELINE },
    },
  });
  const builds = Number(values.builds);
  if (!(Number.isInteger(builds) && builds >= 1)) throw new Error('--builds must be ≥ 1');
  const dir = join(SCRATCH, 'server-phases');
  rmSync(dir, { recursive: true, force: true });
  progress('compiling rake-ts');
  const sides: Side[] = [
    {
      label: 'now',
      programs: compilePrograms(join(SCRATCH, 'server-phases-build')),
      servers: [],
      profiles: join(dir, 'now-profiles'),
      jobs: 0,
      cpu: 0,
      walls: [],
    },
  ];
  const rev = values.baseline === 'none' ? undefined : values.baseline;
  if (rev !== undefined) {
    const base = compileRev('server-phases-baseline', rev);
    sides.push({
      label: `before (${rev})`,
      programs: base,
      servers: [],
      profiles: join(dir, 'before-profiles'),
      jobs: 0,
      cpu: 0,
      walls: [],
    });
  }
  const loads: number[] = [];
  const project = writeCProject(join(dir, 'c100'), 100, { hosts: ['127.0.0.1'], port: 6238 });
  for (const s of sides) {
    s.servers = await startRakeservers(s.programs, 2, SERVER_FLAGS, join(dir, `${s.label}-logs`), [
      '--cpu-prof',
      '--cpu-prof-dir',
      s.profiles,
    ]);
  }
  try {
    for (let b = 0; b < builds; b++) {
      loads.push(loadavg()[0] ?? Number.NaN);
      if (b > 0) writeCProject(project.dir, 100, { hosts: ['127.0.0.1'], port: 6238 }, `b${b}`);
      for (const s of b % 2 === 0 ? sides : [...sides].reverse()) {
        cleanBuild(project);
        const hosts = s.servers.map((d) => `127.0.0.1:${d.port}`).join(' ');
        const cpu0 = s.servers.map((d) => serverCpu(d.child.pid ?? 0)?.self ?? Number.NaN);
        const r = await runChecked(
          [process.execPath, s.programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS, '--hosts', hosts],
          { cwd: project.dir },
        );
        const cpu1 = s.servers.map((d) => serverCpu(d.child.pid ?? 0)?.self ?? Number.NaN);
        checkProgram(project, s.label);
        s.jobs += project.units + 2;
        s.cpu += cpu1.reduce((n, c, i) => n + c - (cpu0[i] ?? 0), 0);
        s.walls.push(r.seconds);
      }
      progress(`server-phases: build ${b + 1}/${builds}`);
    }
  } finally {
    // SIGTERM: the servers shut down and exit, and node writes their profiles.
    await Promise.all(sides.flatMap((s) => s.servers.map((d) => d.stop())));
  }
  const times = sides.map((s) => phaseTimes(s.profiles));
  const names = [...PHASES.map((p) => p.phase), GC, OUTSIDE];
  const rows = [['phase', ...sides.map((s) => `${s.label}: ms per job`)]];
  for (const name of names) {
    rows.push([name, ...sides.map((s, i) => ((times[i]?.get(name) ?? 0) / s.jobs).toFixed(3))]);
  }
  rows.push([
    '**all sampled (not idle)**',
    ...sides.map((s, i) => {
      const total = [...(times[i]?.values() ?? [])].reduce((a, b) => a + b, 0);
      return `**${(total / s.jobs).toFixed(2)}**`;
    }),
  ]);
  rows.push([
    'the servers CPU from /proc, during the builds only',
    ...sides.map((s) => ((1000 * s.cpu) / s.jobs).toFixed(2)),
  ]);
  rows.push(['build wall (s)', ...sides.map((s) => formatSpread(spread(s.walls)))]);
  process.stdout.write(
    [
      markdownTable(rows),
      '',
      `Milliseconds per job of the servers' main thread busy (V8's sampling profiler: every sample not idle in the event loop, so a blocking system call counts, and so does time the thread was runnable but not running on a loaded machine; the /proc row is CPU proper). ${builds} builds of the 100-unit project per column (${sides[0]?.jobs} jobs), 2 \`rakeserver ${SERVER_FLAGS.join(' ')}\` per column under \`node --cpu-prof\` (sampling adds its own cost to every row), builds alternating; load ${formatSpread(spread(loads), 1)}. Reproduce: \`node --import tsx scripts/bench/server-phases.ts --builds ${builds}${rev === undefined ? ' --baseline none' : ` --baseline ${rev}`}\`.`,
      '',
    ].join('\n'),
  );
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main();
