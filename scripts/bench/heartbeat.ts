/**
 * Benchmark: how long a build waits for a server that froze mid-job (issue 17, defect 8),
 * with default flags everywhere (heartbeat every 5 s, no --job-timeout):
 *
 *   node --import tsx scripts/bench/heartbeat.ts [--runs 3]
 *
 * Two `rakeserver` programs (from source) on loopback; the client's engine (`run()`) in this
 * process builds a one-action Rakefile over both. The action's job announces itself, and the
 * server running it is frozen with SIGSTOP: (a) **mid-job**, 6 s into the job (after its first
 * heartbeat), and (b) **at once**, as the job starts (before any heartbeat: the client allows
 * 15 s for the first). The retried job on the other host sees a marker and ends at once.
 * Reported per case: seconds from the freeze to `action-retried` and to `done`, median and
 * range over the runs, with the load average (a shared machine).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { lastValueFrom, tap, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import { run } from '../../src/client/index.js';
import { ROOT } from './lib/proc.js';
import { formatSpread, spread } from './lib/stats.js';

const { values: opts } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const RUNS = Number(opts.runs);
const entry =
  "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })";
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

interface Server {
  readonly child: ChildProcess;
  readonly port: number;
  readonly workdir: string;
}

async function rakeserver(workdir: string): Promise<Server> {
  await mkdir(workdir, { recursive: true });
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '-e', entry, '--', '--port', '0', '--workdir', workdir],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let text = '';
  child.stderr?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const until = performance.now() + 60_000;
  while (!text.includes('"msg":"listening"')) {
    if (performance.now() > until || child.exitCode !== null) throw new Error(`no server: ${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const line = text.split('\n').find((l) => l.includes('"msg":"listening"')) as string;
  return { child, port: (JSON.parse(line) as { port: number }).port, workdir };
}

async function once(scratch: string, servers: Server[], delay: number, n: number) {
  const dir = join(scratch, `p${delay}-${n}`);
  await mkdir(dir, { recursive: true });
  const pids = join(dir, '..', `p${delay}-${n}.pids`);
  const marker = join(dir, '..', `p${delay}-${n}.frozen`);
  writeFileSync(
    join(dir, 'job.sh'),
    `if [ -e ${marker} ]; then echo made > out.txt; exit 0; fi\n${delay > 0 ? `sleep ${delay}\n` : ''}echo $$ >> ${pids}\nsleep 60\n`,
  );
  const hosts = servers.map((s) => `127.0.0.1:${s.port}`).join(' ');
  const text = `PORT = ${servers[0]?.port}\nHOSTS = ${hosts}\n\nall:\n\tremote-sh job.sh\n\t\trequires job.sh\n`;
  const parsed = parseRakefile(text, { file: join(dir, 'Rakefile') });
  if (!parsed.ok) throw new Error('bad Rakefile');
  const events: Array<{ at: number; type: string }> = [];
  const done = lastValueFrom(
    run(parsed.rakefile, { directory: dir, embedded: false, fallback: false }).pipe(
      tap((e) => events.push({ at: performance.now(), type: e.type })),
      toArray(),
    ),
  );
  while (!(existsSync(pids) && /\d/.test(readFileSync(pids, 'utf8')))) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const pid = Number(readFileSync(pids, 'utf8').trim());
  const cwd = readlinkSync(`/proc/${pid}/cwd`);
  const victim = servers.find((s) => cwd.startsWith(`${s.workdir}/`)) as Server;
  writeFileSync(marker, '');
  victim.child.kill('SIGSTOP');
  const frozenAt = performance.now();
  const all = await done;
  const end = performance.now();
  victim.child.kill('SIGCONT');
  try {
    process.kill(pid, 'SIGKILL'); // the frozen server's job, if it has not ended it yet
  } catch {
    // Already gone: the server saw its client leave once it ran again.
  }
  const retried = events.find((e) => e.type === 'action-retried');
  const ok = all.some((e) => e.type === 'action-succeeded');
  if (!retried || !ok) throw new Error(`no retry or no success: ${events.map((e) => e.type)}`);
  return { retry: (retried.at - frozenAt) / 1000, done: (end - frozenAt) / 1000 };
}

const scratch = await mkdtemp(join(tmpdir(), 'rake-bench-heartbeat-'));
const servers = await Promise.all([1, 2].map((i) => rakeserver(join(scratch, `work${i}`))));
try {
  for (const [label, delay] of [
    ['mid-job (frozen 6 s into the job)', 6],
    ['at job start (before the first heartbeat)', 0],
  ] as const) {
    const retry: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await once(scratch, servers, delay, i);
      retry.push(r.retry);
      total.push(r.done);
    }
    console.log(
      `${label}: freeze → action-retried ${formatSpread(spread(retry), 1, ' s')}, freeze → done ${formatSpread(spread(total), 1, ' s')} (${RUNS} runs; load average ${load()})`,
    );
  }
} finally {
  for (const s of servers) {
    s.child.kill('SIGCONT');
    s.child.kill('SIGTERM');
  }
  await new Promise((r) => setTimeout(r, 500));
  await rm(scratch, { recursive: true, force: true });
}
