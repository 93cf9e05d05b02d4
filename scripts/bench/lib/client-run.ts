/**
 * The client run in a child process of its own (so its start-up counts, and its resource
 * use is its own): the program as users start it (build.ts), or the CLI's `runRake` from a
 * compiled module tree (client-cpu.ts).
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
 * it exits 0. A preloaded module writes the process's resource use to `report` at exit.
 */
export function runRakeProgram(
  rake: string,
  dir: string,
  report: string,
  extra: readonly string[] = [],
): Promise<ClientRun> {
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
  return spawnMeasured(['--import', preload, rake, ...CLIENT_FLAGS, ...extra], dir, report);
}

/**
 * Runs `runRake` from the module tree tsc wrote into `dist` (no bundle: client-cpu.ts
 * compares source trees, some older than the bundle) in `dir` with the benchmarks' flags,
 * plus `extra` flags (e.g. `rakefile`, `jobs`); rejects unless it exits 0.
 */
export function runClientProcess(
  dist: string,
  dir: string,
  report: string,
  extra: Record<string, string | number> = {},
): Promise<ClientRun> {
  const args = {
    'dry-run': false,
    'connect-timeout': 2,
    'cost-timeout': 2,
    'job-timeout': 0,
    retries: 1,
    'fail-fast': false,
    embedded: false,
    fallback: false,
    verbose: 0,
    quiet: true,
    progress: 'never',
    ...extra,
  };
  const code = `
    const { runRake } = await import(${JSON.stringify(join(dist, 'src/cli/commands/run.js'))});
    const { writeFileSync } = await import('node:fs');
    const status = await runRake(${JSON.stringify(args)}, { stdout: process.stdout, stderr: process.stderr, cwd: ${JSON.stringify(dir)} });
    const u = process.resourceUsage();
    writeFileSync(${JSON.stringify(report)}, JSON.stringify({ maxRss: u.maxRSS * 1024, user: u.userCPUTime, system: u.systemCPUTime, switches: u.voluntaryContextSwitches }));
    process.exit(status);`;
  return spawnMeasured(['--input-type=module', '-e', code], dir, report);
}

/** Runs `node ...args` in `dir`; wall time from spawn to exit, the rest from `report`. */
function spawnMeasured(args: readonly string[], dir: string, report: string): Promise<ClientRun> {
  rmSync(report, { force: true });
  const t0 = performance.now();
  const child = spawn(process.execPath, [...args], {
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
