// The load stream's opening connection, handed to the host's first job (issue 20,
// docs/protocol.md "A warm connection"): once its cost reply says the host is ours, the
// connection (its cost query done, its mode still open) waits in the pool and the stream goes
// on over a new one; the first job's hello goes out with the job on it, so the job waits for
// one round trip and dials nothing. Counted through a recording proxy on loopback: the turns
// of the conversation after the job was handed to the transport, and the connections opened.
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { lastValueFrom, toArray } from 'rxjs';
import type { LoadProbe } from '../../src/client/load-stream.js';
import { type JobProgress, tcpTransport } from '../../src/client/transport.js';
import { EXTENSIONS, OFFER_ANNEX } from '../../src/protocol/extensions.js';
import { encodeHeader } from '../../src/protocol/header.js';
import { Token } from '../../src/protocol/token.js';
import { startBaseServer } from '../helpers/base-server.js';
import { type RecordingProxy, startRecordingProxy } from '../helpers/recording-proxy.js';
import { startServer, type TestServer } from '../server/support.js';
import { project, removeDir, waitFor } from './support.js';

const T = { timeout: 60_000 };
const OFFER = encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: OFFER_ANNEX });

/**
 * How often the client waited for the server on the connection that carried `!C`, from log
 * entry `mark` on: each turn of the client's answered by one of the server's. And that
 * connection's index.
 */
function waitsAfter(proxy: RecordingProxy, mark: number): { waits: number; connection: number } {
  const after = proxy.log.slice(mark);
  const connection = after.find((e) => e.toServer && e.bytes.includes('!C'))?.connection;
  assert.ok(connection !== undefined, 'no !C passed the proxy after the mark');
  let waits = 0;
  let last: boolean | undefined;
  for (const e of after.filter((x) => x.connection === connection)) {
    if (last === true && !e.toServer) waits++;
    last = e.toServer;
  }
  return { waits, connection };
}

async function withServer(
  options: Parameters<typeof startServer>[0],
  body: (server: TestServer, proxy: RecordingProxy, dir: string) => Promise<void>,
): Promise<void> {
  const server = await startServer(options);
  const proxy = await startRecordingProxy(server.port);
  const dir = await project({ 'a.txt': 'hello\n' });
  try {
    await body(server, proxy, dir);
  } finally {
    await proxy.close();
    await server.close();
    await removeDir(dir);
  }
}

function oneJob(
  transport: ReturnType<typeof tcpTransport>,
  port: number,
  dir: string,
): Promise<JobProgress[]> {
  return lastValueFrom(
    transport
      .sendJob(
        { host: '127.0.0.1', port },
        {
          command: 'cat a.txt',
          files: [{ name: 'a.txt', path: join(dir, 'a.txt') }],
          outputDir: dir,
        },
      )
      .pipe(toArray()),
  );
}

function assertReplied(progress: readonly JobProgress[]): void {
  const reply = progress.find((p) => p.type === 'replied');
  assert.ok(reply?.type === 'replied' && reply.ok, JSON.stringify(progress));
  assert.equal(reply.stdout.text(), 'hello\n');
}

/**
 * Opens the load stream and waits for its cost answer: the opening connection is then in the
 * pool (handed over), and the stream goes on over a second connection.
 */
async function openStream(
  transport: ReturnType<typeof tcpTransport>,
  port: number,
): Promise<{ probes: LoadProbe[]; stop: () => void }> {
  const probes: LoadProbe[] = [];
  const sub = transport
    .watchLoad?.({ host: '127.0.0.1', port }, 5000)
    .subscribe((p) => probes.push(p));
  await waitFor(() => probes.some((p) => p.type === 'cost'), 10_000, 'the cost answer');
  return { probes, stop: () => sub?.unsubscribe() };
}

/**
 * A TCP proxy to `targetPort` that refuses (`!F` + message, `!F1 2`, close) any `!X` sent on a
 * connection after a cost query, as a rake-ts server from before the `load` extension did.
 */
async function startRefusingProxy(targetPort: number) {
  const sockets = new Set<Socket>();
  const state = { port: 0, costQueries: 0, refusals: 0, connections: 0 };
  const server = createServer((client) => {
    state.connections++;
    const upstream = connect({ port: targetPort, host: '127.0.0.1' });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let asked = false;
    let seen = Buffer.alloc(0);
    client.on('data', (b: Buffer) => {
      seen = Buffer.concat([seen, b]);
      if (!asked && seen.length >= 64 && seen.subarray(0, 3).toString() === '!E0') {
        asked = true;
        state.costQueries++;
        upstream.write(seen.subarray(0, 64));
        seen = seen.subarray(64);
      }
      if (asked && seen.subarray(0, 2).toString() === '!X') {
        state.refusals++;
        const why = 'rakeserver: refused: unexpected-code: expected !R, !C or !D, received !X\n';
        client.end(
          Buffer.concat([
            encodeHeader({ kind: 'plain', code: '!F', length: Buffer.byteLength(why) }),
            Buffer.from(why),
            encodeHeader({ kind: 'plain', code: '!F', length: 1 }),
            Buffer.from('2'),
          ]),
        );
        upstream.destroy();
        seen = Buffer.alloc(0);
        return;
      }
      if ((asked || seen.subarray(0, 2).toString() !== '!E') && seen.length > 0) {
        upstream.write(seen);
        seen = Buffer.alloc(0);
      }
    });
    upstream.on('data', (b: Buffer) => client.write(b));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  state.port = typeof address === 'object' && address ? address.port : 0;
  return Object.assign(state, {
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

describe('the load stream’s opening connection, handed to the first job', () => {
  it(
    'the first job waits for one round trip (hello + upload + command → reply) and dials nothing',
    T,
    async () => {
      await withServer({}, async (_server, proxy, dir) => {
        const transport = tcpTransport({ reuse: true });
        const { probes, stop } = await openStream(transport, proxy.port);
        try {
          const mark = proxy.log.length;
          assertReplied(await oneJob(transport, proxy.port, dir));
          const { waits, connection } = waitsAfter(proxy, mark);
          assert.equal(waits, 1, 'round trips the job waited for');
          assert.equal(connection, 0, 'the job went over the stream’s opening connection');
          // It began as any job connection to our server may: the cost query with the offer,
          // then the hello asking for reuse, the job in the same write.
          const sent = proxy.connections[0]?.toServer ?? Buffer.alloc(0);
          assert.deepEqual(sent.subarray(0, 64), OFFER);
          assert.match(
            sent.subarray(64, 200).toString('latin1'),
            /^!X\d+ +hello rake\/1 ext=\S*reuse/,
          );
          // The stream went on over a second connection, starting with its hello; no other.
          await waitFor(() => probes.some((p) => p.type === 'load'), 10_000, 'a load');
          assert.equal(proxy.connections.length, 2);
          assert.match(
            proxy.connections[1]?.toServer.subarray(0, 100).toString('latin1') ?? '',
            /^!X\d+ +hello rake\/1 ext=load/,
          );
          // The connection went back to the pool: the next job waits one round trip too.
          const again = proxy.log.length;
          assertReplied(await oneJob(transport, proxy.port, dir));
          assert.deepEqual(waitsAfter(proxy, again), { waits: 1, connection: 0 });
          assert.equal(proxy.connections.length, 2);
          assert.equal(transport.reusedConnections(), 2);
        } finally {
          stop();
          transport.closeIdle();
        }
      });
    },
  );

  it('with a token: the first job proves it on that connection, dialing nothing', T, async () => {
    await withServer({ token: 'warm-secret' }, async (_server, proxy, dir) => {
      const transport = tcpTransport({ reuse: true, token: new Token('warm-secret') });
      const { probes, stop } = await openStream(transport, proxy.port);
      try {
        const mark = proxy.log.length;
        assertReplied(await oneJob(transport, proxy.port, dir));
        // hello → challenge, auth → ok, job → reply: no connect of its own before them.
        assert.deepEqual(waitsAfter(proxy, mark), { waits: 3, connection: 0 });
        const sent = proxy.connections[0]?.toServer.toString('latin1') ?? '';
        assert.match(sent, /hello rake\/1 ext=\S*auth/);
        assert.match(sent, /auth [0-9a-f]{64}/);
        await waitFor(() => probes.some((p) => p.type === 'load'), 10_000, 'a load');
        assert.equal(proxy.connections.length, 2);
      } finally {
        stop();
        transport.closeIdle();
      }
    });
  });

  it(
    'a rake-ts server without reuse: the first job rides that connection, which then ends',
    T,
    async () => {
      const older = EXTENSIONS.filter((e) => e !== 'reuse' && e !== 'load');
      await withServer({ extensions: older }, async (_server, proxy, dir) => {
        const transport = tcpTransport({ reuse: true });
        const { probes, stop } = await openStream(transport, proxy.port);
        try {
          assertReplied(await oneJob(transport, proxy.port, dir));
          await waitFor(() => probes.some((p) => p.type === 'unsupported'), 10_000, 'unsupported');
          await proxy.settled();
          assert.equal(proxy.connections.length, 2, 'the opening one and the stream’s, no other');
          const first = proxy.connections[0]?.toServer.toString('latin1') ?? '';
          assert.ok(first.includes('!C'), first);
          // No reuse granted: the connection ends after its job, as a job connection without it.
          assert.match(first.slice(-64), /^!D0 +$/);
        } finally {
          stop();
          transport.closeIdle();
        }
      });
    },
  );

  it(
    'a rake-ts server from before load refuses a hello after a cost query: the job dials anew',
    T,
    async () => {
      await withServer({}, async (_server, upstream, dir) => {
        const refusing = await startRefusingProxy(upstream.port);
        const transport = tcpTransport({ reuse: true });
        const { stop } = await openStream(transport, refusing.port);
        try {
          assertReplied(await oneJob(transport, refusing.port, dir));
          assert.equal(refusing.refusals, 1, 'the hello behind the cost query');
          assert.equal(refusing.connections, 3, 'the opening one, the stream’s, the job’s own');
        } finally {
          stop();
          transport.closeIdle();
          await refusing.close();
        }
      });
    },
  );

  it(
    'a base-protocol server sees one cost query, byte for byte a poll’s, and nothing else',
    T,
    async () => {
      const base = await startBaseServer();
      const proxy = await startRecordingProxy(base.port);
      const transport = tcpTransport({ reuse: true });
      const probes: LoadProbe[] = [];
      const sub = transport
        .watchLoad?.({ host: '127.0.0.1', port: proxy.port }, 5000)
        .subscribe((p) => probes.push(p));
      try {
        await waitFor(() => probes.some((p) => p.type === 'unsupported'), 10_000, 'unsupported');
        await proxy.settled();
        assert.equal(proxy.connections.length, 1);
        assert.deepEqual(proxy.connections[0]?.toServer, OFFER);
        assert.equal(base.commands.length, 0);
      } finally {
        sub?.unsubscribe();
        transport.closeIdle();
        await proxy.close();
        await base.close();
      }
    },
  );
});
