// A kept job connection (extension `reuse`) that the server closes just as the next job is
// sent on it: the job goes on, on a new connection, with no error and no retry used. A real
// rakeserver behind a loopback proxy that cuts a connection when a second `!C` crosses it.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lastValueFrom, toArray } from 'rxjs';
import { type JobProgress, tcpTransport } from '../../src/client/transport.js';
import { startServer, type TestServer } from '../server/support.js';

/** Proxies to `port`; a connection whose client sends a second `!C` is cut at once. */
async function cuttingProxy(port: number) {
  const stats = { connections: 0, cut: 0 };
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    stats.connections++;
    const upstream = connect({ host: '127.0.0.1', port });
    let sent = '';
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.on('data', (b: Buffer) => {
      sent += b.toString('latin1');
      if ((sent.match(/!C\d/g) ?? []).length >= 2) {
        stats.cut++;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(b);
    });
    upstream.on('data', (b: Buffer) => client.write(b));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = server.address();
  return {
    port: typeof a === 'object' && a ? a.port : 0,
    stats,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

describe('a kept job connection closed as a job is sent on it', { timeout: 60_000 }, () => {
  let server: TestServer;
  let dir = '';
  before(async () => {
    server = await startServer({ maxJobs: 1 });
    dir = await mkdtemp(join(tmpdir(), 'pooled-gone-'));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the job goes on a new connection', async () => {
    const proxy = await cuttingProxy(server.port);
    const transport = tcpTransport({ reuse: true });
    try {
      const endpoint = { host: '127.0.0.1', port: proxy.port };
      const job = (command: string) =>
        lastValueFrom(
          transport.sendJob(endpoint, { command, files: [], outputDir: dir }).pipe(toArray()),
        );
      const replied = (ps: JobProgress[]) =>
        ps.flatMap((p) => (p.type === 'replied' && p.ok ? [p.stdout?.text()] : []));
      assert.deepEqual(replied(await job('echo one')), ['one\n']);
      assert.equal(transport.reusedConnections?.(), 0);
      const second = await job('echo two');
      // The kept connection was taken, cut as the command crossed, and the job started over.
      assert.equal(transport.reusedConnections?.(), 1);
      assert.equal(proxy.stats.cut, 1);
      assert.deepEqual(replied(second), ['two\n']);
      assert.deepEqual(
        second.filter((p) => p.type === 'connected').length,
        2,
        'connected on the kept connection, then on a new one',
      );
    } finally {
      transport.closeIdle?.();
      await proxy.close();
    }
  });
});
