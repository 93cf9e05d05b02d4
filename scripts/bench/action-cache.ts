/**
 * Benchmark: the action cache (issue 21, `--cache`): every row of the issue's target table in
 * one command.
 *
 *   npm run build && node --import tsx scripts/bench/action-cache.ts [--runs 5] [--units 100]
 *       [--big 10000] [--rows embedded,servers,big]
 *
 * Each round (`--runs` of them, the rows interleaved within a round) does, with fresh
 * projects, cache directories and servers:
 * - `embedded`: the generated C project of scripts/bench/lib/project.ts (`--units` compiles +
 *   a link) built by `bin/rake-ts.js --cache` on 2 loopback endpoints where nothing listens
 *   (the client serves them with embedded servers): the first run (empty cache), the second
 *   with nothing changed (objects and program removed first), a third after one unit's source
 *   gained a function.
 * - `servers`: the same on 2 `bin/rakeserver.js` processes, which say their platform when
 *   asked and keep the results of the jobs they ran (extension `results`); after the first run
 *   a second clone of the project (another directory, an empty local cache) is built on them,
 *   and the jobs the servers ran for it are counted from their logs (`job end` lines).
 * - `big`: `--big` actions `remote-true N` (distinct keys, no inputs, no outputs) on 2
 *   rakeserver processes, as build.ts's peak-RSS row (its figure in docs/benchmarks.md is
 *   "today's" bound): without `--cache` (the baseline, in the same round), with `--cache` and
 *   an empty cache, and again with every action a hit; peak RSS (VmHWM) and wall time of each
 *   client process, the jobs the servers ran in the all-hit run, and the lookup's own cost
 *   (scripts/bench/action-cache-lookup.ts: key + verified read over `--big` entries).
 * Every build is a separate client process, timed from spawn to exit. Outputs of the second
 * runs and the clone are compared byte for byte, modes included, with the first run's.
 * Figures are medians with the range over the rounds; the load average is printed beside them.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runRakeProgram } from './lib/client-run.js';
import { checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { median } from './lib/stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({
  options: {
    units: { type: 'string', default: '100' },
    runs: { type: 'string', default: '5' },
    big: { type: 'string', default: '10000' },
    rows: { type: 'string', default: 'embedded,servers,big' },
  },
});
const UNITS = Number(opts.units);
const RUNS = Number(opts.runs);
const BIG = Number(opts.big);
const ROWS = new Set(opts.rows.split(','));
for (const r of ROWS) {
  if (!['embedded', 'servers', 'big'].includes(r)) throw new Error(`--rows: unknown row ${r}`);
}

/** `bin/rakeserver.js --port 0` (a separate process); resolves with its port once it listens. */
function startServer(flags: readonly string[] = []): Promise<{
  child: ChildProcess;
  port: number;
  jobs: () => number;
  compiles: () => number;
}> {
  const child = spawn(
    process.execPath,
    [join(root, 'bin/rakeserver.js'), '--port', '0', ...flags],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let buf = '';
    let jobs = 0;
    let compiles = 0;
    let rest = '';
    // Every later line is read for `job end` (a job the server really ran).
    const count = (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.includes('"msg":"job end"')) continue;
        jobs++;
        if (line.includes(' -c ')) compiles++;
      }
    };
    const onData = (chunk: Buffer) => {
      buf += chunk.toString();
      for (const line of buf.split('\n')) {
        try {
          const o = JSON.parse(line) as { msg?: string; port?: number };
          if (o.msg === 'listening' && o.port) {
            child.stderr?.off('data', onData);
            child.stderr?.on('data', count);
            return resolve({ child, port: o.port, jobs: () => jobs, compiles: () => compiles });
          }
        } catch {}
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (c) => reject(new Error(`rakeserver exited early (${c}): ${buf}`)));
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once `value()` has not changed for 3 polls 50 ms apart (at most 2 s). */
async function settled(value: () => number): Promise<void> {
  let last = value();
  let same = 0;
  for (let i = 0; i < 40 && same < 3; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = value();
    same = now === last ? same + 1 : 0;
    last = now;
  }
}

interface Build {
  readonly ms: number;
  readonly actions: number;
  readonly cached: number;
}

/**
 * One `rake-ts --cache` build. Asynchronous, so the servers' logs keep being read while it runs
 * (a blocked event loop would leave their stderr pipes full).
 */
async function build(dir: string, cacheDir: string): Promise<Build> {
  const t0 = performance.now();
  // The program as a user starts it (`rake-ts`, the file run as a program: its shell line
  // starts node), not `node bin/rake-ts.js`, which skips what that line does at start-up.
  const child = spawn(
    join(root, 'bin/rake-ts.js'),
    ['--cache', '--cache-dir', cacheDir, '--progress', 'never'],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const status = await new Promise<number | null>((resolve) => child.once('close', resolve));
  const ms = performance.now() - t0;
  if (status !== 0) throw new Error(`rake-ts exited ${status}: ${stderr}`);
  const m = /(\d+)\/(\d+) actions succeeded(?:, (\d+) from the cache)?/.exec(stderr);
  if (!m) throw new Error(`no summary line in: ${stderr}`);
  return { ms, actions: Number(m[2]), cached: Number(m[3] ?? 0) };
}

/** Every output (objects and the program) with its bytes and mode. */
function outputs(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(dir).sort()) {
    if (!name.endsWith('.o') && name !== 'prog') continue;
    const p = join(dir, name);
    out.set(name, `${(statSync(p).mode & 0o777).toString(8)}:${readFileSync(p).toString('hex')}`);
  }
  return out;
}

type Servers = Awaited<ReturnType<typeof startServer>>[];
const ran = (servers: Servers) => servers.reduce((n, x) => n + x.jobs(), 0);
const compiled = (servers: Servers) => servers.reduce((n, x) => n + x.compiles(), 0);
const same = (a: Map<string, string>, b: Map<string, string>) =>
  JSON.stringify([...a]) === JSON.stringify([...b]);

/** One row's figures over the rounds. */
class Figures {
  readonly first: number[] = [];
  readonly second: number[] = [];
  readonly changed: number[] = [];
  readonly jobsSecond: number[] = [];
  readonly jobsChanged: number[] = [];
  readonly clone: number[] = [];
  readonly jobsClone: number[] = [];
  readonly compilesClone: number[] = [];
  identical = true;
}
const embeddedRow = new Figures();
const serversRow = new Figures();
const big = {
  uncachedS: [] as number[],
  uncachedRss: [] as number[],
  firstS: [] as number[],
  firstRss: [] as number[],
  hitS: [] as number[],
  hitRss: [] as number[],
  hitJobs: [] as number[],
  lookupMs: [] as number[],
};
const loads: number[] = [];

/** The C project's rows: first, (clone,) second, one change; into `f`. */
async function cRow(f: Figures, run: number, scratch: string, servers: Servers): Promise<void> {
  const withServers = servers.length > 0;
  const hosts = withServers
    ? servers.map((s) => `127.0.0.1:${s.port}`)
    : [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
  const salt = `run ${run} ${Date.now()}`;
  const rakePort = await freePort();
  const project = writeCProject(join(scratch, 'p'), UNITS, { hosts, port: rakePort }, salt);
  const cacheDir = join(scratch, 'cache');
  const a = await build(project.dir, cacheDir);
  const before = outputs(project.dir);
  checkProgram(project, 'first run');
  let cloneNote = '';
  if (withServers) {
    // A teammate's fresh clone: the same sources elsewhere, an empty local cache.
    const other = writeCProject(join(scratch, 'q'), UNITS, { hosts, port: rakePort }, salt);
    await settled(() => ran(servers)); // the first run's last lines, read before the clone starts
    const ranBefore = ran(servers);
    const compiledBefore = compiled(servers);
    const q = await build(other.dir, join(scratch, 'cache-q'));
    // A job's `job end` line is written once its reply is sent, and may be read after the
    // build ends: count once the figure holds for 3 polls (at most 2 s).
    await settled(() => ran(servers));
    f.jobsClone.push(ran(servers) - ranBefore);
    f.compilesClone.push(compiled(servers) - compiledBefore);
    f.clone.push(q.ms);
    if (!same(before, outputs(other.dir))) f.identical = false;
    checkProgram(other, 'second clone');
    cloneNote = `, clone ${q.ms.toFixed(0)} ms (${f.compilesClone.at(-1)} compiles ran)`;
  }
  // checkProgram sets prog's mode to 0755: take the outputs as the build left them.
  cleanBuild(project);
  const b = await build(project.dir, cacheDir);
  if (!same(before, outputs(project.dir))) f.identical = false;
  checkProgram(project, 'second run');
  // A change that changes the object (a comment would not: the link would then hit too).
  appendFileSync(join(project.dir, 'u5.c'), 'int u5_changed(void) { return 5; }\n');
  const c = await build(project.dir, cacheDir);
  checkProgram(project, 'changed run');
  f.first.push(a.ms);
  f.second.push(b.ms);
  f.changed.push(c.ms);
  f.jobsSecond.push(b.actions - b.cached);
  f.jobsChanged.push(c.actions - c.cached);
  console.error(
    `round ${run + 1}, ${withServers ? 'servers' : 'embedded'}: first ${a.ms.toFixed(0)} ms, second ${b.ms.toFixed(0)} ms (${b.actions - b.cached} ran)${cloneNote}, one unit changed ${c.ms.toFixed(0)} ms (${c.actions - c.cached} ran); load ${(loadavg()[0] ?? 0).toFixed(1)}`,
  );
}

/** `--big` actions `remote-true N` in one actionset. */
function trueRakefile(dir: string, n: number, ports: readonly number[]): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const lines = Array.from({ length: n }, (_, i) => `\tremote-true ${i}`).join('\n');
  writeFileSync(
    join(dir, 'Rakefile'),
    `PORT = ${ports[0]}\nHOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}\n\ntrues:\n${lines}\n`,
  );
}

/** The lookup's own cost per action (action-cache-lookup.ts, one pass over `n` entries). */
function lookupMs(n: number): number {
  const out = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      join(root, 'scripts/bench/action-cache-lookup.ts'),
      '--entries',
      String(n),
      '--runs',
      '1',
    ],
    { cwd: root, encoding: 'utf8' },
  );
  const m = /key \+ verified read ([\d.]+) ms per action/.exec(out.stdout);
  if (!m) throw new Error(`action-cache-lookup.ts said: ${out.stdout}${out.stderr}`);
  return Number(m[1]);
}

async function bigRow(run: number, scratch: string, servers: Servers): Promise<void> {
  const dir = join(scratch, 'big');
  const ports = servers.map((s) => s.port);
  trueRakefile(dir, BIG, ports);
  const report = join(scratch, 'report.json');
  const cache = ['--cache', '--cache-dir', join(scratch, 'big-cache')];
  const rake = join(root, 'bin/rake-ts.js');
  const uncached = await runRakeProgram(rake, dir, report);
  const first = await runRakeProgram(rake, dir, report, cache);
  await settled(() => ran(servers));
  const ranBefore = ran(servers);
  const hit = await runRakeProgram(rake, dir, report, cache);
  await settled(() => ran(servers));
  big.hitJobs.push(ran(servers) - ranBefore);
  big.uncachedS.push(uncached.seconds);
  big.uncachedRss.push(uncached.maxRss);
  big.firstS.push(first.seconds);
  big.firstRss.push(first.maxRss);
  big.hitS.push(hit.seconds);
  big.hitRss.push(hit.maxRss);
  big.lookupMs.push(lookupMs(BIG));
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  console.error(
    `round ${run + 1}, ${BIG} actions: uncached ${uncached.seconds.toFixed(1)} s ${mib(uncached.maxRss)} MiB, --cache first ${first.seconds.toFixed(1)} s ${mib(first.maxRss)} MiB, all hits ${hit.seconds.toFixed(2)} s ${mib(hit.maxRss)} MiB (${big.hitJobs.at(-1)} jobs ran); lookup ${big.lookupMs.at(-1)?.toFixed(3)} ms/action; load ${(loadavg()[0] ?? 0).toFixed(1)}`,
  );
}

for (let run = 0; run < RUNS; run++) {
  loads.push(loadavg()[0] ?? 0);
  for (const row of ['embedded', 'servers', 'big'] as const) {
    if (!ROWS.has(row)) continue;
    const scratch = mkdtempSync(join(tmpdir(), 'rake-bench-action-cache-'));
    let servers: Servers = [];
    try {
      if (row === 'embedded') await cRow(embeddedRow, run, scratch, []);
      else {
        servers = [await startServer(), await startServer()];
        if (row === 'servers') await cRow(serversRow, run, scratch, servers);
        else await bigRow(run, scratch, servers);
      }
    } finally {
      for (const s of servers) s.child.kill('SIGTERM');
      rmSync(scratch, { recursive: true, force: true });
    }
  }
}
loads.push(loadavg()[0] ?? 0);

const spread = (v: number[], scale = 1, digits = 2, unit = '') =>
  `${(median(v) * scale).toFixed(digits)}${unit} (${(Math.min(...v) * scale).toFixed(digits)}–${(Math.max(...v) * scale).toFixed(digits)})`;
const sec = (v: number[]) => spread(v, 1 / 1000, 2, ' s');
const pct = (v: number[]) => spread(v, 100, 1, ' %');
const ratios = (a: number[], b: number[]) => a.map((v, i) => v / (b[i] as number));
const met = (ok: boolean) => (ok ? 'met' : '**not met**');

console.log(`| work (issue 21's target) | figure: median (range), ${RUNS} rounds | target |`);
console.log('|---|---|---|');
for (const [name, f] of [
  ['embedded servers', embeddedRow],
  ['2 rakeserver processes', serversRow],
] as const) {
  if (f.first.length === 0) continue;
  const r = ratios(f.second, f.first);
  console.log(`| ${UNITS}-unit C project, ${name}: first run, empty cache | ${sec(f.first)} | |`);
  console.log(
    `| the same, second run with \`--cache\`, nothing changed (≤ 10 % of the first, 0 jobs) | ${sec(f.second)}: ${pct(r)} of the first; jobs run: ${f.jobsSecond.join(', ')} | ${met(median(r) <= 0.1 && f.jobsSecond.every((j) => j === 0))} |`,
  );
  console.log(
    `| the same, one unit's source changed (exactly 2 jobs) | ${sec(f.changed)}; jobs run: ${f.jobsChanged.join(', ')} | ${met(f.jobsChanged.every((j) => j === 2))} |`,
  );
  if (f.clone.length > 0) {
    console.log(
      `| the same, a second clone (empty local cache), same servers (0 compile jobs) | ${sec(f.clone)}: ${pct(ratios(f.clone, f.first))} of the first; jobs the servers ran: ${f.jobsClone.join(', ')}, of which compiles: ${f.compilesClone.join(', ')} | ${met(f.compilesClone.every((j) => j === 0))} |`,
    );
  }
  console.log(
    `| the same, outputs of the second run${f.clone.length > 0 ? ' and of the clone' : ''} (byte-identical, modes included) | ${f.identical ? 'byte-identical to the first run, modes included' : 'DIFFERENT from the first run'} | ${met(f.identical)} |`,
  );
}
if (big.hitS.length > 0) {
  const mib = (v: number[]) => spread(v, 1 / 2 ** 20, 1, ' MiB');
  const perAction = big.hitS.map((s) => (s * 1000) / BIG);
  console.log(
    `| ${BIG.toLocaleString('en')} \`remote-true N\` actions without \`--cache\` (today's figure, same round) | ${spread(big.uncachedS, 1, 1, ' s')}, peak RSS ${mib(big.uncachedRss)} | |`,
  );
  console.log(
    `| the same with \`--cache\`, empty cache (every result stored) | ${spread(big.firstS, 1, 1, ' s')}, peak RSS ${mib(big.firstRss)} | |`,
  );
  console.log(
    `| ${BIG.toLocaleString('en')} cached actions: client RSS under today's figure | all hits: peak RSS ${mib(big.hitRss)}; jobs the servers ran: ${big.hitJobs.join(', ')} | ${met(median(big.hitRss) < median(big.uncachedRss))} |`,
  );
  console.log(
    `| ${BIG.toLocaleString('en')} cached actions: lookup overhead ≤ 1 ms per action | key + verified read ${spread(big.lookupMs, 1, 3, ' ms')} per action; the whole all-hit run ${spread(big.hitS, 1, 2, ' s')}, ${spread(perAction, 1, 3, ' ms')} per action from spawn to exit | ${met(median(big.lookupMs) <= 1)} |`,
  );
}
console.log(
  `\nload average (1 min) at each round's start and at the end: ${loads.map((l) => l.toFixed(1)).join(', ')}`,
);
