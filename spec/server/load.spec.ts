// Load: 32 concurrent connections, each uploading requirements, running a job and
// downloading its outputs, with every returned file checked by SHA-256. The client side is
// the shared protocol layer, so this also runs the filestream code in both roles at once.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import {
  encodeHeader,
  encodePacket,
  expectFlagged,
  FLAGS,
  FramedReader,
  prepareInside,
  receiveFilestream,
  sendFilestream,
} from '../../src/protocol/index.js';
import { assertHealthy, startServer, type TestServer } from './support.js';

const CONNECTIONS = 32;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let server: TestServer;
before(async () => {
  server = await startServer({ maxJobs: 4 });
});
after(async () => {
  await server.close();
});

async function oneClient(i: number): Promise<void> {
  const dir = join(server.scratch, `client-${i}`);
  await mkdir(join(dir, 'in'), { recursive: true });
  await mkdir(join(dir, 'out'), { recursive: true });
  const a = randomBytes(256 * 1024 + i);
  const b = randomBytes(1000 + i * 37);
  await writeFile(join(dir, 'in', 'a.bin'), a);
  await writeFile(join(dir, 'in', 'b.bin'), b);
  const expected = new Map([
    ['joined/ab.bin', sha256(Buffer.concat([a, b]))],
    ['a.sha', sha256(Buffer.from(`${sha256(a)}  a.bin\n`))],
    ['copy.bin', sha256(a)],
  ]);

  const socket: Socket = connect({ port: server.port, host: '127.0.0.1' });
  await new Promise<void>((ok, fail) => socket.once('connect', ok).once('error', fail));
  const reader = new FramedReader(socket);
  try {
    socket.write(encodeHeader({ kind: 'plain', code: '!R', length: 0 }));
    await sendFilestream(socket, reader, [
      { name: 'a.bin', path: join(dir, 'in', 'a.bin') },
      { name: 'src/b.bin', path: join(dir, 'in', 'b.bin') },
    ]);
    socket.write(
      encodePacket(
        { code: '!C' },
        'mkdir joined && cat a.bin src/b.bin > joined/ab.bin && sha256sum a.bin > a.sha && cp a.bin copy.bin',
      ),
    );
    const reply = expectFlagged(await reader.readHeader(), FLAGS.stdoutAndFiles);
    assert.equal(reply.length, 0);
    const files = await receiveFilestream(reader, socket, {
      resolve: (name) => prepareInside(join(dir, 'out'), name),
    });
    socket.write(encodeHeader({ kind: 'plain', code: '!D', length: 0 }));
    assert.deepEqual(files.map((f) => f.name).sort(), [...expected.keys()].sort());
    for (const [name, hash] of expected) {
      assert.equal(sha256(await readFile(join(dir, 'out', name))), hash, `client ${i}: ${name}`);
    }
  } finally {
    socket.end();
  }
}

it(`serves ${CONNECTIONS} concurrent upload-run-download connections`, async () => {
  const results = await Promise.allSettled(
    Array.from({ length: CONNECTIONS }, (_, i) => oneClient(i)),
  );
  const failures = results.flatMap((r, i) =>
    r.status === 'rejected' ? [`${i}: ${r.reason}`] : [],
  );
  assert.deepEqual(failures, []);
  assert.equal(
    server.logs.filter((l) => l.msg === 'job end' && l.exitStatus === 0 && l.files === 3).length,
    CONNECTIONS,
  );
  assert.deepEqual(await assertHealthy(server), []);
});
