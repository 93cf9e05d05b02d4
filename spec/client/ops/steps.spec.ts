// The transport's steps (src/client/ops/upload.ts, execute.ts, download.ts) over a real
// loopback socket: a job can be cancelled at every step, and unsubscribing closes the socket
// (the server sees the connection end at once). The peer is a scripted base-protocol server
// that stops answering at the step under test.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Endpoint } from '../../../src/client/endpoint.js';
import { type JobProgress, tcpTransport } from '../../../src/client/transport.js';
import { encodePacket } from '../../../src/protocol/header.js';

type Stage = 'upload' | 'execute' | 'download';

/**
 * A base server: answers cost queries with 0; on a job connection, holds at `stage` — never
 * asks for the files (upload), never replies (execute), or replies "outputs follow" and sends
 * none (download). `closed` resolves when the held job's connection ends.
 */
function holdingServer(stage: Stage) {
  let held: (socket: Socket) => void = () => {};
  const reached = new Promise<Socket>((ok) => {
    held = ok;
  });
  const server: Server = createServer((socket) => {
    let buf = Buffer.alloc(0);
    let seen = false;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (seen || buf.length < 64) return;
      seen = true;
      const code = buf.subarray(0, 2).toString('latin1');
      const head = buf.subarray(0, 64).toString('latin1').trim();
      if (head.startsWith('!E')) {
        socket.end(encodePacket({ code: '!E' }, '0'));
        return;
      }
      if (stage === 'upload') assert.equal(head, '!R0');
      else assert.equal(code, '!C');
      if (stage === 'download') socket.write(encodePacket({ flags: 'SI ' }, 'out\n'));
      held(socket);
    });
    socket.on('error', () => {});
  });
  return { server, reached };
}

function listen(server: Server): Promise<Endpoint> {
  return new Promise((ok) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      ok({ host: '127.0.0.1', port: typeof a === 'object' && a ? a.port : 0 });
    }),
  );
}

describe('upload, execute, download: cancellable at every step (real sockets)', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'steps-'));
    await writeFile(join(dir, 'in.txt'), 'input\n');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const [stage, last] of [
    ['upload', 'connected'],
    ['execute', 'uploaded'],
    ['download', 'replied'],
  ] as const) {
    it(`unsubscribing during ${stage} closes the socket`, async () => {
      const { server, reached } = holdingServer(stage);
      const endpoint = await listen(server);
      try {
        const seen: JobProgress['type'][] = [];
        const sub = tcpTransport()
          .sendJob(endpoint, {
            command: 'cat in.txt',
            files: stage === 'upload' ? [{ name: 'in.txt', path: join(dir, 'in.txt') }] : [],
            outputDir: dir,
          })
          .subscribe({
            next: (p) => seen.push(p.type),
            error: (err: unknown) => assert.fail(`no error expected: ${String(err)}`),
            complete: () => assert.fail('the held job cannot complete'),
          });
        const socket = await reached;
        const closed = new Promise<void>((ok) => socket.once('close', () => ok()));
        // What the step before reported has arrived: the job is now inside `stage`.
        while (seen.at(-1) !== last) await new Promise((ok) => setImmediate(ok));
        sub.unsubscribe();
        await closed;
        assert.equal(seen.at(-1), last);
      } finally {
        await new Promise((ok) => server.close(ok));
      }
    });
  }
});
