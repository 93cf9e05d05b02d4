/**
 * Helpers for the network suites (faults, load): the client as a child process or as
 * `run()`, local builds to compare with, and the leak checks (job directories, job
 * processes, server memory) every suite ends with.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { firstValueFrom, type Observable, tap, timeout, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import type { RakeEvent } from '../../src/client/events.js';
import { type RunOptions, run } from '../../src/client/run.js';
import { pollUntil } from '../helpers/wait.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RAKE_CLI = fileURLToPath(new URL('./rake-cli.ts', import.meta.url));

/** SHA-256 of a file, hex. */
export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** A loopback port nothing listens on (for a Rakefile's PORT, the local server). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Runs the commands with one `/bin/sh -e` in `dir`, in order, stopping at the first
 * failure: the local build to compare with.
 */
export function localBuild(dir: string, commands: readonly string[]): void {
  execFileSync('/bin/sh', ['-ec', commands.join('\n')], { cwd: dir });
}

/**
 * Runs a Rakefile in this process with `run()` and collects its events, calling `onEvent`
 * for each as it comes (to inject a fault at the right moment). Bounded by `boundMs`.
 */
export async function runRakefile(
  dir: string,
  text: string,
  options: RunOptions,
  onEvent: (e: RakeEvent) => void = () => {},
  boundMs = 120_000,
): Promise<RakeEvent[]> {
  const parsed = parseRakefile(text, { file: join(dir, 'Rakefile') });
  if (!parsed.ok) throw new Error(parsed.diagnostics.map((d) => d.message).join('\n'));
  const events$: Observable<RakeEvent> = run(parsed.rakefile, { directory: dir, ...options });
  return firstValueFrom(events$.pipe(tap(onEvent), toArray(), timeout(boundMs)));
}

/** The events of one type. */
export function only<T extends RakeEvent['type']>(
  events: readonly RakeEvent[],
  type: T,
): Array<Extract<RakeEvent, { type: T }>> {
  return events.filter((e): e is Extract<RakeEvent, { type: T }> => e.type === type);
}

/** One line per failure, for assertion messages. */
export function failures(events: readonly RakeEvent[]): string {
  return only(events, 'action-failed')
    .map(
      (e) =>
        `${e.action.command}: ${e.reason} on ${e.host ?? '-'}: ${e.message}${e.stderr ? `\n  stderr: ${e.stderr.trim()}` : ''}`,
    )
    .join('\n');
}

/** `rake-ts` from source as a child process, in `cwd`; its output is kept. */
export interface RakeChild {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or the signal name) once it has exited. */
  readonly exited: Promise<number | string>;
}

/**
 * Compiles src/ and grammar/ (tsconfig.build.json) into spec-output/net-build and returns
 * the compiled CLI module: twenty clients starting through tsx at once spend most of a
 * minute compiling on a 2-core machine; compiled, they start in seconds.
 */
export function buildClient(): string {
  const outDir = join(REPO_ROOT, 'spec-output', 'net-build');
  try {
    execFileSync(
      process.execPath,
      [
        join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        'tsconfig.build.json',
        '--outDir',
        outDir,
      ],
      { cwd: REPO_ROOT, stdio: 'ignore' },
    );
  } catch {
    // Type errors elsewhere still emit JavaScript; a missing entry point is caught below.
  }
  const main = join(outDir, 'src', 'cli', 'main.js');
  if (!existsSync(main)) throw new Error(`tsc did not produce ${main}`);
  return main;
}

/**
 * `rake-ts` as a child process working in `cwd`, from source through tsx, or from the
 * compiled module `built` (see {@link buildClient}). Its output is kept.
 */
export function spawnRake(cwd: string, args: readonly string[], built?: string): RakeChild {
  // Started in the repository (where `--import tsx` resolves), working in `cwd` via -C.
  const entry =
    built === undefined
      ? ['--import', 'tsx', RAKE_CLI]
      : [
          '--input-type=module',
          '-e',
          `import { main } from ${JSON.stringify(built)}; main(process.argv.slice(1)).then((c) => { process.exitCode = c; });`,
          '--',
        ];
  const child = spawn(process.execPath, [...entry, '-C', cwd, ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-64 * 1024);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  return { child, output: () => output, exited };
}

/** Job directories a server holds in its workdir. */
export function jobDirs(workdir: string): string[] {
  if (!existsSync(workdir)) return [];
  return readdirSync(workdir).filter((n) => n.startsWith('job-'));
}

/**
 * Processes running inside any of `dirs` (their cwd is there): a server's jobs run in their
 * job directory, so whatever is left there after the clients are gone is a leak.
 */
export function processesIn(dirs: readonly string[]): Array<{ pid: number; cmd: string }> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${name}/cwd`);
    } catch {
      continue;
    }
    if (!dirs.some((d) => cwd === d || cwd.startsWith(`${d}/`))) continue;
    let cmd = '?';
    try {
      cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {}
    found.push({ pid: Number(name), cmd });
  }
  return found;
}

/**
 * Processes whose command line contains `marker` (a unique argument such as `sleep 37.421`),
 * or with `exact`, is exactly it (not the `sh -c "sleep 37.421 && ..."` around it).
 */
export function processesWith(marker: string, exact = false): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      const state = readFileSync(`/proc/${name}/stat`, 'utf8').replace(/^.*\) /, '')[0];
      if ((exact ? cmd === marker : cmd.includes(marker)) && state !== 'Z')
        found.push(Number(name));
    } catch {}
  }
  return found;
}

/** A process's peak resident set size (VmHWM), in KiB, or undefined once it is gone. */
export function peakRssKiB(pid: number): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Polls `check` every 50 ms for up to `ms`; resolves how long it took, or undefined. */
export function waitUntil(
  check: () => boolean | Promise<boolean>,
  ms: number,
): Promise<number | undefined> {
  return pollUntil(check, { ms, every: 50 });
}
