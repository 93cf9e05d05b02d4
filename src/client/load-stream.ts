import { connect, type Socket } from 'node:net';
import {
  asyncScheduler,
  catchError,
  concat,
  defer,
  EMPTY,
  filter,
  identity,
  map,
  Observable,
  of,
  repeat,
  type SchedulerLike,
  startWith,
  takeWhile,
  timer,
} from 'rxjs';
import { ProtocolError } from '../protocol/errors.js';
import {
  encodeExtension,
  OFFER_ANNEX,
  PROTOCOL_TAG,
  parseExtension,
  parseServerDescription,
  type ServerLoad,
} from '../protocol/extensions.js';
import { describeHeader, encodeHeader, expectPlain, parseDecimal } from '../protocol/header.js';
import type { ProtocolLimits } from '../protocol/limits.js';
import { FramedReader } from '../protocol/reader.js';
import { write } from '../protocol/socket-writes.js';
import type { Token } from '../protocol/token.js';
import { type Endpoint, hostKey } from './endpoint.js';
import { describeError } from './errors.js';
import { DEFAULT_BEAT_MS, MISSED_BEATS, type PeerInfo, peerFromAnnex } from './negotiate.js';
import { lostWhenSilent } from './ops/lost-when-silent.js';

/**
 * What a host's load stream (extension `load`, docs/protocol.md) says as it goes: first, as a
 * cost query would, that it is `connected` and its `cost` (the stream opens with a cost query,
 * whose answer is the host's first poll answer: `LoadDispatcher`); then a load, or that this
 * host cannot stream it (a base server, a rake-ts server without `load`): such a host is
 * polled per action as before. `unsupported` with `offerRefused`: the server refused the offer
 * in the `!E0` padding (a strict base server) and gave no cost; ask it again without. With
 * `slow`: it connected but did not answer the cost query in time; it is polled from then on
 * (a base host must not get a stream's cost query again and again).
 */
export type LoadProbe =
  | { readonly type: 'connected' }
  | { readonly type: 'cost'; readonly cost: number; readonly peer: PeerInfo }
  | { readonly type: 'load'; readonly load: ServerLoad }
  | {
      readonly type: 'unsupported';
      readonly why: string;
      /** It refused the offer in the `!E0` padding and gave no cost: ask it without. */
      readonly offerRefused?: true;
      /** It connected but did not answer the cost query in time (busy, or frozen). */
      readonly slow?: true;
    };

/** Opens a host's load stream; the real one is {@link tcpWatchLoad}, marble tests script it. */
export type WatchLoad = (endpoint: Endpoint) => Observable<LoadProbe>;

/** A socket to `endpoint` (TLS for a `rakes://` host) and when it is ready to talk over. */
export interface Dialed {
  readonly socket: Socket;
  /** Resolves once connected (a TLS socket: once its handshake is over and verified). */
  readonly ready: Promise<void>;
  /** The failure of this connection in a person's words, when it is a TLS matter. */
  readonly explain?: (err: unknown) => unknown;
  /**
   * The stream's opening cost query was written on this connection already (bin/early-dial.js
   * sends it before the client's modules load; src/client/early-dial.ts checks the bytes).
   */
  readonly querySent?: boolean;
}

/**
 * One host's load as this client knows it: `live` with the server's latest load, `lost`
 * while it is silent (3 beats without a word) or its stream is down, `unsupported` for good
 * (poll it per action). `waiting`: no word yet since the stream was opened.
 */
export type HostLoad =
  | { readonly host: string; readonly state: 'waiting' }
  | { readonly host: string; readonly state: 'live'; readonly load: ServerLoad }
  | { readonly host: string; readonly state: 'lost'; readonly why: string }
  | { readonly host: string; readonly state: 'unsupported'; readonly why: string };

/** Options of {@link hostLoad}. */
export interface HostLoadOptions {
  /** After a stream broke (or never opened), wait this long before opening it again. */
  readonly reconnectMs: number;
  readonly scheduler?: SchedulerLike;
}

/**
 * A host's load as an Observable: `waiting`, then `live` with every load the server sends;
 * `lost` once it is silent for {@link MISSED_BEATS} of its beat intervals (before its first
 * load: of {@link DEFAULT_BEAT_MS}), and `live` again as soon as it speaks. A stream that
 * ends or fails is `lost` and opened again after `reconnectMs`; `unsupported` ends it.
 */
export function hostLoad(
  endpoint: Endpoint,
  watch: WatchLoad,
  options: HostLoadOptions,
): Observable<HostLoad> {
  const host = hostKey(endpoint);
  const scheduler = options.scheduler ?? asyncScheduler;
  const lost = (why: string): HostLoad => ({ host, state: 'lost', why });
  let unsupported = false;
  let sessions = 0;
  let broke = false;
  const session = (first: boolean) =>
    defer(() => watch(endpoint)).pipe(
      // The opening cost answer is the dispatcher's (a poll answer), not a state of the host.
      filter(
        (p): p is Extract<LoadProbe, { type: 'load' | 'unsupported' }> =>
          p.type === 'load' || p.type === 'unsupported',
      ),
      map(
        (p): HostLoad =>
          p.type === 'load'
            ? { host, state: 'live', load: p.load }
            : { host, state: 'unsupported', why: p.why },
      ),
      // `waiting` only before the host was ever heard from: a stream reopened after a break
      // stays `lost` until the host speaks.
      first ? startWith<HostLoad>({ host, state: 'waiting' }) : identity,
      // `lost` once silent for MISSED_BEATS beats (before a first load: of DEFAULT_BEAT_MS).
      lostWhenSilent<HostLoad>({
        silenceOf: (s) => {
          if (s.state === 'unsupported') {
            unsupported = true;
            return undefined;
          }
          return MISSED_BEATS * (s.state === 'live' ? s.load.beatMs : DEFAULT_BEAT_MS);
        },
        lost: (silence) =>
          lost(`went silent: no load for ${silence / 1000} s (${MISSED_BEATS} beats)`),
        scheduler,
      }),
      takeWhile((s) => s.state !== 'unsupported', true),
      catchError((err: unknown) => {
        broke = true;
        return of(lost(`its load stream broke: ${describeError(err)}`));
      }),
    );
  return concat(
    defer(() => {
      broke = false;
      return session(sessions++ === 0);
    }),
    // A stream that ended without saying unsupported (the server closed it) is lost too.
    defer(() => (unsupported || broke ? EMPTY : of(lost('its load stream ended')))),
  ).pipe(repeat({ delay: () => (unsupported ? EMPTY : timer(options.reconnectMs, scheduler)) }));
}

/** Options of {@link tcpWatchLoad}. */
export interface TcpWatchOptions {
  /** The token to prove to `endpoint`'s server, if any (extension `auth`). */
  readonly tokenFor?: (endpoint: Endpoint) => Token | undefined;
  readonly limits: ProtocolLimits;
  /** Time allowed for the connection, the cost reply and the handshake. */
  readonly connectTimeoutMs: number;
  /** Told the cost reply's annex (what the host is), as a poll's answer would be. */
  readonly onAnswer?: (endpoint: Endpoint, annex: string | undefined) => void;
  /**
   * Opens the socket (the transport's: TLS for a `rakes://` host, as its jobs' connections);
   * undefined or absent: a plain TCP connection.
   */
  readonly dial?: (endpoint: Endpoint) => Dialed | undefined;
  /**
   * Reads a `!F` answer to the cost query (`length` bytes of payload) and throws what it means
   * when it is a TLS matter (a plain query on a TLS port, a certificate refused); otherwise
   * returns and the host is taken for a strict base server that refused the offer.
   */
  readonly refused?: (reader: FramedReader, length: number, endpoint: Endpoint) => Promise<void>;
  /**
   * Takes the stream's opening connection once its cost reply said the host is ours, as a job
   * connection whose cost query is done (`transport.ts`: a warm connection, put in the pool
   * for the host's first job). Returns whether it took it; the stream then goes on over a new
   * connection, whose first message is the hello. A base host's connection is never offered:
   * it ends as a poll's does.
   */
  readonly handOver?: (
    endpoint: Endpoint,
    connection: { readonly socket: Socket; readonly reader: FramedReader },
    peer: PeerInfo,
  ) => boolean;
}

/** Largest `!X` on a load stream: an `ok`, a challenge or a load is far below. */
const LOAD_MESSAGE_MAX_BYTES = 4096;

/**
 * The real load stream: one TCP connection to `endpoint` carrying the cost query with the
 * offer, then (to a rake/1 host) the hello asking for `load` (and `auth` with a token) and
 * `!X watch`, then the server's loads until unsubscribed (`!D` is sent, the socket closed).
 * It says `connected` and the `cost` first, as a cost query does. A host whose cost reply is
 * not ours, or whose `ok` does not grant `load`, is `unsupported`. A base host's conversation
 * is exactly a poll's cost query (`!E0` with the offer, the answer, the connection closed).
 * A `rakes://` host's stream goes over the TLS connection `dial` opens, as its jobs do.
 */
export function tcpWatchLoad(options: TcpWatchOptions): WatchLoad {
  return (endpoint) =>
    new Observable<LoadProbe>((sub) => {
      let dialed: Dialed = options.dial?.(endpoint) ?? plainDial(endpoint);
      let { socket } = dialed;
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      let reader = new FramedReader(socket);
      let over = false;
      /** Connected, the cost query sent, its answer not in yet. */
      let asking = false;
      /** The time ran out while `asking`: the host is up and slow, maybe a base one. */
      let slow = false;
      const handshake = setTimeout(() => {
        slow = asking;
        socket.destroy(
          new Error(
            `no load stream from ${hostKey(endpoint)} within ${options.connectTimeoutMs} ms`,
          ),
        );
      }, options.connectTimeoutMs);
      const ignore = () => {};
      socket.on('error', ignore);
      const talk = async (): Promise<LoadProbe> => {
        await dialed.ready;
        asking = true;
        if (!over) sub.next({ type: 'connected' });
        if (dialed.querySent !== true) {
          await write(
            socket,
            encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: OFFER_ANNEX }),
          );
        }
        const head = await reader.readHeader(options.limits);
        if (head.kind === 'plain' && head.code === '!F') {
          await options.refused?.(reader, head.length, endpoint);
          return {
            type: 'unsupported',
            why: 'a base-protocol server that refused the offer in the !E0 padding',
            offerRefused: true,
          };
        }
        const reply = expectPlain(head, '!E');
        const cost = parseDecimal(await reader.readPayload(reply.length, 64, 'cost'), 'cost');
        asking = false;
        options.onAnswer?.(endpoint, reply.annex);
        const described = peerFromAnnex(reply.annex);
        // Our host: this connection, its cost query done, becomes the warm job connection the
        // host's first job takes (before the cost answer places it), and the stream goes on
        // over a new one. (A cost query with the offer leaves a connection's mode open.)
        const handed =
          described.kind === 'rake' &&
          !over &&
          options.handOver?.(endpoint, { socket, reader }, described) === true;
        if (!over) sub.next({ type: 'cost', cost, peer: described });
        const peer = parseServerDescription(reply.annex);
        if (peer === undefined) return { type: 'unsupported', why: 'a base-protocol server' };
        // The cost reply is the host's first load, a round trip (two, when the stream goes on
        // over a new connection) before its first `!X load`: its cost as `jobs` (with any
        // `--cost-offset`), the annex's `slots`, the default beat. So the run's first actions
        // are placed now, on the connection just handed over, instead of waiting for the watch.
        // Not for a host whose token this client lacks (it refuses the stream, and any job).
        const slots = peer.slots;
        const lacksToken =
          peer.extensions.includes('auth') && options.tokenFor?.(endpoint) === undefined;
        if (slots !== undefined && !lacksToken && !over) {
          const running = Math.min(cost, slots);
          sub.next({
            type: 'load',
            load: { jobs: cost, running, queued: cost - running, slots, beatMs: DEFAULT_BEAT_MS },
          });
        }
        if (handed) {
          dialed = options.dial?.(endpoint) ?? plainDial(endpoint);
          socket = dialed.socket;
          socket.setNoDelay(true);
          socket.setKeepAlive(true, 30_000);
          socket.on('error', ignore);
          reader = new FramedReader(socket);
          await dialed.ready;
        }
        const token = options.tokenFor?.(endpoint);
        const auth = token !== undefined;
        await write(
          socket,
          Buffer.concat([
            encodeExtension({
              verb: 'hello',
              protocol: PROTOCOL_TAG,
              extensions: auth ? ['load', 'auth'] : ['load'],
            }),
            // Without a token nothing comes between: the watch follows the hello.
            ...(auth ? [] : [encodeExtension({ verb: 'watch' })]),
          ]),
        );
        let answer: Awaited<ReturnType<typeof readExtension>>;
        try {
          answer = await readExtension(reader, options.limits);
          if (answer.verb === 'challenge' && token !== undefined) {
            await write(
              socket,
              encodeExtension({ verb: 'auth', proof: token.proof(answer.nonce) }),
            );
            answer = await readExtension(reader, options.limits);
          }
        } catch (err) {
          // A rake-ts server from before `load` refuses a hello after a cost query; a server
          // with a token refuses a client without one: either way, poll that host.
          if (err instanceof ProtocolError && err.reason === 'refused') {
            return {
              type: 'unsupported',
              why: `refused the load stream: ${err.received}`,
            } as const;
          }
          throw err;
        }
        if (answer.verb !== 'ok') {
          throw new ProtocolError('unexpected-code', 'an !X ok', `an !X ${answer.verb}`);
        }
        if (!answer.extensions.includes('load')) {
          // An older rake-ts server: the watch it was sent is refused; nothing is lost.
          return {
            type: 'unsupported',
            why: 'a rake-ts server without the load extension',
          } as const;
        }
        if (auth) await write(socket, encodeExtension({ verb: 'watch' }));
        clearTimeout(handshake);
        for (;;) {
          const msg = await readExtension(reader, options.limits);
          if (msg.verb !== 'load') {
            throw new ProtocolError('unexpected-code', 'an !X load', `an !X ${msg.verb}`);
          }
          const { verb: _, ...load } = msg;
          if (!over) sub.next({ type: 'load', load });
        }
      };
      talk().then(
        (end) => {
          clearTimeout(handshake);
          if (over) return;
          over = true;
          sub.next(end);
          sub.complete();
          // Closed as a cost query's connection is: gracefully, nothing more sent.
          socket.end();
          setTimeout(() => socket.destroy(), 1000).unref();
        },
        (err: unknown) => {
          clearTimeout(handshake);
          if (over) return;
          over = true;
          socket.destroy();
          if (slow) {
            // Connected but no cost answer in time: it may be a base host, which must see no
            // cost query a poll would not send, so the stream is not opened again: polled.
            sub.next({
              type: 'unsupported',
              why: `no answer to its cost query within ${options.connectTimeoutMs} ms: polled per action`,
              slow: true,
            });
            sub.complete();
            return;
          }
          sub.error(dialed.explain?.(err) ?? err);
        },
      );
      return () => {
        clearTimeout(handshake);
        if (!over) {
          over = true;
          reader.dispose();
          if (!socket.destroyed && !socket.connecting) {
            socket.end(encodeHeader({ kind: 'plain', code: '!D', length: 0 }));
            setTimeout(() => socket.destroy(), 1000).unref();
            return;
          }
        }
        socket.destroy();
      };
    });
}

/** A plain TCP connection (a host written without `rakes://`). */
export function plainDial(endpoint: Endpoint): Dialed {
  const socket = connect({ host: endpoint.host, port: endpoint.port });
  const ready = new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  ready.catch(() => {});
  return { socket, ready };
}

/** An `!X` message (a `!F` refusal is an error saying what the server refused). */
async function readExtension(reader: FramedReader, limits: ProtocolLimits) {
  const h = await reader.readHeader(limits);
  if (h.kind === 'plain' && h.code === '!F') {
    const why = await reader.readPayload(h.length, LOAD_MESSAGE_MAX_BYTES, 'refusal');
    throw new ProtocolError('refused', 'an !X message', why.toString('utf8').trim());
  }
  if (h.kind !== 'plain' || h.code !== '!X') {
    throw new ProtocolError('unexpected-code', 'an !X message', describeHeader(h));
  }
  return parseExtension(await reader.readPayload(h.length, LOAD_MESSAGE_MAX_BYTES, '!X message'), [
    'ok',
    'challenge',
    'load',
  ]);
}
