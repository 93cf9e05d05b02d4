/**
 * What job containment (src/server/containment.ts) costs, and what it does with a job that
 * leaves a `setsid` process behind: for each spawner × containment, `--jobs` jobs of `true`
 * one at a time through the launcher (wall time and server CPU per job), then `--escapes`
 * jobs that start `setsid sleep 300 &` and exit, each timed from launch to `exited` (by then
 * the escapee must be gone; the script checks it and counts survivors).
 *
 *   node --import tsx scripts/bench/containment.ts [--jobs 300] [--escapes 20] [--runs 3]
 *
 * Prints a Markdown table; quote it with the load average it prints.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import type { ContainmentChoice } from '../../src/server/containment.js';
import { createLauncher, type Launcher } from '../../src/server/launcher.js';
import { markdownTable } from './lib/markdown.js';
import { formatSpread, spread } from './lib/stats.js';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '300' },
    escapes: { type: 'string', default: '20' },
    runs: { type: 'string', default: '3' },
  },
});
const JOBS = Number(values.jobs);
const ESCAPES = Number(values.escapes);
const RUNS = Number(values.runs);

async function drain(launcher: Launcher, command: string, dir: string): Promise<number> {
  const job = await launcher.launch(command, dir);
  job.stdout.resume();
  job.stderr.resume();
  const status = await job.exited;
  if (status !== 0) throw new Error(`${command}: status ${status}`);
  return 0;
}

const dir = mkdtempSync(join(tmpdir(), 'rake-bench-containment-'));
const rows: string[][] = [];
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
console.error(`load average before: ${load()}`);
try {
  for (const spawner of ['python3', 'node'] as const) {
    for (const containment of ['cgroup', 'tag'] as ContainmentChoice[]) {
      const perJob: number[] = [];
      const cpuPerJob: number[] = [];
      const escapeMs: number[] = [];
      let survivors = 0;
      for (let run = 0; run < RUNS; run++) {
        const launcher = await createLauncher(
          spawner,
          pino({ level: 'silent' }),
          undefined,
          containment,
        );
        try {
          const cpu = process.cpuUsage();
          const started = performance.now();
          for (let i = 0; i < JOBS; i++) await drain(launcher, 'true', dir);
          perJob.push((performance.now() - started) / JOBS);
          const used = process.cpuUsage(cpu);
          cpuPerJob.push((used.user + used.system) / 1000 / JOBS);
          for (let i = 0; i < ESCAPES; i++) {
            const pidFile = join(dir, `escapee-${i}.pid`);
            const t0 = performance.now();
            await drain(launcher, `setsid sleep 300 & echo $! > ${pidFile}`, dir);
            escapeMs.push(performance.now() - t0);
            const pid = Number(readFileSync(pidFile, 'utf8'));
            const stat = `/proc/${pid}/stat`;
            if (existsSync(stat) && !/\) Z /.test(readFileSync(stat, 'utf8'))) {
              survivors++;
              process.kill(pid, 'SIGKILL');
            }
          }
        } finally {
          await launcher.close();
        }
      }
      rows.push([
        spawner,
        containment,
        formatSpread(spread(perJob), 2, ' ms'),
        formatSpread(spread(cpuPerJob), 2, ' ms'),
        formatSpread(spread(escapeMs), 1, ' ms'),
        `${survivors} / ${ESCAPES * RUNS}`,
      ]);
      console.error(`${spawner} ${containment} done (load ${load()})`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(
  markdownTable([
    [
      'spawner',
      'containment',
      'per `true` job (wall)',
      'server CPU per job',
      'job with a `setsid` escapee, launch → exited',
      'escapees alive after',
    ],
    ...rows,
  ]),
);
console.log(
  `\n${JOBS} jobs × ${RUNS} runs, ${ESCAPES} escapes × ${RUNS}; load average after: ${load()}`,
);
