import type { Socket } from 'node:net';
import {
  asyncScheduler,
  BehaviorSubject,
  map,
  type Observable,
  type SchedulerLike,
  type Subscription,
  switchMap,
  timer,
} from 'rxjs';
import { encodeExtension, type ServerLoad, write } from '../protocol/index.js';

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

  constructor(read: () => LoadCounts) {
    this.#read = read;
    this.#subject = new BehaviorSubject(read());
    this.loads$ = this.#subject.asObservable();
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
  return loads$.pipe(
    switchMap((load) => timer(0, beatMs, scheduler).pipe(map(() => ({ ...load, beatMs })))),
  );
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
  return loadMessages(feed.loads$, beatMs).subscribe((load) => {
    if (socket.destroyed || socket.writableNeedDrain) return;
    write(socket, encodeExtension({ verb: 'load', ...load })).catch(() => {});
  });
}
