/**
 * The client CLI's `runRake`, compiled into `dist`, run in a child process of its own (so
 * its start-up counts, and its resource use is its own). Shared by build.ts and
 * client-cpu.ts.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
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

/**
 * Runs `runRake` in `dir` with the benchmarks' flags (quiet, no progress, no embedded server,
 * no fallback), plus `extra` flags (e.g. `rakefile`, `jobs`); rejects unless it exits 0.
 */
export function runClientProcess(
  dist: string,
  dir: string,
  report: string,
  extra: Record<string, string | number> = {},
): Promise<ClientRun> {
  rmSync(report, { force: true });
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
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
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
