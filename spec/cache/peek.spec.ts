// The shared action cache across servers (issue 21, extension `results`): `!X lookup only`
// asks a server for a stored result without letting it run the command (a miss is answered
// `!X miss`), so a client can ask every server of the run before it runs an action on one.
// The wire part from a raw peer that shares no code with src/; real servers on loopback,
// real commands and files.
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer } from '../server/support.js';

const T = { timeout: 120_000 };

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

const jobsRun = (server: TestServer) => server.logs.filter((l) => l.msg === 'job start').length;

/** The rest of a stored result's reply for `printf hi > o; echo out`: stdout and the file `o`. */
async function expectResult(peer: RawPeer): Promise<void> {
  await peer.expect(cat(hdr('!SSI 4'), 'out\n', hdr('!SSIF1')));
  await peer.send('!N');
  await peer.expect(cat(hdr('!S!NF1'), 'o'));
  await peer.send('!Z');
  await peer.expect(cat(hdr('!S!ZF1'), '2'));
  await peer.send('!T');
  await peer.expect('hi');
}

/**
 * One job with `!X lookup` (or `lookup only`) on a fresh raw connection; returns the `!X`
 * message that came first (`hit …` or `miss`), or `undefined` when the command ran.
 */
async function ask(server: TestServer, command: string, verb: string): Promise<string | undefined> {
  const peer = await RawPeer.connect(server.port);
  try {
    await peer.send(pkt('!X', 'hello rake/1 ext=results'));
    await peer.expect(pkt('!X', 'ok ext=results'));
    await peer.send(pkt('!X', verb), pkt('!C', command));
    const head = await peer.header(15_000);
    if (head.startsWith('!X')) {
      const said = (await peer.read(Number(head.slice(2)))).toString('latin1');
      if (said !== 'miss') await expectResult(peer);
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
      return said;
    }
    // The command ran: its ordinary reply.
    assert.equal(head, '!SSI 4');
    await peer.expect(cat('out\n', hdr('!SSIF1')));
    await peer.send('!N');
    await peer.expect(cat(hdr('!S!NF1'), 'o'));
    await peer.send('!Z');
    await peer.expect(cat(hdr('!S!ZF1'), '2'));
    await peer.send('!T');
    await peer.expect('hi');
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
    return undefined;
  } finally {
    peer.destroy();
  }
}

describe('lookup only: a stored result or nothing (extension results)', () => {
  it('a miss runs nothing and says miss; a hit is the reply of lookup', T, async () => {
    const server = await startServer({});
    const marks = await mkdtemp(join(tmpdir(), 'rake-peek-'));
    const ran = join(marks, 'ran');
    const command = `touch ${ran}; printf hi > o; echo out`;
    try {
      assert.equal(await ask(server, command, 'lookup only'), 'miss');
      assert.equal(existsSync(ran), false, 'the command did not run');
      assert.equal(jobsRun(server), 0);
      assert.ok(server.logs.some((l) => l.msg === 'result miss (lookup only): not run'));

      // An ordinary lookup misses, runs the command and stores its result.
      assert.equal(await ask(server, command, 'lookup'), undefined);
      assert.equal(existsSync(ran), true);
      assert.equal(jobsRun(server), 1);
      rmSync(ran);

      const hit = await ask(server, command, 'lookup only');
      assert.match(hit ?? '', /^hit [0-9a-f]{64}$/);
      assert.equal(await ask(server, command, 'lookup'), hit, 'the same key as lookup');
      assert.equal(existsSync(ran), false, 'a hit runs nothing');
      assert.equal(jobsRun(server), 1);
      assert.deepEqual(await assertHealthy(server), []);
    } finally {
      await server.close();
      await rm(marks, { recursive: true, force: true });
    }
  });

  it('with reuse, the job after a miss follows on the same connection', T, async () => {
    const server = await startServer({});
    try {
      const peer = await RawPeer.connect(server.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=results,reuse'));
      await peer.expect(pkt('!X', 'ok ext=results,reuse'));
      await peer.send(pkt('!X', 'lookup only'), pkt('!C', 'echo first'));
      await peer.expect(pkt('!X', 'miss'));
      await peer.send(pkt('!C', 'echo second'));
      await peer.expect(cat(hdr('!SS  7'), 'second\n'));
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
      assert.equal(jobsRun(server), 1, 'only the second command ran');
      assert.deepEqual(await assertHealthy(server), []);
    } finally {
      await server.close();
    }
  });

  it('a client cannot send miss; lookup only needs results', T, async () => {
    const server = await startServer({});
    try {
      const peer = await RawPeer.connect(server.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=results'));
      await peer.expect(pkt('!X', 'ok ext=results'));
      await peer.send(pkt('!X', 'miss'));
      assert.match((await peer.packet()).payload.toString(), /^rakeserver: refused: bad-extension/);
      assert.equal((await peer.packet()).payload.toString(), '2');

      const other = await RawPeer.connect(server.port);
      await other.send(pkt('!X', 'hello rake/1 ext=stderr'));
      await other.expect(pkt('!X', 'ok ext=stderr'));
      await other.send(pkt('!X', 'lookup only'));
      assert.match(
        (await other.packet()).payload.toString(),
        /^rakeserver: refused: bad-extension/,
      );
      assert.equal((await other.packet()).payload.toString(), '2');
      assert.equal(jobsRun(server), 0);
    } finally {
      await server.close();
    }
  });
});
