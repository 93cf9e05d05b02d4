/**
 * Job connections kept open between jobs (extension `reuse`, docs/protocol.md): per host, the
 * idle connections whose last job ended with its reply, with what their handshake settled.
 * A job to that host takes one instead of dialing, saying hello and proving the token again;
 * when its reply and files are in, the connection goes back. A connection the server closes
 * while idle (`--idle-timeout`, `--max-connections`) leaves the pool at once.
 */
import type { Socket } from 'node:net';
import type { Extension } from '../protocol/extensions.js';
import { encodeHeader } from '../protocol/header.js';
import type { FramedReader } from '../protocol/reader.js';
import type { PeerInfo } from './negotiate.js';
import type { TransferMeter } from './transport.js';

/** An idle job connection and what its handshake settled. */
export interface PooledConnection {
  readonly socket: Socket;
  readonly reader: FramedReader;
  readonly peer: PeerInfo;
  readonly granted: ReadonlySet<Extension>;
  /**
   * Only the cost query (with the offer) was said on it, no hello yet: a load stream's opening
   * connection, handed over once the host's cost reply said it is ours (`load-stream.ts`,
   * `handOver`); its first job says the hello as on a new connection. `granted` is empty.
   */
  readonly annexed?: boolean;
}

/** Idle connections kept per host at most: beyond, a connection is ended (`!D`). */
export const MAX_IDLE_PER_HOST = 16;

export class ConnectionPool {
  readonly #idle = new Map<string, PooledConnection[]>();
  /**
   * Sockets the pool listens to for their close: from the first time one is given back, for
   * as long as it lives (one listener per connection, not one added and removed per job).
   */
  readonly #watched = new WeakSet<Socket>();
  readonly #meter: TransferMeter | undefined;
  #closed = false;
  /** Connections handed out again instead of dialing (benchmarks, specs). */
  reused = 0;

  constructor(meter?: TransferMeter) {
    this.#meter = meter;
  }

  /** An idle connection to `host`, most recently used first; `undefined` when none. */
  take(host: string): PooledConnection | undefined {
    const list = this.#idle.get(host);
    for (let conn = list?.pop(); conn !== undefined; conn = list?.pop()) {
      if (!conn.socket.destroyed && conn.socket.readable && conn.reader.buffered === 0) {
        this.reused++;
        return conn;
      }
      this.#end(conn);
    }
    return undefined;
  }

  /** Keeps `conn` for the next job to `host` (or ends it: pool full or closed). */
  give(host: string, conn: PooledConnection): void {
    let list = this.#idle.get(host);
    if (list === undefined) {
      list = [];
      this.#idle.set(host, list);
    }
    if (this.#closed || list.length >= MAX_IDLE_PER_HOST || conn.socket.destroyed) {
      this.#end(conn);
      return;
    }
    if (!this.#watched.has(conn.socket)) {
      this.#watched.add(conn.socket);
      const mine = list;
      const socket = conn.socket;
      socket.once('close', () => this.#gone(mine, socket));
    }
    list.push(conn);
  }

  /**
   * A connection closed: out of the pool if it waited there (the server's idle timeout, a
   * restart). One a job holds is that job's to handle (its reads fail).
   */
  #gone(list: PooledConnection[], socket: Socket): void {
    const i = list.findIndex((c) => c.socket === socket);
    if (i < 0) return;
    const [conn] = list.splice(i, 1) as [PooledConnection];
    socket.on('error', () => {});
    conn.reader.dispose();
    this.#count(conn);
  }

  /** Ends every idle connection (`!D`) and keeps no more: the run is over. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const conn of list.splice(0)) this.#end(conn);
  }

  #end(conn: PooledConnection): void {
    // Without its reader, nothing else listens: a reset after our !D must not go unheard.
    conn.socket.on('error', () => {});
    conn.reader.dispose();
    if (!conn.socket.destroyed) {
      conn.socket.end(encodeHeader({ kind: 'plain', code: '!D', length: 0 }));
      setTimeout(() => conn.socket.destroy(), 1000).unref();
    }
    this.#count(conn);
  }

  readonly #counted = new WeakSet<Socket>();

  /** A connection's bytes go to the meter once, when it leaves for good. */
  #count(conn: PooledConnection): void {
    if (this.#meter === undefined || this.#counted.has(conn.socket)) return;
    this.#counted.add(conn.socket);
    this.#meter.sent += conn.socket.bytesWritten;
    this.#meter.received += conn.socket.bytesRead;
    this.#meter.connections++;
  }
}
