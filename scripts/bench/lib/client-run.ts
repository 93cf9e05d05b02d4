/**
 * The client run in a child process of its own (so its start-up counts, and its resource
 * use is its own): the program as users start it (build.ts), or the CLI's `main` from a
 * compiled module tree (client-cpu.ts), both with the same flags.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What a client run reported about itself at exit, and its wall time from spawn to exit. */
export interface ClientRun {
  readonly seconds: number;
  /** Peak RSS (VmHWM), bytes. */
  readonly maxRss: number;
  /** CPU seconds, user and system. */
  readonly user: number;
  readonly system: number;
  /** Voluntary context switches: the process waited (for the thread pool, the network). */
  readonly switches: number;
}

/** The benchmarks' client flags: quiet, no progress, no embedded server, no fallback. */
export const CLIENT_FLAGS = [
  '--connect-timeout=2',
  '--cost-timeout=2',
  '--job-timeout=0',
  '--retries=1',
  '--no-fail-fast',
  '--no-embedded',
  '--no-fallback',
  '--quiet',
  '--progress=never',
] as const;

/**
 * Runs the program `rake` (a `bin/rake-ts.js`, as users start it: the bundle, see
 * scripts/bundle.mjs) in `dir` with {@link CLIENT_FLAGS} and `extra` flags; rejects unless
 * it exits 0.
 */
export function runRakeProgram(
  rake: string,
  dir: string,
  report: string,
  extra: readonly string[] = [],
): Promise<ClientRun> {
  return spawnMeasured([rake, ...CLIENT_FLAGS, ...extra], dir, report);
}

/**
 * Runs the CLI's `main` from the module tree tsc wrote into `dist` (no bundle: client-cpu.ts
 * compares source trees, some older than the bundle) in `dir` with {@link CLIENT_FLAGS} and
 * `extra` flags (e.g. `-f Rakefile.one`, `-j 8`); rejects unless it exits 0.
 */
export function runClientProcess(
  dist: string,
  dir: string,
  report: string,
  extra: readonly string[] = [],
): Promise<ClientRun> {
  const main = JSON.stringify(join(dist, 'src/cli/main.js'));
  const argv = JSON.stringify([...CLIENT_FLAGS, ...extra]);
  const code = `const { main } = await import(${main}); process.exitCode = await main(${argv});`;
  return spawnMeasured(['--input-type=module', '-e', code], dir, report);
}

/**
 * Runs `node ...args` in `dir`, with a preloaded module that writes the process's resource
 * use to `report` at exit; wall time from spawn to exit.
 */
function spawnMeasured(args: readonly string[], dir: string, report: string): Promise<ClientRun> {
  rmSync(report, { force: true });
  const preload = `${report}.preload.mjs`;
  writeFileSync(
    preload,
    `import { writeFileSync } from 'node:fs';
process.on('exit', () => {
  const u = process.resourceUsage();
  writeFileSync(${JSON.stringify(report)}, JSON.stringify({ maxRss: u.maxRSS * 1024, user: u.userCPUTime, system: u.systemCPUTime, switches: u.voluntaryContextSwitches }));
});
`,
  );
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', preload, ...args], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (status) => {
      const seconds = (performance.now() - t0) / 1000;
      if (status !== 0) return reject(new Error(`rake-ts in ${dir} exited ${status}`));
      const r = JSON.parse(readFileSync(report, 'utf8')) as {
        maxRss: number;
        user: number;
        system: number;
        switches: number;
      };
      resolve({
        seconds,
        maxRss: r.maxRss,
        user: r.user / 1e6,
        system: r.system / 1e6,
        switches: r.switches,
      });
    });
  });
}
