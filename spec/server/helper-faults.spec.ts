// Issue 17, defect 1: nothing one client sends may end the spawn helper, which runs every
// client's jobs. A command the helper cannot spawn is that job's failure; a helper that dies
// anyway costs its jobs a retry on another host, never a wrong answer, and is restarted.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { createLauncher } from '../../src/server/launcher.js';
import type { ServerHandle } from '../../src/server/server.js';
import {
  closeAll,
  only,
  project,
  removeDir,
  runAll,
  startServers,
  summary,
} from '../client/support.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { alive, collect, startServer } from './support.js';

const T = { timeout: 60_000 };
const silent = pino({ level: 'silent' });

async function readPid(file: string): Promise<number> {
  await waitUntil(async () => /^\d+\n$/.test(await readFile(file, 'utf8').catch(() => '')), {
    what: `a pid in ${file}`,
  });
  return Number((await readFile(file, 'utf8')).trim());
}

/** The parent of a process, from /proc/PID/stat (field 4). */
async function parentOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

for (const spawner of ['python3', 'node'] as const) {
  describe(`a command holding a NUL byte (spawner ${spawner})`, () => {
    it(
      "is refused with !F and status 2, and another client's running job finishes",
      T,
      async () => {
        const server = await startServer({ spawner });
        const other = await RawPeer.connect(server.port);
        const nul = await RawPeer.connect(server.port);
        try {
          const pidFile = join(server.scratch, 'other.pid');
          const go = join(server.scratch, 'go');
          // The other client's job runs until the test lets it finish.
          await other.send(
            pkt('!C', `echo $$ > ${pidFile}; while [ ! -e ${go} ]; do sleep 0.02; done; echo done`),
          );
          const shell = await readPid(pidFile);

          await nul.send(pkt('!C', Buffer.from('x\0', 'latin1')));
          const first = await nul.packet();
          assert.match(first.head, /^!F\d+$/);
          assert.match(
            first.payload.toString('utf8'),
            /^rakeserver: refused: the command holds a NUL byte \(at character 1\).*remove it/,
          );
          const second = await nul.packet();
          assert.deepEqual([second.head, second.payload.toString()], ['!F1', '2']);

          assert.ok(alive(shell), "the other client's job was killed");
          await writeFile(go, '');
          await other.expect(Buffer.concat([hdr('!SS  5'), Buffer.from('done\n')]));
          await other.send(hdr('!D0'));
        } finally {
          other.destroy();
          nul.destroy();
          await server.close();
        }
      },
    );
  });
}

describe('the spawn helper', () => {
  it('outlives requests it cannot spawn: each fails its own job only', T, async () => {
    const launcher = await createLauncher('python3', silent);
    const dir = await mkdtemp(join(tmpdir(), 'rake-helper-faults-'));
    try {
      const pidFile = join(dir, 'running.pid');
      const running = await launcher.launch(
        `echo $PPID > ${pidFile}; while [ ! -e go ]; do sleep 0.02; done; echo survived`,
        dir,
      );
      const output = collect(running.stdout);
      const helper = await readPid(pidFile);
      // Straight to the helper, past runJob's own NUL check: posix_spawn raises ValueError.
      await assert.rejects(launcher.launch('x\0y', dir), /ValueError: .*null byte/);
      // A lone surrogate survives JSON but not the encoding of argv: UnicodeEncodeError.
      await assert.rejects(launcher.launch('echo \ud800', dir), /UnicodeEncodeError/);
      assert.ok(alive(helper), 'the helper died');
      await writeFile(join(dir, 'go'), '');
      assert.equal(await running.exited, 0);
      assert.equal(await output, 'survived\n');
      // The same helper still starts jobs.
      const next = await launcher.launch('echo $PPID', dir);
      assert.equal(await collect(next.stdout), `${helper}\n`);
    } finally {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it(
    'dying mid-job: the job is lost (not an exit status), and a new helper starts',
    T,
    async () => {
      const launcher = await createLauncher('python3', silent);
      const dir = await mkdtemp(join(tmpdir(), 'rake-helper-faults-'));
      try {
        const pidFile = join(dir, 'job.pid');
        const job = await launcher.launch(`echo $$ > ${pidFile}; exec sleep 30`, dir);
        const shell = await readPid(pidFile);
        const helper = await parentOf(shell);
        process.kill(helper, 'SIGKILL');
        assert.equal(await job.exited, 'lost');
        await waitUntil(() => !alive(shell), { what: `job ${shell} to die with its helper` });
        const next = await launcher.launch('echo $PPID', dir);
        const newHelper = Number((await collect(next.stdout)).trim());
        assert.notEqual(newHelper, helper);
      } finally {
        await launcher.close();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it(
    'dying mid-job: the server drops the connection, so the client retries the action on another host',
    T,
    async () => {
      const [victim, spare] = (await startServers(2, {
        costOffset: (i) => (i === 0 ? 0 : 3),
      })) as [ServerHandle, ServerHandle];
      const dir = await project();
      const marks = await mkdtemp(join(tmpdir(), 'rake-helper-faults-'));
      try {
        assert.equal(victim.spawner, 'python3');
        // Each attempt records its shell's pid, then waits for the test to let it finish.
        const text = [
          `PORT = ${spare.port}`,
          `HOSTS = 127.0.0.1:${victim.port} 127.0.0.1:${spare.port}`,
          '',
          'set:',
          `\tremote-echo $$ >> ${marks}/attempts; while [ ! -e ${marks}/go ]; do sleep 0.02; done; echo finished`,
          '',
        ].join('\n');
        const running = runAll(dir, text, { embedded: false });
        const shell = await readPid(join(marks, 'attempts'));
        const helper = await parentOf(shell);
        await waitUntil(() => victim.cost() > 0, { what: 'the job to reach the victim' });
        process.kill(helper, 'SIGKILL');
        await writeFile(join(marks, 'go'), '');
        const events = await running;
        const [retried] = only(events, 'action-retried');
        assert.equal(retried?.fromHost, `127.0.0.1:${victim.port}`);
        const [ok] = only(events, 'action-succeeded');
        assert.equal(ok?.host, `127.0.0.1:${spare.port}`);
        assert.deepEqual(
          only(events, 'output').map((e) => e.stdout.text()),
          ['finished\n'],
        );
        assert.equal(summary(events).exitStatus, 0);
        // The victim serves again, with a new helper.
        const peer = await RawPeer.connect(victim.port);
        try {
          await peer.send(pkt('!C', 'echo $PPID'));
          const reply = await peer.packet();
          assert.match(reply.head, /^!SS {2}\d+$/);
          assert.notEqual(Number(reply.payload.toString().trim()), helper);
        } finally {
          peer.destroy();
        }
      } finally {
        await closeAll([victim, spare]);
        await removeDir(dir);
        await rm(marks, { recursive: true, force: true });
      }
    },
  );
});
