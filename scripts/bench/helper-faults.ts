/**
 * Issue 17, defect 1, measured: how fast a command holding a NUL byte is refused while another
 * client's job runs, and what the death of the spawn helper costs. Against one loopback
 * server (spawn helper, cgroup containment where the machine allows it):
 * - `--refusals` times: `!C2` + `x\0` on a fresh connection, timed to the second `!F` packet;
 *   a long job of another connection must still be running after each;
 * - `--kills` times: a job starts, its helper is SIGKILLed; timed from the kill to the lost
 *   job's connection being dropped (the client's cue to retry elsewhere), and to the next
 *   job's reply (a new helper started).
 *
 *   node --import tsx scripts/bench/helper-faults.ts [--refusals 50] [--kills 10]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '../../src/server/index.js';
import { markdownTable } from './lib/markdown.js';
import { formatSpread, spread } from './lib/stats.js';

const { values } = parseArgs({
  options: {
    refusals: { type: 'string', default: '50' },
    kills: { type: 'string', default: '10' },
  },
});

const header = (text: string) => Buffer.from(text.padEnd(64, ' '), 'latin1');
const command = (cmd: Buffer) => Buffer.concat([header(`!C${cmd.length}`), cmd]);

/** Resolves the bytes a connection received once `done(bytes)` holds, or it closed. */
function receive(socket: Socket, done: (bytes: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve) => {
    let bytes = Buffer.alloc(0);
    socket.on('data', (c: Buffer) => {
      bytes = Buffer.concat([bytes, c]);
      if (done(bytes)) resolve(bytes);
    });
    socket.once('close', () => resolve(bytes));
  });
}

async function open(port: number): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1' });
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  return socket;
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  const until = Date.now() + 30_000;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const scratch = mkdtempSync(join(tmpdir(), 'rake-bench-helper-'));
const server = await serve({ port: 0, spawner: 'python3' });
const load = () => loadavg()[0]?.toFixed(2);
const before = load();
try {
  // A job of another client, running all along.
  const other = await open(server.port);
  const go = join(scratch, 'go');
  other.write(command(Buffer.from(`while [ ! -e ${go} ]; do sleep 0.05; done; echo done`)));
  const otherReply = receive(other, (b) => b.includes('done\n'));
  await waitFor(() => server.cost() > 0, 'the long job');

  const refusalMs: number[] = [];
  for (let i = 0; i < Number(values.refusals); i++) {
    const socket = await open(server.port);
    const t0 = performance.now();
    socket.write(command(Buffer.from('x\0', 'latin1')));
    // Two packets: `!F<len>` + message, `!F1` + `2`.
    const reply = await receive(
      socket,
      (b) => b.length >= 64 * 2 + 1 && b.subarray(-1).toString() === '2',
    );
    refusalMs.push(performance.now() - t0);
    socket.destroy();
    if (!reply.toString('latin1').includes('NUL byte')) throw new Error('not refused');
    if (server.cost() < 1) throw new Error("the other client's job ended");
  }
  writeFileSync(go, '');
  if (!(await otherReply).includes('done\n')) throw new Error('the long job did not finish');
  other.destroy();

  const droppedMs: number[] = [];
  const backMs: number[] = [];
  for (let i = 0; i < Number(values.kills); i++) {
    const pidFile = join(scratch, `ppid-${i}`);
    const socket = await open(server.port);
    socket.write(command(Buffer.from(`echo $PPID > ${pidFile}; sleep 30`)));
    const dropped = receive(socket, () => false);
    let helper = 0;
    await waitFor(() => {
      try {
        helper = Number(readFileSync(pidFile, 'utf8'));
      } catch {
        return false;
      }
      return helper > 0;
    }, 'the job to start');
    const t0 = performance.now();
    process.kill(helper, 'SIGKILL');
    const got = await dropped;
    droppedMs.push(performance.now() - t0);
    if (got.length !== 0) throw new Error('the lost job was answered');
    const next = await open(server.port);
    const reply = receive(next, (b) => b.includes('back\n'));
    next.write(command(Buffer.from('echo back')));
    await reply;
    backMs.push(performance.now() - t0);
    next.destroy();
  }
  console.log(
    markdownTable([
      ['what', 'median (range)', 'runs'],
      [
        '`!C2` + `x\\0` → second `!F` (another job running)',
        formatSpread(spread(refusalMs), 1, ' ms'),
        String(refusalMs.length),
      ],
      [
        "helper SIGKILLed → the lost job's connection dropped",
        formatSpread(spread(droppedMs), 1, ' ms'),
        String(droppedMs.length),
      ],
      [
        "helper SIGKILLed → the next job's reply (new helper)",
        formatSpread(spread(backMs), 1, ' ms'),
        String(backMs.length),
      ],
    ]),
  );
  console.log(
    `\ncontainment ${server.containment}; load average (1 min) ${before} before, ${load()} after`,
  );
} finally {
  await server.close();
  rmSync(scratch, { recursive: true, force: true });
}
