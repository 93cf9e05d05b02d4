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
 * Calls `send` at once, then every `beatMs` while nothing changes; {@link EveryBeat.poke}
 * (a change) calls it at once again. "At once" is the next timer turn (a 0 ms timer, 1 ms in
 * Node), counted from the last poke: pokes less than that apart make one call, which sends
 * what holds by then (a job's end followed at once by the next job's start is one message to
 * each watcher, not two). A call at once
 * may find nothing new to say (`send(false)` returns false: the changes undid each other);
 * the beat then goes on from the last message sent. A call for the beat (`send(true)`)
 * always sends.
 */
export class EveryBeat {
  readonly #send: (beat: boolean) => boolean;
  readonly #beatMs: number;
  /** The call at once, while one is due. */
  #soon: NodeJS.Timeout | undefined;
  /** The next beat: `beatMs` after the last message. */
  #beat: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(send: (beat: boolean) => boolean, beatMs: number) {
    this.#send = send;
    this.#beatMs = beatMs;
    this.poke();
  }

  /**
   * Something changed: call `send` at once. A call at once already due is put off to the
   * next timer turn, so a run of changes less than a turn apart makes one call, after the
   * last (as the RxJS `switchMap` over `timer(0, beat)` before it did).
   */
  poke(): void {
    if (this.#stopped) return;
    clearTimeout(this.#soon);
    this.#soon = setTimeout(this.#atOnce, 0);
  }

  /** No more calls. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#soon);
    clearTimeout(this.#beat);
    this.#soon = undefined;
    this.#beat = undefined;
  }

  readonly #atOnce = (): void => {
    this.#soon = undefined;
    if (!this.#send(false)) return;
    clearTimeout(this.#beat);
    this.#beat = setTimeout(this.#onBeat, this.#beatMs);
  };

  readonly #onBeat = (): void => {
    this.#beat = setTimeout(this.#onBeat, this.#beatMs);
    this.#send(true);
  };
}

/**
 * Sends the load to a connection that sent `!X watch` until the watch is ended (the
 * connection ends it when the client sends `!D` or goes away; the handshake,
 * src/server/handshake.ts, refuses anything else on a watching connection: it carries no
 * job): each load at once, then the same load again every `beatMs` while it does not change,
 * so a client that hears nothing for a few intervals knows the host is gone (a frozen
 * server, a cut link), not idle. Changes that leave the load as this connection was last
 * told it (a job's end, then the next job's arrival) send nothing. A message is skipped
 * while the client does not read (the socket's buffer is full): the next change or beat
 * says the same, newer.
 */
export function watchLoad(socket: Socket, feed: LoadFeed, beatMs: number): LoadWatch {
  feed.refresh();
  let sent: LoadCounts | undefined;
  const beat = new EveryBeat((onBeat) => {
    const load = feed.current;
    if (!onBeat && sent !== undefined && same(load, sent)) return false;
    if (socket.destroyed || socket.writableNeedDrain) return true;
    socket.write(feed.message(beatMs));
    sent = load;
    return true;
  }, beatMs);
  const unwatch = feed.watch(() => beat.poke());
  return {
    unsubscribe: () => {
      unwatch();
      beat.stop();
    },
  };
}
