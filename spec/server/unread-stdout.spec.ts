// Issue 17, defect 7: eight clients that never read their replies, each of whose jobs printed
// 64 MiB, must not make the server hold 512 MiB. A real `rakeserver` program on loopback;
// its peak RSS is read from /proc.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hdr, pkt } from '../helpers/raw-peer.js';
import { pollUntil, waitUntil } from '../helpers/wait.js';

const root = new URL('../..', import.meta.url).pathname;
const entry =
  "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })";
const MiB = 1024 * 1024;
const JOBS = 8;
const SIZE = 64 * MiB;

/** VmRSS or VmHWM of a process, in bytes. */
function vm(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
    readFileSync(`/proc/${pid}/status`, 'utf8'),
  );
  return Number(m?.[1]) * 1024;
}

describe('unread replies (defect 7)', () => {
  it('8 jobs × 64 MiB of stdout whose clients never read keep the server under 200 MiB', {
    timeout: 300_000,
  }, async (t) => {
    const scratch = await mkdtemp(join(tmpdir(), 'rake-unread-'));
    const workdir = join(scratch, 'work');
    await mkdir(workdir);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '-e', entry, '--', '--port', '0', '--workdir', workdir, '-j', '8'],
      { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr?.on('data', (c: Buffer) => {
      log += c.toString();
    });
    const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
    const sockets: Socket[] = [];
    try {
      await waitUntil(() => log.includes('"msg":"listening"'), { ms: 60_000, what: 'listening' });
      const line = log.split('\n').find((l) => l.includes('"msg":"listening"')) as string;
      const port = (JSON.parse(line) as { port: number }).port;
      const pid = child.pid as number;
      const before = vm(pid, 'VmRSS');
      for (let i = 0; i < JOBS; i++) {
        const socket = connect({ host: '127.0.0.1', port });
        socket.on('error', () => {});
        await new Promise<void>((ok) => socket.once('connect', () => ok()));
        // Never a 'data' listener: the socket stays paused and the reply is never read.
        socket.write(pkt('!C', `head -c ${SIZE} /dev/zero; touch ${join(scratch, `done-${i}`)}`));
        sockets.push(socket);
      }
      await waitUntil(
        () => Array.from({ length: JOBS }, (_, i) => join(scratch, `done-${i}`)).every(existsSync),
        { ms: 240_000, what: 'the 8 jobs to finish' },
      );
      // The whole of each job's stdout waits in a file of the server's spool, not in its heap.
      const spooled = () => {
        const spool = readdirSync(workdir).find((n) => n.startsWith('spool-'));
        if (spool === undefined) return [];
        const dir = join(workdir, spool);
        return readdirSync(dir).map((n) => statSync(join(dir, n)).size);
      };
      const complete = () => spooled().filter((s) => s === SIZE).length === JOBS;
      // Bounded: the old server never spools, and its RSS is what fails it then.
      await pollUntil(complete, { ms: 60_000 });
      const peak = vm(pid, 'VmHWM');
      const figure = `server RSS ${(before / MiB).toFixed(0)} MiB before, peak (VmHWM) ${(peak / MiB).toFixed(0)} MiB with ${JOBS} × 64 MiB unread; load average ${loadavg()[0]?.toFixed(1)}`;
      t.diagnostic(figure);
      assert.ok(peak < 200 * MiB, figure);
      assert.ok(complete(), `spool files: ${spooled().join(', ')}`);

      // A client that does read gets its 64 MiB whole.
      const reader = sockets[0] as Socket;
      let got = 0;
      let header: string | undefined;
      let zeros = true;
      let pending = Buffer.alloc(0);
      await new Promise<void>((resolve, reject) => {
        reader.on('data', (chunk: Buffer) => {
          if (header === undefined) {
            pending = Buffer.concat([pending, chunk]);
            if (pending.length < 64) return;
            header = pending.subarray(0, 64).toString('latin1').trimEnd();
            chunk = pending.subarray(64);
          }
          got += chunk.length;
          if (zeros && chunk.some((b) => b !== 0)) zeros = false;
          if (got >= SIZE) resolve();
        });
        reader.once('close', () =>
          got >= SIZE ? resolve() : reject(new Error(`closed at ${got}`)),
        );
      });
      assert.equal(header, `!SS  ${SIZE}`);
      assert.equal(got, SIZE);
      assert.ok(zeros, 'the reply is not the job’s stdout');
      reader.write(hdr('!D0'));
    } finally {
      for (const s of sockets) s.destroy();
      child.kill('SIGTERM');
      await exited;
      await rm(scratch, { recursive: true, force: true });
    }
  });
});
