// Step `download` (src/client/ops/download.ts) after a reply with no output files, over a real
// loopback socket: it sends `!D` (unless the connection is kept) and ends with its result, as
// one subscription (it was a concat of two steps under a catchError: five). Every job of ours
// downloads, most with no files at all.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lastValueFrom, Observable, type Subscription, toArray } from 'rxjs';
import type { Told } from '../../../src/client/conversation.js';
import { type DownloadSpec, download } from '../../../src/client/ops/download.js';
import type { JobProgress } from '../../../src/client/transport.js';
import { FramedReader } from '../../../src/protocol/reader.js';

describe('download with no output files', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'download-step-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** A connected socket pair on loopback: what the server reads, and the client's end. */
  async function pair(): Promise<{ client: Socket; received: () => Promise<string> }> {
    let chunks = '';
    const server = createServer((s) => {
      s.on('data', (c: Buffer) => {
        chunks += c.toString('latin1');
      });
      s.on('end', () => {
        server.close();
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const a = server.address();
    const client = connect({ host: '127.0.0.1', port: typeof a === 'object' && a ? a.port : 0 });
    await once(client, 'connect');
    return {
      client,
      received: async () => {
        client.end();
        await once(server, 'close');
        return chunks;
      },
    };
  }

  const spec = (keep: boolean): DownloadSpec => ({
    job: { command: 'true', files: [], outputDir: dir },
    cwd: undefined,
    limits: { maxOutputBytes: 1 << 20, maxStderrBytes: 1 << 20 } as never,
    modes: false,
    push: false,
    host: 'test',
    keep,
  });

  for (const keep of [false, true]) {
    it(`${keep ? 'a kept connection: no !D' : 'sends !D'}, ends with its result, in one subscription`, async () => {
      const { client, received } = await pair();
      const reader = new FramedReader(client);
      const subscribe = Observable.prototype.subscribe;
      let count = 0;
      Observable.prototype.subscribe = function (this: Observable<unknown>, ...args: unknown[]) {
        count++;
        return (subscribe as (...a: unknown[]) => Subscription).apply(this, args);
      } as typeof subscribe;
      let told: Promise<Told<JobProgress, void>[]>;
      try {
        told = lastValueFrom(
          download({ socket: client, reader }, { outputs: false }, spec(keep), () => {}).pipe(
            toArray(),
          ),
        );
      } finally {
        Observable.prototype.subscribe = subscribe;
      }
      const out = await told;
      reader.dispose();
      const bytes = await received();
      assert.deepEqual(out, [{ result: undefined }]);
      // lastValueFrom's, toArray's, and the step's.
      assert.equal(count, 3);
      assert.equal(bytes, keep ? '' : `!D0${' '.repeat(61)}`);
    });
  }
});
