import { connect, createServer, type Server, type Socket } from 'node:net';

/** The bytes of one proxied connection, each direction in order. */
export interface RecordedConnection {
  toServer: Buffer;
  toClient: Buffer;
  /** How many bytes had gone to the server when the first byte came back (undefined: none). */
  sentBeforeReply?: number;
}

/**
 * A TCP proxy on loopback in front of `targetPort` that records every byte each way, per
 * connection: lets a test assert on exactly what a client sent a server it did not write.
 */
export interface RecordingProxy {
  readonly port: number;
  readonly connections: RecordedConnection[];
  /**
   * Every chunk as the proxy passed it on, in order over all connections (`connection`: the
   * index in `connections`): who waited for whom, e.g. the round trips of a job.
   */
  readonly log: { connection: number; toServer: boolean; bytes: Buffer }[];
  /** Resolves once every connection so far has closed on both sides (bounded: 5 s). */
  settled(): Promise<void>;
  close(): Promise<void>;
}

export async function startRecordingProxy(targetPort: number): Promise<RecordingProxy> {
  const connections: RecordedConnection[] = [];
  const log: RecordingProxy['log'] = [];
  const sockets = new Set<Socket>();
  const closings: Promise<void>[] = [];
  const server: Server = createServer((client) => {
    const record: RecordedConnection = { toServer: Buffer.alloc(0), toClient: Buffer.alloc(0) };
    const index = connections.push(record) - 1;
    const upstream = connect({ port: targetPort, host: '127.0.0.1' });
    for (const s of [client, upstream]) {
      closings.push(new Promise<void>((resolve) => s.once('close', () => resolve())));
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (b: Buffer) => {
      record.toServer = Buffer.concat([record.toServer, b]);
      log.push({ connection: index, toServer: true, bytes: b });
      upstream.write(b);
    });
    upstream.on('data', (b: Buffer) => {
      record.sentBeforeReply ??= record.toServer.length;
      record.toClient = Buffer.concat([record.toClient, b]);
      log.push({ connection: index, toServer: false, bytes: b });
      client.write(b);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    connections,
    log,
    async settled() {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(closings),
        new Promise((resolve) => {
          timer = setTimeout(resolve, 5000);
        }),
      ]);
      clearTimeout(timer);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A client's load stream (docs/protocol.md, "load"): its hello asks for `load` (the client
 * opens one per host of ours for the run). Job connections are the others with a hello.
 */
export function isLoadStream(c: RecordedConnection): boolean {
  return /hello rake\/1 ext=load\b/.test(c.toServer.toString('latin1'));
}
