/**
 * One TCP (or TLS) connection as an Observable, and the steps of a conversation over it.
 *
 * `conversation` opens the socket when subscribed and closes it when the conversation ends
 * (gracefully after the last step, at once on an error); unsubscribing at any step destroys
 * the socket and stops its reader, so nothing more is read or sent. A step is one piece of
 * the talk (a handshake, an upload, a reply, a download) as an Observable: what it reports
 * as it goes (`progress`), then its `result`, which `then` hands to the next step.
 *
 *     conversation  (dial)--step 1--step 2--step 3--|(end)
 *     unsubscribe   (dial)--step 1--st!              (socket destroyed, reader disposed)
 */
import { connect, type Socket } from 'node:net';
import { Observable, type OperatorFunction, Subscription } from 'rxjs';
import { FramedReader } from '../protocol/reader.js';
import type { TlsDialer } from '../tls/client.js';
import { type Endpoint, hostKey } from './endpoint.js';
import type { TrackCleanup, TransferMeter } from './transport.js';

/** An open connection: the socket and the reader of its frames. */
export interface Connection {
  readonly socket: Socket;
  readonly reader: FramedReader;
  /**
   * Hands the socket and reader over (to the pool of job connections, extension `reuse`):
   * the conversation's end then neither closes the socket nor counts it.
   */
  readonly detach?: () => void;
}

/** What a step says: progress as it goes, then (once, last) its result. */
export type Told<P, T> = { readonly progress: P } | { readonly result: T };

/** Progress, as a step says it. */
export function progress<P>(p: P): Told<P, never> {
  return { progress: p };
}

/** A result, as a step says it. */
export function result<T>(r: T): Told<never, T> {
  return { result: r };
}

/**
 * An async step as an Observable: `work` may report progress through `emit`; its result
 * comes last. Unsubscribing drops what it says afterwards (the connection's end stops the
 * work itself: its reads fail once the reader is disposed). The work is tracked
 * (`track`), so a program about to exit waits for it to finish cleaning up.
 */
export function step<P, T>(
  track: TrackCleanup,
  work: (emit: (p: P) => void) => Promise<T>,
): Observable<Told<P, T>> {
  return new Observable<Told<P, T>>((sub) => {
    let done: Promise<T>;
    try {
      done = work((p) => sub.next({ progress: p }));
    } catch (err) {
      done = Promise.reject(err);
    }
    track(done);
    done.then(
      (r) => {
        sub.next({ result: r });
        sub.complete();
      },
      (err: unknown) => sub.error(err),
    );
  });
}

/** A step after the previous one's result. */
type Next<P> = (r: unknown) => Observable<Told<P, unknown>>;

/**
 * Steps chained by `then`: the first, then each next one on the previous one's result, run
 * by one subscriber. A `then` applied to a chain extends it (no new layer): a job's steps are
 * one subscription beside their own, and a progress value passes one subscriber on its way
 * out instead of one per later `then` (measured with 400 × `remote-true` on 2 hosts, the
 * layers were about 5 subscriptions per job).
 */
class Chain<P, U> extends Observable<Told<P, U>> {
  constructor(
    readonly first: Observable<Told<P, unknown>>,
    readonly nexts: readonly Next<P>[],
  ) {
    super((sub) => {
      const running = new Subscription();
      /** Steps subscribed to and not yet ended (one, unless a step has two results). */
      let active = 0;
      const run = (i: number, step$: Observable<Told<P, unknown>>) => {
        active++;
        running.add(
          step$.subscribe({
            next: (t) => {
              if (!('result' in t) || i === nexts.length) {
                sub.next(t as Told<P, U>);
                return;
              }
              let next$: Observable<Told<P, unknown>>;
              try {
                next$ = (nexts[i] as Next<P>)(t.result);
              } catch (err) {
                sub.error(err);
                return;
              }
              run(i + 1, next$);
            },
            error: (err: unknown) => sub.error(err),
            complete: () => {
              active--;
              if (active === 0) sub.complete();
            },
          }),
        );
      };
      run(0, first);
      return running;
    });
  }
}

/**
 * The next step, given the previous one's result; progress passes through. (As
 * `mergeMap(t => 'result' in t ? next(t.result) : of(t))`, without an inner subscription per
 * progress value: a job's progress passes through every later step's `then`, and that
 * cost about 0.4 ms of client CPU per job, measured with 400 actions.) Steps chained by
 * `then` run as one {@link Chain}: the output ends once every step started has ended;
 * unsubscribing ends the step running.
 */
export function then<P, T, U>(
  next: (r: T) => Observable<Told<P, U>>,
): OperatorFunction<Told<P, T>, Told<P, U>> {
  return (source) =>
    source instanceof Chain
      ? new Chain<P, U>(source.first, [...source.nexts, next as Next<P>])
      : new Chain<P, U>(source, [next as Next<P>]);
}

/**
 * A conversation's progress, its results dropped. (As `filter` + `map`, in one subscriber:
 * every job's progress passes through it.)
 */
export function progressOnly<P>(): OperatorFunction<Told<P, unknown>, P> {
  return (source) =>
    new Observable<P>((sub) =>
      source.subscribe({
        next: (t) => {
          if ('progress' in t) sub.next(t.progress);
        },
        error: (err: unknown) => sub.error(err),
        complete: () => sub.complete(),
      }),
    );
}

/** How connections are opened and accounted. */
export interface Dialing {
  readonly dialer: TlsDialer;
  readonly meter: TransferMeter | undefined;
  /**
   * A connection opened before (a load stream's opening connection, its cost query done:
   * `transport.ts`), talked over instead of dialing, and ended or destroyed as a dialed one.
   */
  readonly opened?: { readonly socket: Socket; readonly reader: FramedReader };
}

/** TLS sockets and their handshakes: such a socket is connected once the handshake is over. */
const handshakes = new WeakMap<Socket, Promise<void>>();

/** Resolves once `socket` is connected (a TLS socket: once its handshake is over). */
export function connected(socket: Socket): Promise<void> {
  const handshake = handshakes.get(socket);
  if (handshake !== undefined) return handshake;
  return new Promise((resolve, reject) => {
    if (!socket.connecting) {
      if (socket.destroyed) reject(new Error('connection closed'));
      else resolve();
      return;
    }
    const onConnect = () => {
      socket.off('error', onError);
      resolve();
    };
    const onError = (err: Error) => {
      socket.off('connect', onConnect);
      reject(err);
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
  });
}

/**
 * Opens a connection to `endpoint` and talks over it (`talk`). It ends gracefully (`end`)
 * when the talk completes, is destroyed when it errors (the error, told as a TLS matter
 * when it is one, goes through `classify`) or when unsubscribed.
 */
export function conversation<T>(
  endpoint: Endpoint,
  dialing: Dialing,
  classify: (err: unknown) => unknown,
  talk: (connection: Connection) => Observable<T>,
): Observable<T> {
  const opened = dialing.opened;
  // One subscriber does what `tap` (the talk's end), `catchError` (its error told) and
  // `finalize` (the socket's end) did: every job is a conversation.
  return new Observable<T>((sub) => {
    const tls =
      endpoint.tls === true && opened === undefined
        ? dialing.dialer.dial(endpoint.host, endpoint.port, hostKey(endpoint))
        : undefined;
    const socket =
      opened?.socket ?? tls?.socket ?? connect({ host: endpoint.host, port: endpoint.port });
    if (tls !== undefined) handshakes.set(socket, tls.ready);
    socket.setNoDelay(true);
    // A base-mode host has no heartbeat: the kernel's keepalive notices a dead host or link.
    socket.setKeepAlive(true, 30_000);
    const { meter } = dialing;
    let counted = meter === undefined;
    // Counted once the conversation is over, so a caller that awaited it sees the bytes.
    const count = () => {
      if (counted || meter === undefined) return;
      counted = true;
      meter.sent += socket.bytesWritten;
      meter.received += socket.bytesRead;
      meter.connections++;
    };
    const reader = opened?.reader ?? new FramedReader(socket);
    let detached = false;
    const detach = () => {
      detached = true;
    };
    /** The talk ended (completed or failed) rather than being cancelled. */
    let over = false;
    const failed = (err: unknown) => {
      over = true;
      count();
      socket.destroy();
      // A certificate, CA or plain-vs-TLS failure is told as such, naming the host.
      let told: unknown;
      try {
        told = classify(tls?.explain(err) ?? err);
      } catch (thrown) {
        told = thrown;
      }
      sub.error(told);
    };
    let talking: Subscription | undefined;
    try {
      talking = talk({ socket, reader, detach }).subscribe({
        next: (v) => sub.next(v),
        error: failed,
        complete: () => {
          over = true;
          if (!detached) {
            count();
            socket.end();
          }
          sub.complete();
        },
      });
    } catch (err) {
      failed(err);
    }
    return () => {
      talking?.unsubscribe();
      if (detached) return;
      // Cancelled while talking: nothing more is read. (A talk that ended keeps its reader
      // listening: it absorbs a late socket error, such as a last write after the peer's FIN.)
      if (!over) reader.dispose();
      count();
      socket.destroy();
    };
  });
}
