/**
 * The benchmark suite (`npm run bench`): rake-ts against the tools people use instead
 * (`make -jK`, distcc), where its time goes, how it scales over hosts and round trips, and
 * the earlier benchmarks (transfer, parse, client, cache), all in one run. Writes
 * docs/benchmarks.md (its header below is hand-written; a section this run does not write, such
 * as "Action cache" or "Scale" from their own scripts, is carried over from the page) and the
 * SVG charts in docs/bench/.
 *
 *   npm run bench [-- --quick] [--skip scaling,cache,...] [--no-docs]
 *
 * Parts: build (compare.ts), overhead (overhead.ts), scaling (scaling.ts), and as child
 * processes the earlier scripts transfer.ts, parse.ts, client (build.ts), cache.ts. `--quick`
 * is a smoke run (small sizes, one run each) that writes nothing unless `--docs` is given.
 * Progress goes to stderr.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PHASES } from '../../src/observe/timeline.js';
import { barChart, lineChart, stackedBars } from './charts.js';
import {
  type CompareResult,
  compareMarkdown,
  compareRatios,
  runCompare,
  WARMUP_BUILDS,
} from './compare.js';
import { sectionsNotIn } from './lib/markdown.js';
import {
  compileBaseline,
  compilePrograms,
  type Programs,
  progress,
  ROOT,
  SPEEDUP_BASELINE,
} from './lib/proc.js';
import { formatSpread, median, ratios, type Spread, spread } from './lib/stats.js';
import {
  type OverheadResult,
  type OverheadRun,
  type OverheadWorkload,
  overheadMarkdown,
  runOverhead,
} from './overhead.js';
import { runScaling, type ScalingResult, scalingMarkdown } from './scaling.js';

const PARTS = [
  'build',
  'overhead',
  'scaling',
  'transfer',
  'parse',
  'client',
  'cache',
  'reapi',
] as const;
type Part = (typeof PARTS)[number];

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    skip: { type: 'string', default: '' },
    docs: { type: 'boolean' },
    'no-docs': { type: 'boolean', default: false },
  },
});
const QUICK = opts.quick === true;
const WRITE_DOCS = opts['no-docs'] ? false : (opts.docs ?? !QUICK);
const skipped = new Set((opts.skip ?? '').split(',').filter(Boolean));
for (const s of skipped) {
  if (!(PARTS as readonly string[]).includes(s))
    throw new Error(`--skip: no part named ${s} (${PARTS.join(', ')})`);
}
const wanted = (p: Part) => !skipped.has(p);

/** Sizes and run counts: the full suite is sized to finish in about 10 minutes on 2 cores. */
const PLAN = QUICK
  ? {
      units: [30],
      runs: 1,
      overhead: { trues: 40, units: 10 },
      scaling: { hosts: [1, 2], rtts: [20], units: 30, runs: 1, probe: 4 },
      transfer: ['--mib', '16', '--runs', '1', '--seconds', '1'],
      parse: ['--actions', '20000', '--runs', '1'],
      client: ['--runs', '1', '--units', '5', '--trues', '20', '--big', '100'],
      cache: ['--units', '5', '--runs', '1'],
      reapi: ['--runs', '1'],
    }
  : {
      units: [100, 400],
      runs: 3,
      overhead: { trues: 100, units: 20 },
      scaling: { hosts: [1, 2, 4, 8], rtts: [2, 20], units: 30, runs: 3, probe: 8 },
      transfer: ['--mib', '64', '--runs', '3', '--seconds', '1'],
      parse: ['--runs', '3'],
      client: ['--runs', '2', '--units', '10', '--trues', '100', '--big', '500'],
      cache: ['--units', '20', '--runs', '2'],
      reapi: ['--runs', '5'],
    };
const K = 2;

/** An earlier benchmark script, run as a child process; its stdout is its section body. */
interface SubBenchmark {
  readonly part: Part;
  readonly title: string;
  readonly script: string;
  readonly args: readonly string[];
}

const SUBS: readonly SubBenchmark[] = [
  {
    part: 'transfer',
    title: 'Server: transfer throughput and cost queries',
    script: 'transfer.ts',
    args: PLAN.transfer,
  },
  {
    part: 'parse',
    title: 'Grammar: parsing a large Rakefile',
    script: 'parse.ts',
    args: PLAN.parse,
  },
  {
    part: 'client',
    title: 'Client: builds and per-action overhead',
    script: 'build.ts',
    args: PLAN.client,
  },
  { part: 'cache', title: 'Extensions: input cache', script: 'cache.ts', args: PLAN.cache },
  {
    part: 'reapi',
    title: 'REAPI: the example project through REAPI and through our protocol',
    script: 'reapi.ts',
    args: PLAN.reapi,
  },
];

function runSub(sub: SubBenchmark): Promise<{ ok: boolean; body: string; seconds: number }> {
  const argv = ['--import', 'tsx', join(ROOT, 'scripts/bench', sub.script), ...sub.args];
  progress(`${sub.part}: node ${argv.slice(2).join(' ')}`);
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let errTail = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      const text = b.toString();
      errTail = (errTail + text).slice(-4000);
      for (const line of text.split('\n')) if (line.trim()) progress(`  ${sub.part}: ${line}`);
    });
    child.once('close', (code) => {
      const seconds = (performance.now() - started) / 1000;
      const body = Buffer.concat(out).toString('utf8').trim();
      if (code !== 0)
        resolve({
          ok: false,
          body: `Not measured in this run: \`${sub.script}\` exited ${code}.\n\n\`\`\`\n${errTail.trim()}\n\`\`\``,
          seconds,
        });
      // A script that prints its own section title (cache.ts) gets ours instead.
      else resolve({ ok: true, body: body.replace(/^## [^\n]*\n+/, ''), seconds });
    });
  });
}

function commandVersion(argv: string[]): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout.split('\n')[0] ?? '').trim() : 'not installed';
}

const writeSvg = (name: string, svg: string) => {
  const dir = join(ROOT, 'docs', 'bench');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, name), svg);
};

/** `a → b (−x%)`: a before/after pair of medians. */
function change(before: Spread, after: Spread, unit: string, digits = 2): string {
  const pct = ((after.median - before.median) / before.median) * 100;
  return `${formatSpread(before, digits)} → **${formatSpread(after, digits)}** ${unit} (${pct <= 0 ? '−' : '+'}${Math.abs(pct).toFixed(0)}%)`;
}

function buildCharts(
  compare: CompareResult | undefined,
  overhead: OverheadResult | undefined,
  scaling: ScalingResult | undefined,
): string[] {
  const made: string[] = [];
  if (compare !== undefined) {
    const groups = compareRatios(compare).map((g) => ({
      label: `N = ${g.units}`,
      bars: g.ratios.map((t) => {
        const s = spread(t.values);
        return { label: t.tool, value: s.median, lo: s.min, hi: s.max };
      }),
    }));
    writeSvg(
      'build.svg',
      barChart({
        title: `Build wall time as a ratio to make -j${K} (same round; lower is faster)`,
        yLabel: `wall time / make -j${K}`,
        groups,
        refLines: [
          { value: 1, label: `make -j${K}` },
          { value: 1.25, label: 'target 1.25', dashed: true },
        ],
      }),
    );
    made.push('build.svg');
  }
  if (overhead !== undefined) {
    const rows = overhead.workloads
      .filter((w) => w.jobs === '1')
      .map((w) => ({
        label: `${w.name.replaceAll('`', '')}${w.before ? ' (before)' : ''}`,
        values: PARTS_OF_ACTION.map((part) => median(w.runs.map(part.value))),
      }));
    writeSvg(
      'overhead.svg',
      stackedBars({
        title: 'One action, one at a time (-j 1): median ms per phase',
        xLabel: 'milliseconds per action',
        parts: PARTS_OF_ACTION.map((p) => p.label),
        rows,
      }),
    );
    made.push('overhead.svg');
  }
  if (scaling?.ok) {
    const rtts = [...new Set(scaling.points.map((p) => p.rttMs))];
    const series = rtts.flatMap((rtt) => {
      const mk = (before: boolean) => ({
        label: `RTT ${rtt} ms${before ? ', before' : ''}`,
        points: scaling.points
          .filter((p) => p.rttMs === rtt && p.before === before)
          .map((p) => {
            const s = spread(p.seconds);
            return { x: p.hosts, y: s.median, lo: s.min, hi: s.max };
          }),
      });
      return [mk(false), mk(true)].filter((s) => s.points.length > 0);
    });
    const makeRef = compare?.builds.find((b) => b.units === scaling.units);
    writeSvg(
      'scaling.svg',
      lineChart({
        title: `Build of N = ${scaling.units} over the test bed: wall time against hosts`,
        xLabel: 'hosts (one job slot each; all on this 2-core machine)',
        yLabel: 'wall time (s)',
        log2X: true,
        series,
        ...(makeRef === undefined
          ? {}
          : {
              refLines: [{ value: median(makeRef.make), label: `local make -j${K}`, dashed: true }],
            }),
      }),
    );
    made.push('scaling.svg');
  }
  return made;
}

/** The phases of an action with *run* split into the command and the rest (the chart's parts). */
const PARTS_OF_ACTION: readonly { label: string; value: (r: OverheadRun) => number }[] = [
  { label: 'poll', value: (r) => r.phases.poll },
  { label: 'connect', value: (r) => r.phases.connect },
  { label: 'upload', value: (r) => r.phases.upload },
  { label: 'run: the command', value: (r) => Math.min(r.commandMs, r.phases.run) },
  { label: 'run: the rest', value: (r) => Math.max(0, r.phases.run - r.commandMs) },
  { label: 'download', value: (r) => r.phases.download },
];

/** The closing note: what was made faster, measured before/after in this run. */
function speedupSection(
  compare: CompareResult | undefined,
  overhead: OverheadResult | undefined,
  scaling: ScalingResult | undefined,
): string {
  const lines: string[] = [];
  const b = compare?.builds.find((x) => x.before.length > 0);
  if (b !== undefined) {
    lines.push(
      `| build N = ${b.units}, ${K} loopback servers (s) | ${change(spread(b.before), spread(b.rake), 's')} |`,
      `| the same, as a ratio to \`make -j${K}\` | ${formatSpread(spread(ratios(b.before, b.make)))} → **${formatSpread(spread(ratios(b.rake, b.make)))}** |`,
    );
  }
  if (overhead?.startup.before !== undefined) {
    const { now, before } = overhead.startup;
    lines.push(
      `| client start-up alone (\`rake-ts --version\`), CPU (s) | ${change(spread(before.cpu), spread(now.cpu), 's')} |`,
      `| the same, wall (s) | ${change(spread(before.wall), spread(now.wall), 's')} |`,
    );
  }
  if (b !== undefined && b.cpu.clientBefore.length > 0 && !b.cpu.client.some(Number.isNaN)) {
    lines.push(
      `| build N = ${b.units}: CPU of the client (s) | ${change(spread(b.cpu.clientBefore), spread(b.cpu.client), 's')} |`,
    );
  }
  if (
    b !== undefined &&
    b.cpu.serversBefore.length > 0 &&
    !b.cpu.serversBefore.some(Number.isNaN) &&
    !b.cpu.servers.some(Number.isNaN)
  ) {
    const perJob = (xs: number[]) => xs.map((x) => (x * 1000) / (b.units + 2));
    lines.push(
      `| build N = ${b.units}: CPU of the servers per job (ms) | ${change(spread(perJob(b.cpu.serversBefore)), spread(perJob(b.cpu.servers)), 'ms', 1)} |`,
    );
  }
  if (overhead !== undefined) {
    for (const w of overhead.workloads.filter((x) => x.before)) {
      const now = overhead.workloads.find(
        (x) => !x.before && x.name === w.name && x.jobs === w.jobs,
      );
      if (now === undefined) continue;
      const label = w.name;
      lines.push(
        `| ${label}, \`-j 1\`: one action, wall − the command's own time (ms) | ${change(spread(w.runs.map((r) => r.actionMs - r.commandMs)), spread(now.runs.map((r) => r.actionMs - r.commandMs)), 'ms', 1)} |`,
      );
    }
  }
  if (scaling?.ok) {
    for (const p of scaling.points.filter((x) => x.before)) {
      const now = scaling.points.find(
        (x) => !x.before && x.rttMs === p.rttMs && x.hosts === p.hosts,
      );
      if (now === undefined) continue;
      const sum = (q: typeof p) => PHASES.reduce((n, ph) => n + q.probe[ph], 0);
      lines.push(
        `| RTT ${p.rttMs} ms, ${p.hosts} hosts: build N = ${scaling.units} (s) | ${change(spread(p.seconds), spread(now.seconds), 's')} |`,
        `| RTT ${p.rttMs} ms: one compile at \`-j 1\`, upload + download (ms) | ${(p.probe.upload + p.probe.download).toFixed(0)} → **${(now.probe.upload + now.probe.download).toFixed(0)}** ms; all phases ${sum(p).toFixed(0)} → **${sum(now).toFixed(0)}** ms |`,
      );
    }
  }
  const table =
    lines.length === 0
      ? 'Not measured in this run (run without `--skip build,overhead,scaling`).'
      : ['| figure | before → after (median, range) |', '| --- | --- |', ...lines].join('\n');
  return [
    'Earlier work (up to commit 6e5b848) found that on one 2-core machine rake-ts\'s own CPU is taken straight from the compilers, and cut the servers\' per-job work from 25 to 11 ms of CPU: a `posix_spawn` helper instead of forking Node per job, no `/bin/sh` for plain commands, synchronous I/O for small files, reused job directories, fewer system calls per message (docs/server.md, "Starting jobs"). From 3047200 to 6e497a1 the client\'s start went from about 0.45 to 0.26 s (`rake-ts -n`): one bundled file per program (`scripts/bundle.mjs`), V8\'s code cache (`bin/rake-ts.js`), no IPv6 pattern compiled per run; job directories moved to tmpfs (`/dev/shm`, docs/server.md "Where jobs run": 6.3 → 5.0 ms of server CPU per compile job); and the client lets functions run 4 times longer before V8 optimizes them (`--interrupt-budget`; client CPU per compile job 4.6 → 4.0 ms). Since 6e497a1:',
    '',
    "1. **Nothing loaded that the command does not use.** A profile of `rake-ts -n` put 40 ms in the bundle's top level with no function of ours to blame: three copies of string-width (yargs, cliui and wrap-ansi measure `--help` text with it) each built an `Intl.Segmenter` and regular expressions of Unicode properties as they loaded, ICU work of 16 + 15 + 5 ms. The bundle now loads string-width and pino-pretty on their first call (`LAZY_MODULES` in `scripts/bundle.mjs`), and the embedded server and `serve` load the server when they start one: 33 ms less per start (median of 40 paired runs of `rake-ts -n`).",
    `2. **A server optimizes its hot code sooner.** A rakeserver is a daemon, but V8 optimizes a function only after it has run 66 KiB of bytecode, and after the suite's 3 warm-up builds (it now makes ${WARMUP_BUILDS}) most of a server's per-job code still ran unoptimized: its CPU per build kept falling for 10 builds more. \`bin/rakeserver.js\` now sets an eighth of that budget: the first build costs the servers 0.7–0.9 s more CPU, and from the fifth their CPU per build was 9–16% lower (0.88 → 0.80 s and 0.85 → 0.72 s in two runs, medians of builds 5–20, both budgets side by side; \`scripts/bench/server-warmup.ts\`, docs/server.md).`,
    "3. **A job is one write each way.** Even pipelined, a compile job cost about 7 writes from the client and 6 from the server (hello and `have`, the filestream's questions and `!T`, the command, the reply, the download's questions), and on this VM each write on loopback wakes the other process, among the dearest things a job does. The `push` extension (docs/protocol.md, \"push\") sends files unasked in both directions; a job whose requirements are all under 64 KiB (which are then no longer offered to the cache: sending them costs less than the round trip) goes out with its hello, and the server's `ok` comes back with the reply. A compile job is now one write each way plus `!D`. In an A/B of the 100-unit build against the commit before (7 interleaved rounds, `make -j2` alone 3.6–4.2 s that hour) the servers' own CPU per build fell from 0.78 to 0.61 s and the ratio to `make -j2` from 1.24 to 1.22; the second half (the job behind the hello) did not move CPU measurably here, but it is one round trip less per job on a real link (the scaling section).",
    '',
    "Measured and not kept, in the same way (interleaved runs against the tree before): a window of at most 2 job connections opening per host, doubling as commands got through, started the first compile 70 ms sooner, but the build took no less time, since the hand-shakes then ran beside the compiles instead of before them; a V8 startup snapshot of the client (`node --snapshot-blob`) started no faster than the code cache, as a snapshot keeps no compiled code; `--single-threaded-gc` or a larger young generation (`--min-semi-space-size` 4 or 8 MB) did not lower the client's CPU for 500 actions; and starting `bin/` as CommonJS rather than an ES module saved less than the noise.",
    '',
    `Before/after, from this run ("before" is rake-ts at commit ${SPEEDUP_BASELINE.rev}, compiled whole from git as its \`npm run build\` did, with servers of its own in the same rounds; see lib/proc.ts \`SPEEDUP_BASELINE\`):`,
    '',
    table,
    '',
    "Read the rows against their ranges: builds alternate within a round, but this machine's load drifts, so a small change inside overlapping ranges is noise.",
  ].join('\n');
}

const HEADER = `# Benchmarks

This page is generated by \`npm run bench\` (\`scripts/bench/index.ts\`); edit the scripts, not
the page. It answers the question users ask when they choose between running \`make -j\`
locally, distcc, and rake-ts: how long does a build take with each, where does rake-ts spend
its time, and how does it behave over more hosts and slower links.

**Machine.** One shared build machine: 2 cores, no other hosts. Every server and daemon runs
here too, so "remote" means "another process on loopback" (or, for scaling, another network
namespace with a delayed link). Other engineers' test suites run on the same machine at the
same time, so wall times are noisy: every figure is the median of several runs with the range
of those runs beside it, ratios are taken between builds of the same round, and the load
average is recorded below. Treat differences smaller than the ranges as noise.

**Reproduce.** \`npm ci\` (tsx and TypeScript are dev dependencies), then \`npm run bench\`
(sized for about 10 minutes on an idle 2-core machine — this run's own time is below; root needed for the scaling part, which uses network
namespaces and \`iptables\`). \`scripts/bench/install-tools.sh\` runs first: it checks \`make\`,
\`cc\` and distcc, and installs Debian's \`distcc\` with apt-get if it is missing. Options:
\`--quick\` (a smoke run with small sizes that does not write this page), \`--skip
build,overhead,scaling,transfer,parse,client,cache,reapi\`. Each part also runs on its own, e.g.
\`node --import tsx scripts/bench/compare.ts --units 100 --runs 3\`. The suite runs the client
part at cut sizes to fit its budget; the sizes the client's own targets are set for (a
100-unit project, 500 actions, 10,000 actions) take \`npm run bench:client\` (\`build.ts --runs 5
--write-docs\`, about 7 minutes), which rewrites the "Client" section of this page in place:
run it after \`npm run bench\`, as was done for this page.
`;

async function main(): Promise<void> {
  const started = performance.now();
  const loadBefore = loadavg();
  progress(`bench: ${QUICK ? 'quick' : 'full'} run; parts: ${PARTS.filter(wanted).join(', ')}`);
  const tools = spawnSync('bash', [join(ROOT, 'scripts/bench/install-tools.sh')], {
    encoding: 'utf8',
  });
  for (const line of `${tools.stdout}${tools.stderr}`.split('\n')) if (line.trim()) progress(line);

  progress('compiling rake-ts (tsc, tsconfig.build.json) and the baseline before the speed-ups');
  const programs = compilePrograms();
  const base = compileBaseline();
  const baseline: Programs | undefined = 'why' in base ? undefined : base;
  if ('why' in base) progress(`baseline not measured: ${base.why}`);

  const sections: { title: string; body: string; seconds: number }[] = [];
  const timed = async <T>(
    title: string,
    work: () => Promise<T>,
    render: (r: T) => string,
  ): Promise<T | undefined> => {
    const t0 = performance.now();
    try {
      const r = await work();
      sections.push({ title, body: render(r), seconds: (performance.now() - t0) / 1000 });
      return r;
    } catch (err) {
      const e = err as Error;
      progress(`${title}: failed: ${e.stack ?? e.message}`);
      sections.push({
        title,
        body: `Not measured in this run: ${e.message}`,
        seconds: (performance.now() - t0) / 1000,
      });
      return undefined;
    }
  };

  const compare = wanted('build')
    ? await timed(
        `Build: rake-ts against make -j${K} and distcc`,
        () =>
          runCompare({
            programs,
            units: PLAN.units,
            hosts: K,
            runs: PLAN.runs,
            ...(baseline ? { baseline, baselineUnits: [PLAN.units[0] ?? 100] } : {}),
          }),
        (r) => `![build ratios](bench/build.svg)\n\n${compareMarkdown(r)}\n\n${buildReading(r)}`,
      )
    : undefined;
  const overhead = wanted('overhead')
    ? await timed(
        'Overhead: where the milliseconds of one action go',
        () =>
          runOverhead({
            programs,
            runs: PLAN.runs,
            hosts: K,
            ...PLAN.overhead,
            ...(baseline ? { baseline } : {}),
          }),
        (r) =>
          `![phases of one action](bench/overhead.svg)\n\n${overheadMarkdown(r)}\n\n${overheadReading(r, compare)}`,
      )
    : undefined;
  const scaling = wanted('scaling')
    ? await timed(
        'Scaling: hosts and round-trip times',
        () =>
          runScaling({
            programs,
            hostCounts: PLAN.scaling.hosts,
            rtts: PLAN.scaling.rtts,
            units: PLAN.scaling.units,
            runs: PLAN.scaling.runs,
            probe: PLAN.scaling.probe,
            ...(baseline ? { baseline, baselineHosts: K } : {}),
          }),
        (r) =>
          r.ok
            ? `![wall time against hosts](bench/scaling.svg)\n\n${scalingMarkdown(r)}`
            : scalingMarkdown(r),
      )
    : undefined;
  for (const sub of SUBS) {
    if (!wanted(sub.part)) continue;
    const r = await runSub(sub);
    sections.push({
      title: sub.title,
      body: `${r.body}\n\nIn this run: \`node --import tsx scripts/bench/${sub.script} ${sub.args.join(' ')}\` (${r.seconds.toFixed(0)} s; sizes chosen to fit the suite's time budget).`,
      seconds: r.seconds,
    });
  }

  const charts = buildCharts(compare, overhead, scaling);
  const minutes = (performance.now() - started) / 60_000;
  const loadAfter = loadavg();
  const machine = [
    `- ${availableParallelism()} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}`,
    `- Node ${process.version}; ${commandVersion(['cc', '--version'])}; ${commandVersion(['make', '--version'])}; ${commandVersion(['distcc', '--version'])}`,
    `- Load average (1, 5, 15 min): ${loadBefore.map((x) => x.toFixed(1)).join(', ')} at the start, ${loadAfter.map((x) => x.toFixed(1)).join(', ')} at the end`,
    `- Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; the whole suite took **${minutes.toFixed(1)} minutes** (${sections.map((s) => `${s.title.split(':')[0]} ${s.seconds.toFixed(0)} s`).join(', ')})`,
  ].join('\n');
  // Sections this run did not write (a part skipped, or written by another script or by
  // hand, such as "Action cache" and "Scale") are carried over from the page as it was.
  const DOC = join(ROOT, 'docs', 'benchmarks.md');
  const kept = existsSync(DOC)
    ? sectionsNotIn(readFileSync(DOC, 'utf8'), [
        'This run',
        'What was made faster',
        ...sections.map((s) => s.title),
      ])
    : [];
  const doc = [
    HEADER,
    '## This run',
    '',
    machine,
    '',
    ...sections.flatMap((s) => [`## ${s.title}`, '', s.body, '']),
    ...kept.flatMap((s) => [s, '']),
    '## What was made faster',
    '',
    speedupSection(compare, overhead, scaling),
    '',
  ].join('\n');
  process.stdout.write(doc);
  if (WRITE_DOCS) {
    writeFileSync(DOC, doc);
    progress(`wrote docs/benchmarks.md and docs/bench/{${charts.join(',')}}`);
  }
  progress(`bench: done in ${minutes.toFixed(1)} minutes`);
}

/** Where the build's time goes, from its CPU table. */
function buildReading(r: CompareResult): string {
  const out: string[] = [];
  for (const b of r.builds) {
    const m = (v: number[]) => median(v);
    const own = m(b.cpu.servers) + m(b.cpu.client);
    if (Number.isNaN(own)) continue;
    out.push(
      `N = ${b.units}: the commands took ${m(b.cpu.commands).toFixed(1)} CPU s under rake-ts against ${m(b.cpu.make).toFixed(1)} s for make and its compilers (the link step included), and rake-ts itself ${own.toFixed(1)} s more (servers ${m(b.cpu.servers).toFixed(1)} s, ${((m(b.cpu.servers) / (b.units + 2)) * 1000).toFixed(0)} ms per job; client ${m(b.cpu.client).toFixed(1)} s). With both cores busy compiling, that CPU is wall time: about ${(own / 2).toFixed(1)} s of the ${(m(b.rake) - m(b.make)).toFixed(1)} s between rake-ts and make.`,
    );
  }
  if (out.length === 0) return '';
  return [
    '**Where the time goes.** On one 2-core machine every "remote" job competes with the compilers for the same cores, so the gap to `make` is the CPU rake-ts spends around the compiles, not waiting:',
    '',
    ...out.map((l) => `- ${l}`),
    '',
    "A server's CPU per job is now spread thin: accepting the connection, the handshake, the cache offer, writing the requirements into a reused job directory, listing it before and after the command, asking the spawn helper to start the command, sending the output. The client's is its start-up (about a quarter of a second of CPU with its code cache, paid once per build; the overhead table below measures it) and one connection and conversation per action. distcc pays more here: it preprocesses every unit locally before shipping it, so it too does more work than `make` on the same cores. With real remote hosts (the scaling section) that CPU is spread over the hosts instead.",
  ].join('\n');
}

/** A few sentences reading the overhead table against the build comparison. */
function overheadReading(r: OverheadResult, compare: CompareResult | undefined): string {
  const seq = r.workloads.find((w) => !w.before && w.jobs === '1' && w.name.includes('true'));
  const cc = r.workloads.find((w) => !w.before && w.jobs === '1' && w.name.includes('cc'));
  if (seq === undefined || cc === undefined) return '';
  const m = (f: (x: OverheadRun) => number, w: OverheadWorkload = seq) => median(w.runs.map(f));
  const startup = m((x) => x.processSeconds - x.spanSeconds);
  const b = compare?.builds[0];
  const buildNote =
    b === undefined
      ? ''
      : ` In the N = ${b.units} build that is ${((startup / median(b.rake)) * 100).toFixed(0)}% of rake-ts's median wall time, paid once; the rest is the compiles themselves on ${K} job slots, the link step (which waits for every compile and then uploads N + 1 objects), and the client's and servers' own CPU on the same 2 cores the compilers need.`;
  return [
    `Reading it: one \`remote-true\` costs ${m((x) => x.actionMs).toFixed(1)} ms end to end at \`-j 1\`, of which ${m((x) => x.commandMs).toFixed(1)} ms is the server starting \`/bin/sh -c true\` and waiting for it, ${(m((x) => x.phases.run) - m((x) => x.commandMs)).toFixed(1)} ms the rest of *run* (the \`!C\` round trip, the job directory listed before and after for outputs, the log records), ${m((x) => x.phases.poll).toFixed(1)} ms the cost poll and ${(m((x) => x.phases.connect) + m((x) => x.phases.upload)).toFixed(1)} ms connecting and the handshake. A compile adds its two requirements and one output: upload ${m((x) => x.phases.upload, cc).toFixed(1)} ms, download ${m((x) => x.phases.download, cc).toFixed(1)} ms, the compiler ${m((x) => x.commandMs, cc).toFixed(1)} ms. Outside every action, the CLI's own start and exit cost ${startup.toFixed(2)} s per run.${buildNote}`,
  ].join('\n');
}

await main();
