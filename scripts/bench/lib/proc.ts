/**
 * Processes the benchmarks start: the compiled rake-ts and rakeserver programs (as users run
 * them, no tsx), baselines such as `make`, and free ports. Every child is a separate process,
 * so what is measured includes its start-up, as a user's wall clock does.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
/** Scratch space of the suite (git-ignored `.bench/`). */
export const SCRATCH = join(ROOT, '.bench', 'suite');

/** Progress goes to stderr, one line at a time, with the seconds since the suite started. */
const t0 = performance.now();
export function progress(message: string): void {
  process.stderr.write(
    `[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${message}\n`,
  );
}

/** Where the compiled programs are: `bin/rake-ts.js` and `bin/rakeserver.js` under `dir`. */
export interface Programs {
  readonly dir: string;
  readonly rake: string;
  readonly rakeserver: string;
}

/**
 * Compiles src/ and grammar/ (tsconfig.build.json) into `<dir>/dist`, bundles the programs
 * there (scripts/bundle.mjs) and copies bin/ beside it, so `<dir>/bin/rake-ts.js` is the
 * program `npm run build` makes, without touching the tree's own dist/ (others may be using it).
 */
export function compilePrograms(dir = join(SCRATCH, 'build')): Programs {
  const dist = join(dir, 'dist');
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  const tsc = spawnSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', dist],
    { cwd: ROOT, encoding: 'utf8' },
  );
  // tsc emits even when a file elsewhere in a tree under work has a type error.
  for (const f of ['src/cli/main.js', 'src/cli/rakeserver.js']) {
    if (!existsSync(join(dist, f))) {
      throw new Error(`compiling failed, ${f} missing:\n${tsc.stdout}${tsc.stderr}`);
    }
  }
  // The one-file bundles bin/ loads, as `npm run build` makes them.
  const bundled = spawnSync(process.execPath, [join(ROOT, 'scripts/bundle.mjs'), dist], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (bundled.status !== 0) throw new Error(`bundling failed:\n${bundled.stdout}${bundled.stderr}`);
  // Every file of bin/: the two programs, the loader files rake-ts.js requires
  // (early-dial.js), and package.json, which makes them CommonJS (the package is ES modules).
  for (const b of readdirSync(join(ROOT, 'bin'))) {
    copyFileSync(join(ROOT, 'bin', b), join(dir, 'bin', b));
  }
  return {
    dir,
    rake: join(dir, 'bin', 'rake-ts.js'),
    rakeserver: join(dir, 'bin', 'rakeserver.js'),
  };
}

/**
 * What "before" means in the before/after figures: rake-ts as it was at `rev` (the end of
 * the first session, before the server's job path and the client's per-action work were
 * made cheaper), compiled whole from git. Earlier speed-ups (chevrotain's bundle, the
 * pipelined filestream) are in both.
 */
export const SPEEDUP_BASELINE = {
  rev: '6e497a1',
  parts: [
    'src',
    'grammar',
    'bin',
    'scripts/bundle.mjs',
    'tsconfig.json',
    'tsconfig.build.json',
    'package.json',
  ],
} as const;

/**
 * Compiles rake-ts as it was at {@link SPEEDUP_BASELINE}'s revision into `dir` (its
 * modules resolve from this tree's node_modules). Resolves why not when git cannot
 * produce the files or they do not compile.
 */
export function compileBaseline(
  dir = join(SCRATCH, 'baseline'),
  baseline: { rev: string; parts: readonly string[] } = SPEEDUP_BASELINE,
): Programs | { why: string } {
  const tree = join(dir, 'tree');
  rmSync(tree, { recursive: true, force: true });
  mkdirSync(tree, { recursive: true });
  const archive = spawnSync('git', ['archive', '--format=tar', baseline.rev, ...baseline.parts], {
    cwd: ROOT,
    encoding: 'buffer',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (archive.status !== 0) {
    return { why: `git archive ${baseline.rev} failed: ${archive.stderr.toString().trim()}` };
  }
  const untar = spawnSync('tar', ['-x', '-C', tree], { input: archive.stdout });
  if (untar.status !== 0) return { why: `tar failed: ${untar.stderr.toString().trim()}` };
  const dist = join(tree, 'dist');
  const tsc = spawnSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', dist],
    { cwd: tree, encoding: 'utf8' },
  );
  for (const f of ['src/cli/main.js', 'src/cli/rakeserver.js']) {
    if (!existsSync(join(dist, f)))
      return { why: `compiling the baseline failed:\n${tsc.stdout}${tsc.stderr}` };
  }
  // Its own bundles, made by its own bundle script, as its `npm run build` made them (with
  // this tree's node_modules).
  const bundler = join(tree, 'scripts', 'bundle.mjs');
  if (existsSync(bundler)) {
    symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'), 'dir');
    const bundled = spawnSync(process.execPath, [bundler, dist], { cwd: tree, encoding: 'utf8' });
    if (bundled.status !== 0) {
      return { why: `bundling the baseline failed:\n${bundled.stdout}${bundled.stderr}` };
    }
  }
  return {
    dir: tree,
    rake: join(tree, 'bin', 'rake-ts.js'),
    rakeserver: join(tree, 'bin', 'rakeserver.js'),
  };
}

/**
 * The programs of commit `rev`, compiled under `.bench/<name>` for a `--baseline REV` side
 * of a benchmark; throws, saying why, when that commit cannot be built.
 */
export function compileRev(name: string, rev: string): Programs {
  progress(`compiling rake-ts at ${rev}`);
  const base = compileBaseline(join(SCRATCH, name), { rev, parts: SPEEDUP_BASELINE.parts });
  if ('why' in base) throw new Error(`cannot build --baseline ${rev}: ${base.why}`);
  return base;
}

/** A port nothing listens on right now (the kernel's pick). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once `host:port` accepts a TCP connection; rejects after `timeoutMs`. */
export async function waitForListen(
  host: string,
  port: number,
  timeoutMs: number,
  alive: () => boolean = () => true,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`the process for ${host}:${port} exited before listening`);
    if (performance.now() > deadline) throw new Error(`nothing listens at ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A server child process and how to stop it. */
export interface Daemon {
  readonly child: ChildProcess;
  readonly host: string;
  readonly port: number;
  /** Its stdout and stderr go here. */
  readonly logFile: string;
  stop(): Promise<void>;
}

/** Starts `argv` with its output in `logFile`; resolves when `host:port` accepts connections. */
export async function startDaemon(
  argv: readonly string[],
  at: {
    host: string;
    port: number;
    logFile: string;
    env?: NodeJS.ProcessEnv;
    /** In a session of its own (setsid), as a unit of CPU share of its own under autogroup. */
    session?: boolean;
  },
): Promise<Daemon> {
  const fd = openSync(at.logFile, 'w');
  const child = spawn(argv[0] as string, argv.slice(1), {
    stdio: ['ignore', fd, fd],
    env: at.env ?? process.env,
    detached: at.session === true,
  });
  closeSync(fd);
  let exited = false;
  const gone = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  };
  try {
    await waitForListen(at.host, at.port, 20_000, () => !exited);
  } catch (err) {
    await stop();
    throw err;
  }
  return { child, host: at.host, port: at.port, logFile: at.logFile, stop };
}

/**
 * Starts `count` rakeservers on loopback with `extra` flags (and `nodeFlags` for node itself,
 * before the program), their logs in `dir`. Each works where a server does by default (a
 * fresh directory of its own, in /dev/shm when that is a roomy tmpfs: docs/server.md,
 * "Where jobs run"), as a user's would, and removes it when stopped.
 */
export async function startRakeservers(
  programs: Programs,
  count: number,
  extra: readonly string[],
  dir: string,
  nodeFlags: readonly string[] = [],
): Promise<Daemon[]> {
  mkdirSync(dir, { recursive: true });
  const servers: Daemon[] = [];
  for (let i = 0; i < count; i++) {
    const port = await freePort();
    servers.push(
      await startDaemon(
        [
          process.execPath,
          ...nodeFlags,
          programs.rakeserver,
          '--host',
          '127.0.0.1',
          '--port',
          String(port),
          ...extra,
        ],
        { host: '127.0.0.1', port, logFile: join(dir, `server${i + 1}.log`) },
      ),
    );
  }
  return servers;
}

/** What a finished command did, timed from spawn to exit. */
export interface Finished {
  readonly seconds: number;
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end without blocking the event loop; never rejects. */
export function runTimed(
  argv: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; input?: string },
): Promise<Finished> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(argv[0] as string, argv.slice(1), {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    if (options.input !== undefined) child.stdin?.end(options.input);
    const done = (status: number | null, extra = '') =>
      resolve({
        seconds: (performance.now() - started) / 1000,
        status,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + extra,
      });
    child.once('error', (e) => done(null, e.message));
    child.once('close', (code) => done(code));
  });
}

/** `runTimed`, failing with the command's stderr when it exits non-zero. */
export async function runChecked(
  argv: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; input?: string },
): Promise<Finished> {
  const r = await runTimed(argv, options);
  if (r.status !== 0) {
    throw new Error(`${argv.join(' ')} exited ${r.status}:\n${r.stderr.slice(-4000)}`);
  }
  return r;
}

/** Whether `cmd` is on the PATH. */
export function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** CPU seconds of a live process (`self`) and of the children it has waited for. */
export function processCpu(pid: number): { self: number; children: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at "state".
    const f = stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    const tick = 100; // USER_HZ on Linux
    const at = (i: number) => (f[i - 3] ?? 0) / tick; // i = the field's number in proc(5)
    return { self: at(14) + at(15), children: at(16) + at(17) };
  } catch {
    return undefined;
  }
}

/**
 * {@link processCpu} of a server with its live children counted in: the spawn helper a
 * rakeserver keeps (its jobs are the helper's children, so their CPU is the helper's
 * `children`, and the helper is only reaped when the server exits).
 */
export function serverCpu(pid: number): { self: number; children: number } | undefined {
  const own = processCpu(pid);
  if (own === undefined) return undefined;
  let kids: number[] = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    // No children file (CONFIG_PROC_CHILDREN off): the server's own figures only.
  }
  return kids.reduce((sum, kid) => {
    const c = processCpu(kid);
    return c === undefined ? sum : { self: sum.self + c.self, children: sum.children + c.children };
  }, own);
}

const TIME = '/usr/bin/time';

/**
 * Runs `argv` under GNU time, so its CPU seconds (its own and its waited-for children's)
 * are known too; `cpuSeconds` is NaN when /usr/bin/time is missing.
 */
let cpuFiles = 0;

export async function runWithCpu(
  argv: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<Finished & { cpuSeconds: number }> {
  if (!existsSync(TIME)) return { ...(await runChecked(argv, options)), cpuSeconds: Number.NaN };
  // A file per run: two runs may be under way at once (scale.ts's two clients).
  const out = join(SCRATCH, `time-${process.pid}-${++cpuFiles}.txt`);
  try {
    const r = await runChecked([TIME, '-f', '%U %S', '-o', out, ...argv], options);
    const [user = Number.NaN, sys = Number.NaN] = readFileSync(out, 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    return { ...r, cpuSeconds: user + sys };
  } finally {
    rmSync(out, { force: true });
  }
}

/** lib/cpu-usage.cjs: preloaded by {@link runNodeWithCpu}. */
export const CPU_PRELOAD = join(ROOT, 'scripts/bench/lib/cpu-usage.cjs');

/**
 * Runs `argv`, a Node program (`node script ...`, or a program that starts node, such as
 * bin/rake-ts.js through its `#!` line), checked, with lib/cpu-usage.cjs preloaded (by
 * `--require` in NODE_OPTIONS, which Node reads however it is started): `cpuSeconds` is the CPU
 * that process used, user + system, to the microsecond (`process.cpuUsage()` as it exits,
 * which counts what a shell used before it `exec`ed node), where {@link runWithCpu}'s GNU time
 * counts 10 ms ticks (plus its waited-for children: a client on remote hosts has none).
 * `gnuCpuSeconds` is GNU time's figure for the same run (NaN without /usr/bin/time), to
 * check the preload against.
 */
export async function runWithPreciseCpu(
  argv: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<Finished & { cpuSeconds: number; gnuCpuSeconds: number }> {
  mkdirSync(SCRATCH, { recursive: true });
  const file = join(SCRATCH, `cpu-${process.pid}-${++cpuFiles}.txt`);
  rmSync(file, { force: true });
  const env = options.env ?? process.env;
  try {
    const r = await runWithCpu(argv, {
      cwd: options.cwd,
      env: {
        ...env,
        NODE_OPTIONS: `${env.NODE_OPTIONS ?? ''} --require ${JSON.stringify(CPU_PRELOAD)}`.trim(),
        RAKE_BENCH_CPU_FILE: file,
      },
    });
    const [user, system] = readFileSync(file, 'utf8').trim().split(/\s+/).map(Number);
    if (!(Number.isFinite(user) && Number.isFinite(system))) {
      throw new Error(`${file}: no CPU figures from ${argv.join(' ')} (lib/cpu-usage.cjs)`);
    }
    return { ...r, cpuSeconds: ((user ?? 0) + (system ?? 0)) / 1e6, gnuCpuSeconds: r.cpuSeconds };
  } finally {
    rmSync(file, { force: true });
  }
}

/** {@link runWithPreciseCpu} of `node <script> ...args` (this Node). */
export function runNodeWithCpu(
  script: string,
  args: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<Finished & { cpuSeconds: number; gnuCpuSeconds: number }> {
  return runWithPreciseCpu([process.execPath, script, ...args], options);
}
