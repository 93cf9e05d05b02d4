/**
 * Benchmark: the local action cache (issue 21, `--cache`).
 *
 *   node --import tsx scripts/bench/action-cache.ts [--units 100] [--runs 3]
 *
 * The generated C project of scripts/bench/lib/project.ts (`--units` compiles + a link),
 * built by `bin/rake-ts.js --cache` (run `npm run build` first) with a fresh cache directory:
 * the first run (empty cache), the second with nothing changed, and a third after one unit's
 * source changed. The hosts are 2 loopback endpoints where nothing listens, so the client
 * serves them with embedded servers: today the only hosts whose platform it knows (see
 * docs/client.md, "The action cache"). Each figure is a median over `--runs` fresh projects,
 * with the range; the load average is printed beside them. `--servers`: 2 `bin/rakeserver.js`
 * processes instead, which say their platform when the client asks, and keep the results of
 * the jobs they ran (extension `results`): after the first run, a second clone of the same
 * project (another directory, an empty local cache) is built on them, and the jobs the servers
 * ran for it are counted from their logs (`job start` lines). The second run's outputs (and the
 * clone's) are compared byte for byte, modes included, with the first's.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { median } from './lib/stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({
  options: {
    units: { type: 'string', default: '100' },
    runs: { type: 'string', default: '3' },
    servers: { type: 'boolean', default: false },
  },
});
const UNITS = Number(opts.units);
const RUNS = Number(opts.runs);

/** `bin/rakeserver.js --port 0` (a separate process); resolves with its port once it listens. */
function startServer(): Promise<{
  child: ChildProcess;
  port: number;
  jobs: () => number;
  compiles: () => number;
}> {
  const child = spawn(process.execPath, [join(root, 'bin/rakeserver.js'), '--port', '0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    let jobs = 0;
    let compiles = 0;
    let rest = '';
    // Every later line is read for `job start` (a job the server really ran).
    const count = (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.includes('"msg":"job start"')) continue;
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
  const child = spawn(
    process.execPath,
    [join(root, 'bin/rake-ts.js'), '--cache', '--cache-dir', cacheDir, '--progress', 'never'],
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

const first: number[] = [];
const second: number[] = [];
const changed: number[] = [];
const jobsSecond: number[] = [];
const jobsChanged: number[] = [];
let identical = true;
const loadBefore = loadavg()[0] ?? 0;
const clone: number[] = [];
const jobsClone: number[] = [];
const compilesClone: number[] = [];
let servers: Awaited<ReturnType<typeof startServer>>[] = [];
for (let run = 0; run < RUNS; run++) {
  const scratch = mkdtempSync(join(tmpdir(), 'rake-bench-action-cache-'));
  try {
    servers = opts.servers ? [await startServer(), await startServer()] : [];
    const hosts = opts.servers
      ? servers.map((s) => `127.0.0.1:${s.port}`)
      : [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
    const salt = `run ${run} ${Date.now()}`;
    const rakePort = await freePort();
    const project = writeCProject(join(scratch, 'p'), UNITS, { hosts, port: rakePort }, salt);
    const cacheDir = join(scratch, 'cache');
    const a = await build(project.dir, cacheDir);
    const before = outputs(project.dir);
    checkProgram(project, 'first run');
    if (opts.servers) {
      // A teammate's fresh clone: the same sources elsewhere, an empty local cache.
      const other = writeCProject(join(scratch, 'q'), UNITS, { hosts, port: rakePort }, salt);
      const ran = () => servers.reduce((n, x) => n + x.jobs(), 0);
      await settled(ran); // the first run's last lines, read before the clone starts
      const ranBefore = ran();
      const compiledBefore = servers.reduce((n, x) => n + x.compiles(), 0);
      const q = await build(other.dir, join(scratch, 'cache-q'));
      // A job's `job start` line is written before its reply, but may be read after the
      // build ends: count once the figure holds for 3 polls (at most 2 s).
      await settled(ran);
      jobsClone.push(ran() - ranBefore);
      compilesClone.push(servers.reduce((n, x) => n + x.compiles(), 0) - compiledBefore);
      clone.push(q.ms);
      if (JSON.stringify([...before]) !== JSON.stringify([...outputs(other.dir)]))
        identical = false;
      checkProgram(other, 'second clone');
    }
    // checkProgram sets prog's mode to 0755: take the outputs as the build left them.
    cleanBuild(project);
    const b = await build(project.dir, cacheDir);
    const after = outputs(project.dir);
    if (JSON.stringify([...before]) !== JSON.stringify([...after])) identical = false;
    checkProgram(project, 'second run');
    // A change that changes the object (a comment would not: the link would then hit too).
    appendFileSync(join(project.dir, 'u5.c'), 'int u5_changed(void) { return 5; }\n');
    const c = await build(project.dir, cacheDir);
    checkProgram(project, 'changed run');
    first.push(a.ms);
    second.push(b.ms);
    changed.push(c.ms);
    jobsSecond.push(b.actions - b.cached);
    jobsChanged.push(c.actions - c.cached);
    console.error(
      `run ${run + 1}: first ${a.ms.toFixed(0)} ms (${a.cached} cached), second ${b.ms.toFixed(0)} ms (${b.actions - b.cached} ran), one unit changed ${c.ms.toFixed(0)} ms (${c.actions - c.cached} ran)`,
    );
  } finally {
    for (const s of servers) s.child.kill('SIGTERM');
    rmSync(scratch, { recursive: true, force: true });
  }
}
const loadAfter = loadavg()[0] ?? 0;
const s = (v: number[]) =>
  `${(median(v) / 1000).toFixed(2)} s (${(Math.min(...v) / 1000).toFixed(2)}–${(Math.max(...v) / 1000).toFixed(2)})`;
const ratio = second.map((v, i) => v / (first[i] as number));
console.log(
  `| ${UNITS}-unit C project, --cache, ${opts.servers ? '2 rakeserver processes' : 'embedded servers'} | median (range), ${RUNS} runs |`,
);
console.log('|---|---|');
console.log(`| first run (empty cache) | ${s(first)} |`);
console.log(
  `| second run, nothing changed | ${s(second)}; ${(median(ratio) * 100).toFixed(1)} % of the first (${(Math.min(...ratio) * 100).toFixed(1)}–${(Math.max(...ratio) * 100).toFixed(1)} %); jobs run: ${jobsSecond.join(', ')} |`,
);
console.log(`| one unit's source changed | ${s(changed)}; jobs run: ${jobsChanged.join(', ')} |`);
if (opts.servers) {
  const cloneRatio = clone.map((v, i) => v / (first[i] as number));
  console.log(
    `| a second clone, empty local cache, same servers | ${s(clone)}; ${(median(cloneRatio) * 100).toFixed(1)} % of the first; jobs the servers ran: ${jobsClone.join(', ')}, of which compiles: ${compilesClone.join(', ')} |`,
  );
}
console.log(
  `| outputs of the second run${opts.servers ? ' and of the clone' : ''} | ${identical ? 'byte-identical to the first, modes included' : 'DIFFERENT from the first'} |`,
);
console.log(`\nload average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after`);
