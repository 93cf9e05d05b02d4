import type { Socket } from 'node:net';
import {
  asyncScheduler,
  BehaviorSubject,
  map,
  type Observable,
  type SchedulerLike,
  type Subscription,
  shareReplay,
  switchMap,
  timer,
} from 'rxjs';
import { encodeExtension, type ServerLoad } from '../protocol/index.js';

/** What a server holds now (extension `load`); `beatMs` is per connection. */
export type LoadCounts = Omit<ServerLoad, 'beatMs'>;

function same(a: LoadCounts, b: LoadCounts): boolean {
  return (
    a.jobs === b.jobs && a.running === b.running && a.queued === b.queued && a.slots === b.slots
  );
}

/**
 * The server-wide load (docs/protocol.md, "load"): every change of the jobs held, the slots
 * taken or the queue is announced with {@link changed}; the changes of one turn of the event
 * loop are read once, after it (`setImmediate`), and a load equal to the last one is not
 * emitted again. Every watching connection subscribes to {@link loads$}.
 */
export class LoadFeed {
  readonly #read: () => LoadCounts;
  readonly #subject: BehaviorSubject<LoadCounts>;
  #pending = false;
  /** Each distinct load, the current one first on subscription. */
  readonly loads$: Observable<LoadCounts>;
  /** Each load's `!X load` message, by beat interval: encoded once for every watcher. */
  readonly #encoded = new Map<number, Observable<Buffer>>();

  constructor(read: () => LoadCounts) {
    this.#read = read;
    this.#subject = new BehaviorSubject(read());
    this.loads$ = this.#subject.asObservable();
  }

  /**
   * Each distinct load as its `!X load` message with `beatMs`, the current one first on
   * subscription; one encoding per load however many connections watch.
   */
  encoded$(beatMs: number): Observable<Buffer> {
    let messages = this.#encoded.get(beatMs);
    if (messages === undefined) {
      messages = this.loads$.pipe(
        map((load) => encodeExtension({ verb: 'load', ...load, beatMs })),
        shareReplay({ bufferSize: 1, refCount: true }),
      );
      this.#encoded.set(beatMs, messages);
    }
    return messages;
  }

  /** The load as last emitted. */
  get current(): LoadCounts {
    return this.#subject.value;
  }

  /** Something counted in the load may have changed: read it after this turn of the loop. */
  changed(): void {
    if (this.#pending || !this.#subject.observed) return;
    this.#pending = true;
    setImmediate(() => {
      this.#pending = false;
      const now = this.#read();
      if (!same(now, this.#subject.value)) this.#subject.next(now);
    });
  }

  /** Re-reads the load at once (a watcher subscribing sees the true current one). */
  refresh(): void {
    const now = this.#read();
    if (!same(now, this.#subject.value)) this.#subject.next(now);
  }
}

/**
 * What one watching connection is sent: each load at once, then the same load again every
 * `beatMs` while it does not change, so a client that hears nothing for a few intervals knows
 * the host is gone (a frozen server, a cut link), not idle.
 */
export function loadMessages(
  loads$: Observable<LoadCounts>,
  beatMs: number,
  scheduler: SchedulerLike = asyncScheduler,
): Observable<ServerLoad> {
  return everyBeat(loads$.pipe(map((load) => ({ ...load, beatMs }))), beatMs, scheduler);
}

/**
 * Each value at once, then again every `beatMs` while no other comes. "At once" is the next
 * timer turn (a 0 ms timer, 1 ms in Node): a value superseded within it is not sent (a job's
 * end followed at once by the next job's start is one message to each watcher, not two).
 */
export function everyBeat<T>(
  values$: Observable<T>,
  beatMs: number,
  scheduler: SchedulerLike = asyncScheduler,
): Observable<T> {
  return values$.pipe(switchMap((value) => timer(0, beatMs, scheduler).pipe(map(() => value))));
}

/**
 * Sends the load to a connection that sent `!X watch` until the subscription ends (the
 * connection ends it when the client sends `!D` or goes away; the handshake,
 * src/server/handshake.ts, refuses anything else on a watching connection: it carries no
 * job). A message is skipped while the client does not read (the socket's buffer is full):
 * the next change or beat says the same, newer.
 */
export function watchLoad(socket: Socket, feed: LoadFeed, beatMs: number): Subscription {
  feed.refresh();
  return everyBeat(feed.encoded$(beatMs), beatMs).subscribe((message) => {
    if (socket.destroyed || socket.writableNeedDrain) return;
    socket.write(message);
  });
}
