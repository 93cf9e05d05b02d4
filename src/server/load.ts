import type { Socket } from 'node:net';
import { encodeExtension, type ServerLoad } from '../protocol/index.js';

/** What a server holds now (extension `load`); `beatMs` is per connection. */
export type LoadCounts = Omit<ServerLoad, 'beatMs'>;

function same(a: LoadCounts, b: LoadCounts): boolean {
  return (
    a.jobs === b.jobs && a.running === b.running && a.queued === b.queued && a.slots === b.slots
  );
}

/** What {@link watchLoad} returns: the watch, ended by `unsubscribe`. */
export interface LoadWatch {
  unsubscribe(): void;
}

/**
 * The server-wide load (docs/protocol.md, "load"): every change of the jobs held, the slots
 * taken or the queue is announced with {@link changed}; the changes of one turn of the event
 * loop are read once, after it (`setImmediate`), and a load equal to the last one is not
 * passed on again. Every watching connection registers with {@link watch}.
 *
 * Plain callbacks and timers, not RxJS: this runs on every job's start and end, and a chain
 * of operators per watcher (a new interval for each load) cost more server CPU per job than
 * the load message itself.
 */
export class LoadFeed {
  readonly #read: () => LoadCounts;
  #current: LoadCounts;
  #pending = false;
  readonly #watchers = new Set<(load: LoadCounts) => void>();
  /** The current load's `!X load` message, by beat interval: encoded once for every watcher. */
  readonly #encoded = new Map<number, Buffer>();

  constructor(read: () => LoadCounts) {
    this.#read = read;
    this.#current = read();
  }

  /** The load as last passed on (or read by {@link refresh}). */
  get current(): LoadCounts {
    return this.#current;
  }

  /**
   * Calls `watcher` with each distinct load from now on (not the current one), until the
   * returned function is called.
   */
  watch(watcher: (load: LoadCounts) => void): () => void {
    this.#watchers.add(watcher);
    return () => {
      this.#watchers.delete(watcher);
    };
  }

  /**
   * The current load as its `!X load` message with `beatMs`: one encoding per load however
   * many connections watch.
   */
  message(beatMs: number): Buffer {
    let message = this.#encoded.get(beatMs);
    if (message === undefined) {
      message = encodeExtension({ verb: 'load', ...this.#current, beatMs });
      this.#encoded.set(beatMs, message);
    }
    return message;
  }

  /** Something counted in the load may have changed: read it after this turn of the loop. */
  changed(): void {
    if (this.#pending || this.#watchers.size === 0) return;
    this.#pending = true;
    setImmediate(this.#settle);
  }

  /** Re-reads the load at once (a watcher subscribing sees the true current one). */
  refresh(): void {
    this.#set(this.#read());
  }

  readonly #settle = (): void => {
    this.#pending = false;
    this.#set(this.#read());
  };

  #set(now: LoadCounts): void {
    if (same(now, this.#current)) return;
    this.#current = now;
    this.#encoded.clear();
    for (const watcher of this.#watchers) watcher(now);
  }
}

/**
 * Calls `send` at once, then again every `beatMs` until the next {@link EveryBeat.poke}
 * (a change): after a poke, the next call comes at once again and the beat restarts from it.
 * "At once" is the next timer turn (a 0 ms timer, 1 ms in Node): pokes within it make one
 * call, which sends what holds by then (a job's end followed at once by the next job's
 * start is one message to each watcher, not two).
 */
export class EveryBeat {
  readonly #send: () => void;
  readonly #beatMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** The pending call is the "at once" one (not a beat). */
  #soon = false;
  #stopped = false;

  constructor(send: () => void, beatMs: number) {
    this.#send = send;
    this.#beatMs = beatMs;
    this.poke();
  }

  /** Something changed: call `send` at once (unless a call at once is already due). */
  poke(): void {
    if (this.#soon || this.#stopped) return;
    clearTimeout(this.#timer);
    this.#soon = true;
    this.#timer = setTimeout(this.#fire, 0);
  }

  /** No more calls. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  readonly #fire = (): void => {
    this.#soon = false;
    this.#timer = setTimeout(this.#fire, this.#beatMs);
    this.#send();
  };
}

/**
 * Sends the load to a connection that sent `!X watch` until the watch is ended (the
 * connection ends it when the client sends `!D` or goes away; the handshake,
 * src/server/handshake.ts, refuses anything else on a watching connection: it carries no
 * job): each load at once, then the same load again every `beatMs` while it does not change,
 * so a client that hears nothing for a few intervals knows the host is gone (a frozen
 * server, a cut link), not idle. A message is skipped while the client does not read (the
 * socket's buffer is full): the next change or beat says the same, newer.
 */
export function watchLoad(socket: Socket, feed: LoadFeed, beatMs: number): LoadWatch {
  feed.refresh();
  const beat = new EveryBeat(() => {
    if (socket.destroyed || socket.writableNeedDrain) return;
    socket.write(feed.message(beatMs));
  }, beatMs);
  const unwatch = feed.watch(() => beat.poke());
  return {
    unsubscribe: () => {
      unwatch();
      beat.stop();
    },
  };
}
