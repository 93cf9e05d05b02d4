/**
 * How a job's output reaches the server, and what it costs: rake-ts of this tree against
 * rake-ts at `--baseline REV`, each with 2 one-slot rakeservers of its own, rounds
 * alternating which goes first. Per round and side:
 *
 * - `--trues` (500) `remote-true` actions in one actionset (the rake-ts client of that side);
 * - `--big` (3) jobs that write 10 MiB of stdout (`head -c 10485760 /dev/zero`), one at a
 *   time through a minimal base-protocol client (`!C`, read the `!SS` reply to its last byte,
 *   `!D0`), so the figure is the server's and its helper's, not a client's.
 *
 * CPU comes from /proc (utime + stime): the rakeserver node processes' own, their python3
 * spawn helpers' own, and the jobs' (the helpers' reaped children), each divided by the
 * jobs run. The 1-minute load average is read before every round. A first round (both
 * workloads, every side) is not counted: the servers' first jobs compile their code.
 *
 *   node --import tsx scripts/bench/helper-output.ts [--rounds 5] [--trues 500] [--big 3]
 *     [--baseline REV|none]
 */
import { readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
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
  processCpu,
  progress,
  runChecked,
  SCRATCH,
  startRakeservers,
} from './lib/proc.js';
import { truesRakefile } from './lib/project.js';
import { formatSpread, spread } from './lib/stats.js';

/** main before the helper forwarded job output over its stdout (two sockets per job). */
export const HELPER_OUTPUT_BASELINE = '614441b';

const BIG_BYTES = 10 * 1024 * 1024;

interface Side {
  readonly label: string;
  readonly programs: Programs;
  servers: Daemon[];
  /** Per round: ms of CPU per `true` job: servers, helpers, jobs; and the wall seconds. */
  readonly trues: { server: number; helper: number; jobs: number; wall: number }[];
  /** Per 10 MiB job: ms of CPU of servers and helpers, and MiB/s. */
  readonly big: { server: number; helper: number; rate: number }[];
}

/** The python3 spawn helper among a server's children (none with `--spawner node`). */
function helperOf(server: number): number | undefined {
  try {
    const kids = readFileSync(`/proc/${server}/task/${server}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    return kids.find((k) => {
      try {
        return readFileSync(`/proc/${k}/comm`, 'utf8').trim().startsWith('python');
      } catch {
        return false;
      }
    });
  } catch {
    return undefined;
  }
}

/** CPU seconds so far of a side's servers, their helpers, and the jobs the helpers reaped. */
function cpuOf(side: Side): { server: number; helper: number; jobs: number } {
  const sum = { server: 0, helper: 0, jobs: 0 };
  for (const d of side.servers) {
    const pid = d.child.pid ?? 0;
    sum.server += processCpu(pid)?.self ?? Number.NaN;
    const helper = helperOf(pid);
    if (helper === undefined) throw new Error(`server ${pid} has no spawn helper`);
    const h = processCpu(helper);
    sum.helper += h?.self ?? Number.NaN;
    sum.jobs += h?.children ?? Number.NaN;
  }
  return sum;
}

/** One job through a base-protocol client; resolves the stdout bytes received. */
function rawJob(port: number, command: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const header = (t: string) => Buffer.from(t.padEnd(64, ' '), 'latin1');
    const s = connect({ port, host: '127.0.0.1' });
    const cmd = Buffer.from(command);
    let head: Buffer = Buffer.alloc(0);
    let want = -1;
    let got = 0;
    s.on('connect', () => s.write(Buffer.concat([header(`!C${cmd.length}`), cmd])));
    s.on('data', (b: Buffer) => {
      if (want < 0) {
        head = Buffer.concat([head, b]);
        if (head.length < 64) return;
        const text = head.subarray(0, 64).toString('latin1');
        const m = /^!SS {2}(\d+)/.exec(text);
        if (!m) return reject(new Error(`unexpected reply: ${text.trim()}`));
        want = Number(m[1]);
        got = head.length - 64;
      } else {
        got += b.length;
      }
      if (got >= want) s.end(header('!D0'));
    });
    s.on('close', () => (got >= want && want >= 0 ? resolve(want) : reject(new Error('short'))));
    s.on('error', reject);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5' },
      trues: { type: 'string', default: '500' },
      big: { type: 'string', default: '3' },
      baseline: { type: 'string', default: HELPER_OUTPUT_BASELINE },
    },
  });
  const rounds = Number(values.rounds);
  const trues = Number(values.trues);
  const bigs = Number(values.big);
  const dir = join(SCRATCH, 'helper-output');
  rmSync(dir, { recursive: true, force: true });
  progress('compiling rake-ts');
  const sides: Side[] = [
    {
      label: 'now',
      programs: compilePrograms(join(SCRATCH, 'helper-output-build')),
      servers: [],
      trues: [],
      big: [],
    },
  ];
  const rev = values.baseline === 'none' ? undefined : values.baseline;
  if (rev !== undefined) {
    sides.push({
      label: `before (${rev})`,
      programs: compileRev('helper-output-baseline', rev),
      servers: [],
      trues: [],
      big: [],
    });
  }
  const loads: number[] = [];
  for (const [i, s] of sides.entries()) {
    s.servers = await startRakeservers(s.programs, 2, SERVER_FLAGS, join(dir, `logs-${i}`));
    truesRakefile(
      join(dir, `trues-${i}`),
      trues,
      s.servers.map((d) => d.port),
    );
  }
  try {
    // A round nobody counts: each server's first jobs (V8 compiling its per-job code).
    for (const [i, s] of sides.entries()) {
      await runChecked([process.execPath, s.programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS], {
        cwd: join(dir, `trues-${i}`),
      });
      await rawJob(s.servers[0]?.port ?? 0, `head -c ${BIG_BYTES} /dev/zero`);
    }
    for (let r = 0; r < rounds; r++) {
      loads.push(loadavg()[0] ?? Number.NaN);
      const order = r % 2 === 0 ? sides : [...sides].reverse();
      for (const s of order) {
        const i = sides.indexOf(s);
        const c0 = cpuOf(s);
        const run = await runChecked(
          [process.execPath, s.programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS],
          { cwd: join(dir, `trues-${i}`) },
        );
        const c1 = cpuOf(s);
        const per = (k: 'server' | 'helper' | 'jobs') => (1000 * (c1[k] - c0[k])) / trues;
        s.trues.push({
          server: per('server'),
          helper: per('helper'),
          jobs: per('jobs'),
          wall: run.seconds,
        });
      }
      for (const s of order) {
        for (let b = 0; b < bigs; b++) {
          const c0 = cpuOf(s);
          const t0 = performance.now();
          const got = await rawJob(s.servers[b % 2]?.port ?? 0, `head -c ${BIG_BYTES} /dev/zero`);
          const seconds = (performance.now() - t0) / 1000;
          const c1 = cpuOf(s);
          if (got !== BIG_BYTES) throw new Error(`${s.label}: ${got} bytes of stdout`);
          s.big.push({
            server: 1000 * (c1.server - c0.server),
            helper: 1000 * (c1.helper - c0.helper),
            rate: BIG_BYTES / 2 ** 20 / seconds,
          });
        }
      }
      progress(`helper-output: round ${r + 1}/${rounds}, load ${loads.at(-1)?.toFixed(2)}`);
    }
  } finally {
    await Promise.all(sides.flatMap((s) => s.servers.map((d) => d.stop())));
  }
  const f = (v: number[], digits = 2) => formatSpread(spread(v), digits);
  const rows = [['per job', ...sides.map((s) => s.label)]];
  rows.push([
    '`true`: servers (node) CPU, ms',
    ...sides.map((s) => f(s.trues.map((t) => t.server))),
  ]);
  rows.push([
    '`true`: helpers (python3) CPU, ms',
    ...sides.map((s) => f(s.trues.map((t) => t.helper))),
  ]);
  rows.push([
    '`true`: servers + helpers, ms',
    ...sides.map((s) => f(s.trues.map((t) => t.server + t.helper))),
  ]);
  rows.push([
    '`true`: the jobs themselves, ms',
    ...sides.map((s) => f(s.trues.map((t) => t.jobs))),
  ]);
  rows.push([
    `${trues} \`remote-true\` wall, s`,
    ...sides.map((s) => f(s.trues.map((t) => t.wall))),
  ]);
  rows.push([
    '10 MiB stdout: servers CPU, ms',
    ...sides.map((s) =>
      f(
        s.big.map((b) => b.server),
        1,
      ),
    ),
  ]);
  rows.push([
    '10 MiB stdout: helpers CPU, ms',
    ...sides.map((s) =>
      f(
        s.big.map((b) => b.helper),
        1,
      ),
    ),
  ]);
  rows.push([
    '10 MiB stdout: MiB/s end to end',
    ...sides.map((s) =>
      f(
        s.big.map((b) => b.rate),
        0,
      ),
    ),
  ]);
  process.stdout.write(
    [
      markdownTable(rows),
      '',
      `Medians [ranges] of ${rounds} rounds (the 10 MiB rows: of ${rounds * bigs} jobs), sides alternating which goes first; 2 \`rakeserver ${SERVER_FLAGS.join(' ')}\` per side; CPU from /proc (utime + stime; 10 ms ticks, so a 10 MiB job's figures are coarse); load ${formatSpread(spread(loads), 2)} (1-minute average before each round). Reproduce: \`node --import tsx scripts/bench/helper-output.ts --rounds ${rounds} --trues ${trues} --big ${bigs}${rev === undefined ? ' --baseline none' : ` --baseline ${rev}`}\`.`,
      '',
    ].join('\n'),
  );
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main();
