// The handshake of one connection as a state machine (docs/protocol.md, "Extensions" and
// "auth"): one state type, and two transitions — what a message header may do in a state
// (`onHeader`), and what an `!X` payload does (`onExtension`). Both are pure but for the
// nonce a challenge draws (`HandshakeConfig.newNonce`): they return the next state and an
// effect for the connection to carry out, and a refusal as data, never by throwing. The
// connection (connection.ts) reads the wire and performs the effects; job intake
// (intake.ts) and the reply (reply.ts) never look at the handshake, only at the extensions
// it granted (`grantedOf`).
import {
  describeHeader,
  type Extension,
  type ExtensionMessage,
  encodeHeader,
  encodePacket,
  type Header,
  isOffer,
  PROTOCOL_TAG,
  ProtocolError,
  type ProtocolLimits,
  parseExtension,
  type Token,
} from '../protocol/index.js';

/**
 * Largest `!X` before authentication: a hello lists a handful of extensions, an answer to a
 * challenge is 69 bytes. See docs/protocol.md, "auth".
 */
export const HANDSHAKE_MAX_BYTES = 4096;

/**
 * Where a connection's handshake stands. A connection is between jobs in `base` or
 * `extended`: a job (requirements, command, reply) leaves the phase as it found it, so the
 * next job on the same connection starts from the same state. The job's own state
 * (directory, `cwd`, `lookup`, the files a `have` expects) is job intake's; with `reuse` the
 * handshake says when a job ends (`HeaderEffect` `command`, `endsJob`).
 */
export type HandshakeState =
  /**
   * Nothing received yet, or only cost queries with our offer (our client's load stream asks
   * its cost, then says hello on the same connection): the first other message decides
   * between base and extended.
   */
  | { readonly phase: 'awaiting-first' }
  /**
   * A hello came to a server with a token: the challenge is sent and the `!X auth` answer
   * is due. Only cost queries (and `!D`) are served meanwhile.
   */
  | {
      readonly phase: 'challenged';
      readonly nonce: string;
      readonly granted: ReadonlySet<Extension>;
      readonly wantsPlatform: boolean;
    }
  /**
   * The first message was not a hello: the reference protocol, nothing of ours is ever
   * sent. `authenticated` is false on a server with a token: such a client may only ask
   * for costs.
   */
  | { readonly phase: 'base'; readonly authenticated: boolean }
  /**
   * After a hello (and, on a server with a token, a good proof): the `granted` extensions
   * are in force, and `!X` messages of those extensions are read.
   */
  | {
      readonly phase: 'extended';
      readonly granted: ReadonlySet<Extension>;
      readonly wantsPlatform: boolean;
    }
  /**
   * An extended connection that sent `!X watch` (extension `load`) before any job: it
   * carries the server's load from now on, and nothing but `!D` is read.
   */
  | { readonly phase: 'watching'; readonly granted: ReadonlySet<Extension> }
  /**
   * `!D` came, or the peer was refused: nothing more is read. `after`: the phase it was in
   * (for the connection's log line).
   */
  | { readonly phase: 'closing'; readonly why: 'done' | 'refused'; readonly after: OpenState };

/** The states in which messages are read. */
export type OpenState = Exclude<HandshakeState, { phase: 'closing' }>;

export type HandshakePhase = HandshakeState['phase'];

/** What the server is: fixed for its lifetime. */
export interface HandshakeConfig {
  /** Set: clients must prove they know it (extension `auth`). */
  readonly token: Token | undefined;
  /** Extensions granted to a client that asks (never `auth`: that is `token`). */
  readonly extensions: ReadonlySet<Extension>;
  /** Said in the `ok` to a hello that asked (`platform?`). */
  readonly platform?: Readonly<Record<string, string>> | undefined;
  /** Bounds a `have` list and a job's `!X` messages. */
  readonly limits: ProtocolLimits;
  /** Draws the nonce of a challenge. */
  readonly newNonce: () => string;
}

/** What the connection does with a header, as `onHeader` decides it. */
export type HeaderEffect =
  /** `!E0`: answer with the cost (`costReply`). */
  | { readonly kind: 'cost' }
  /**
   * `!C<len>` (or a base client's `!E<len>`): read the command and run it. `endsJob`
   * (extension `reuse`): the job ends with its reply; the next `have`, `!R` or `!C` starts
   * another one, with nothing carried over.
   */
  | { readonly kind: 'command'; readonly length: number; readonly endsJob: boolean }
  /** `!R<len>`: receive the requirements' filestream. */
  | { readonly kind: 'requirements'; readonly length: number }
  /** `!X<len>`: read at most `maxBytes` of payload, then `onExtension`. */
  | { readonly kind: 'extension'; readonly length: number; readonly maxBytes: number }
  /** `!D`: the conversation is over. */
  | { readonly kind: 'end' }
  | { readonly kind: 'refuse'; readonly error: ProtocolError };

/** What the connection does with an `!X` payload, as `onExtension` decides it. */
export type ExtensionEffect =
  /**
   * Send this handshake message (`ok`, `challenge`). `mayHold`: an `ok` to a `push` client,
   * which may leave with the reply if the client's job is already here (docs/protocol.md,
   * "push").
   */
  | { readonly kind: 'send'; readonly message: ExtensionMessage; readonly mayHold: boolean }
  /** A job's message (`have`, `cwd`, `lookup`): for job intake. */
  | { readonly kind: 'job'; readonly message: ExtensionMessage }
  /** `!X watch`: start sending the load (the state is `watching`). */
  | { readonly kind: 'watch' }
  | { readonly kind: 'refuse'; readonly error: ProtocolError };

export interface Step<E> {
  readonly state: HandshakeState;
  readonly effect: E;
}

/** The state of a connection that has received nothing. */
export const AWAITING_FIRST: OpenState = { phase: 'awaiting-first' };

const EXPECTED_HEADER = 'a !E, !C, !R or !D header';

/** The extensions in force (granted by a hello; none in base mode or before a message). */
export function grantedOf(state: HandshakeState): ReadonlySet<Extension> {
  if (state.phase === 'closing') return grantedOf(state.after);
  return state.phase === 'extended' || state.phase === 'challenged' || state.phase === 'watching'
    ? state.granted
    : NONE;
}
const NONE: ReadonlySet<Extension> = new Set();

/** True where jobs may run: base mode on a server without a token, or extended. */
export function isAuthenticated(state: HandshakeState): boolean {
  return state.phase === 'extended' || (state.phase === 'base' && state.authenticated);
}

/** Base or extended, for the connection's log line (`challenged`, `watching`: extended). */
export function modeOf(state: HandshakeState): 'base' | 'extended' {
  if (state.phase === 'closing') return modeOf(state.after);
  return state.phase === 'awaiting-first' || state.phase === 'base' ? 'base' : 'extended';
}

/**
 * A message header in `state`: the first non-`!X` message makes the connection base; a job
 * message needs an authenticated connection; `!X` is read only as the first message or on
 * an extended connection, and before authentication only as far as a handshake needs.
 */
export function onHeader(
  state: HandshakeState,
  h: Header,
  config: Pick<HandshakeConfig, 'token' | 'limits'>,
): Step<HeaderEffect> {
  if (state.phase === 'closing') return refuse(state.after, unexpected(h, EXPECTED_HEADER));
  if (state.phase === 'watching') {
    if (h.kind === 'plain' && h.code === '!D') {
      return { state: { phase: 'closing', why: 'done', after: state }, effect: { kind: 'end' } };
    }
    return refuse(
      state,
      unexpected(h, '!D (a connection that watches the load carries nothing else)'),
    );
  }
  if (h.kind === 'flagged') return refuse(state, unexpected(h, EXPECTED_HEADER));
  // A cost query with our offer leaves the connection awaiting its first message (see
  // `awaiting-first`); a plain `!E0` is a base client's, whose connection stays base.
  const offer = h.code === '!E' && h.length === 0 && isOffer(h.annex);
  const now: OpenState =
    state.phase === 'awaiting-first' && h.code !== '!X' && !offer
      ? { phase: 'base', authenticated: config.token === undefined }
      : state;
  const endsJob = grantedOf(now).has('reuse');
  switch (h.code) {
    case '!E':
      if (h.length === 0) return { state: now, effect: { kind: 'cost' } };
      return job(now, h, { kind: 'command', length: h.length, endsJob });
    case '!C':
      return job(now, h, { kind: 'command', length: h.length, endsJob });
    case '!R':
      return job(now, h, { kind: 'requirements', length: h.length });
    case '!X':
      if (now.phase === 'base') {
        return refuse(now, unexpected(h, `${EXPECTED_HEADER} (!X only after a hello)`));
      }
      return {
        state: now,
        effect: {
          kind: 'extension',
          length: h.length,
          // Before a client has authenticated (and for the hello, before anything), an `!X`
          // is a hello or an answer to a challenge: under 200 bytes. A larger one is refused
          // before a byte of it is buffered, so a peer cannot make the server hold a
          // megabyte unasked.
          maxBytes: now.phase === 'extended' ? config.limits.maxCommandBytes : HANDSHAKE_MAX_BYTES,
        },
      };
    case '!D':
      return { state: { phase: 'closing', why: 'done', after: now }, effect: { kind: 'end' } };
    case '!F':
      return refuse(now, unexpected(h, EXPECTED_HEADER));
  }
}

/**
 * An `!X` payload in `state` (after `onHeader` said to read it): the hello of an
 * `awaiting-first` connection, the answer to a challenge, or a job's message on an
 * extended connection, whose verbs are those of the granted extensions.
 */
export function onExtension(
  state: HandshakeState,
  payload: Buffer,
  config: HandshakeConfig,
  connection: { readonly jobStarted: boolean } = { jobStarted: false },
): Step<ExtensionEffect> {
  switch (state.phase) {
    case 'awaiting-first':
      return parsed(
        state,
        () => parseExtension(payload, ['hello']),
        (hello) => greet(hello, config),
      );
    case 'challenged':
      return parsed(
        state,
        () => parseExtension(payload, ['auth']),
        (answer) => {
          // Neither the token nor the proof is ever logged or echoed.
          if (answer.verb !== 'auth' || !config.token?.verify(state.nonce, answer.proof)) {
            return refuse(
              state,
              new ProtocolError(
                'unauthenticated',
                "the HMAC of the challenge under this server's token",
                'a proof made with another token',
              ),
            );
          }
          const next: HandshakeState = {
            phase: 'extended',
            granted: state.granted,
            wantsPlatform: state.wantsPlatform,
          };
          return send(next, okMessage(next, config.platform), false);
        },
      );
    case 'extended': {
      const verbs = [
        ...(state.granted.has('cache') ? (['have'] as const) : []),
        ...(state.granted.has('cwd') ? (['cwd'] as const) : []),
        ...(state.granted.has('results') ? (['lookup'] as const) : []),
        // A connection watches the load instead of carrying jobs, not after one.
        ...(state.granted.has('load') && !connection.jobStarted ? (['watch'] as const) : []),
      ];
      return parsed(
        state,
        () => parseExtension(payload, verbs, config.limits),
        (message): Step<ExtensionEffect> =>
          message.verb === 'watch'
            ? { state: { phase: 'watching', granted: state.granted }, effect: { kind: 'watch' } }
            : { state, effect: { kind: 'job', message } },
      );
    }
    case 'base':
    case 'watching':
    case 'closing': {
      const after = state.phase === 'closing' ? state.after : state;
      return refuse(
        after,
        new ProtocolError(
          'unexpected-code',
          EXPECTED_HEADER,
          `an !X message in ${state.phase} mode`,
        ),
      );
    }
  }
}

/** The `ok` of the handshake: the granted extensions, and the platform only if asked. */
export function okMessage(
  state: Extract<HandshakeState, { phase: 'extended' }>,
  platform: HandshakeConfig['platform'],
): ExtensionMessage {
  const extensions = [...state.granted];
  return state.wantsPlatform && platform !== undefined
    ? { verb: 'ok', extensions, platform }
    : { verb: 'ok', extensions };
}

/** `!E0` → `!E<len>` + cost; to our client's offer, with this server's annex. */
export function costReply(
  h: Extract<Header, { kind: 'plain' }>,
  cost: number,
  description: string,
): Buffer {
  const bytes = Buffer.from(String(cost));
  if (!isOffer(h.annex)) return encodePacket({ code: '!E' }, bytes);
  return Buffer.concat([
    encodeHeader({ kind: 'plain', code: '!E', length: bytes.length, annex: description }),
    bytes,
  ]);
}

/** A hello: grants what both sides know; challenges it on a server with a token. */
function greet(hello: ExtensionMessage, config: HandshakeConfig): Step<ExtensionEffect> {
  const state = AWAITING_FIRST;
  if (hello.verb !== 'hello') {
    return refuse(state, new ProtocolError('bad-extension', 'an !X hello message', hello.verb));
  }
  if (hello.protocol !== PROTOCOL_TAG) {
    return refuse(
      state,
      new ProtocolError('bad-extension', `a hello ${PROTOCOL_TAG}`, `hello ${hello.protocol}`),
    );
  }
  const granted = new Set(hello.extensions.filter((e) => config.extensions.has(e)));
  const wantsPlatform = hello.wantsPlatform === true;
  if (config.token === undefined) {
    const next: HandshakeState = { phase: 'extended', granted, wantsPlatform };
    return send(next, okMessage(next, config.platform), granted.has('push'));
  }
  if (!hello.extensions.includes('auth')) {
    return refuse(
      state,
      new ProtocolError(
        'unauthenticated',
        "a client with this server's token (rake-ts --token-file F, or RAKE_TOKEN)",
        'a hello without auth: the client has no token',
      ),
    );
  }
  const nonce = config.newNonce();
  return send(
    { phase: 'challenged', nonce, granted, wantsPlatform },
    { verb: 'challenge', nonce },
    false,
  );
}

/** A job message needs an authenticated connection (with a token, only ours can be). */
function job(
  state: OpenState,
  h: Header,
  effect: Extract<HeaderEffect, { kind: 'command' | 'requirements' }>,
): Step<HeaderEffect> {
  if (isAuthenticated(state)) return { state, effect };
  return refuse(
    state,
    new ProtocolError(
      'unauthenticated',
      "a client that proves it knows this server's token (rake-ts with --token-file or RAKE_TOKEN; a base-protocol client cannot)",
      `${describeHeader(h)} on a connection that did not authenticate`,
    ),
  );
}

/** Runs a parser whose ProtocolError becomes a refusal. */
function parsed(
  state: OpenState,
  parse: () => ExtensionMessage,
  then: (message: ExtensionMessage) => Step<ExtensionEffect>,
): Step<ExtensionEffect> {
  let message: ExtensionMessage;
  try {
    message = parse();
  } catch (err) {
    if (err instanceof ProtocolError) return refuse(state, err);
    throw err;
  }
  return then(message);
}

function send(
  state: HandshakeState,
  message: ExtensionMessage,
  mayHold: boolean,
): Step<ExtensionEffect> {
  return { state, effect: { kind: 'send', message, mayHold } };
}

/** A refusal: the connection closes after saying why (`!F`). */
function refuse(after: OpenState, error: ProtocolError): Step<RefuseEffect> {
  return { state: { phase: 'closing', why: 'refused', after }, effect: { kind: 'refuse', error } };
}
type RefuseEffect = { readonly kind: 'refuse'; readonly error: ProtocolError };

function unexpected(h: Header, expected: string): ProtocolError {
  return new ProtocolError('unexpected-code', expected, describeHeader(h));
}
