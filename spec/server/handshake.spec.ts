// The connection's handshake as a state machine (src/server/handshake.ts), on its own: for
// each state, what each message does — the next state and the effect the connection must
// carry out, or a refusal and its reason. No socket: the wire behaviour of the same rules is
// in golden.spec.ts, golden-extended.spec.ts, program-auth.spec.ts and hostile.spec.ts.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  DEFAULT_LIMITS,
  type Extension,
  type Header,
  type PlainCode,
  type ProtocolError,
  Token,
} from '../../src/protocol/index.js';
import {
  AWAITING_FIRST,
  costReply,
  grantedOf,
  HANDSHAKE_MAX_BYTES,
  type HandshakeConfig,
  type HandshakeState,
  isAuthenticated,
  modeOf,
  onExtension,
  onHeader,
} from '../../src/server/handshake.js';

const SECRET = 'the-shared-secret';
const NONCE = '0123456789abcdef0123456789abcdef';
const OFFERED: readonly Extension[] = ['stderr', 'mode', 'cache', 'push', 'cwd', 'results'];

function config(withToken: boolean, over: Partial<HandshakeConfig> = {}): HandshakeConfig {
  return {
    token: withToken ? new Token(SECRET) : undefined,
    extensions: new Set(OFFERED),
    platform: { os: 'linux', arch: 'x64' },
    limits: DEFAULT_LIMITS,
    newNonce: () => NONCE,
    ...over,
  };
}

/** The proof a client holding `secret` sends, computed here without src/. */
const proof = (secret: string, nonce = NONCE) =>
  createHmac('sha256', secret).update(`rake/1 auth ${nonce}`).digest('hex');

const plain = (code: PlainCode, length = 0, annex?: string): Header =>
  annex === undefined ? { kind: 'plain', code, length } : { kind: 'plain', code, length, annex };

const granted = (...e: Extension[]) => new Set<Extension>(e);
const BASE_OPEN: HandshakeState = { phase: 'base', authenticated: true };
const BASE_LOCKED: HandshakeState = { phase: 'base', authenticated: false };
const EXTENDED: HandshakeState = {
  phase: 'extended',
  granted: granted('stderr', 'mode', 'cache', 'cwd', 'results'),
  wantsPlatform: false,
};
const EXTENDED_BARE: HandshakeState = {
  phase: 'extended',
  granted: granted(),
  wantsPlatform: false,
};
const CHALLENGED: HandshakeState = {
  phase: 'challenged',
  nonce: NONCE,
  granted: granted('mode'),
  wantsPlatform: false,
};
const CLOSED: HandshakeState = { phase: 'closing', why: 'done', after: BASE_OPEN };
const EXTENDED_LOAD: HandshakeState = {
  phase: 'extended',
  granted: granted('load', 'reuse', 'beat'),
  wantsPlatform: false,
};
const WATCHING: HandshakeState = { phase: 'watching', granted: granted('load', 'beat') };

/** The state and effect a step produced, reduced to what the table compares. */
function summary(step: {
  state: HandshakeState;
  effect: { kind: string; error?: ProtocolError };
}): string {
  const e = step.effect;
  const effect = e.kind === 'refuse' ? `refuse(${e.error?.reason})` : e.kind;
  return `${step.state.phase} ${effect}`;
}

describe('handshake: a header in each state', () => {
  // [state, token on the server, header, expected "next-phase effect"]
  const table: Array<[string, HandshakeState, boolean, Header, string]> = [
    ['first !E0 is a base cost query', AWAITING_FIRST, false, plain('!E'), 'base cost'],
    ['first !E0 with a token: base, cost allowed', AWAITING_FIRST, true, plain('!E'), 'base cost'],
    [
      'first !E0 with our offer: still awaiting the first message',
      AWAITING_FIRST,
      false,
      plain('!E', 0, 'rake/1'),
      'awaiting-first cost',
    ],
    ['first !C runs a base job', AWAITING_FIRST, false, plain('!C', 4), 'base command'],
    ['first !E<len> is a base command', AWAITING_FIRST, false, plain('!E', 4), 'base command'],
    ['first !R receives requirements', AWAITING_FIRST, false, plain('!R'), 'base requirements'],
    [
      'first !C with a token is refused',
      AWAITING_FIRST,
      true,
      plain('!C', 4),
      'closing refuse(unauthenticated)',
    ],
    [
      'first !R with a token is refused',
      AWAITING_FIRST,
      true,
      plain('!R'),
      'closing refuse(unauthenticated)',
    ],
    [
      'first !X is read as a hello',
      AWAITING_FIRST,
      false,
      plain('!X', 30),
      'awaiting-first extension',
    ],
    ['first !D ends', AWAITING_FIRST, false, plain('!D'), 'closing end'],
    [
      'first !F is refused',
      AWAITING_FIRST,
      false,
      plain('!F', 3),
      'closing refuse(unexpected-code)',
    ],
    [
      'a flagged header is refused',
      AWAITING_FIRST,
      false,
      { kind: 'flagged', flags: 'S  ', length: 0 },
      'closing refuse(unexpected-code)',
    ],
    [
      'base: !X after a first message is refused',
      BASE_OPEN,
      false,
      plain('!X', 30),
      'closing refuse(unexpected-code)',
    ],
    ['base: the next job on the connection', BASE_OPEN, false, plain('!C', 4), 'base command'],
    ['base without the token: cost only', BASE_LOCKED, true, plain('!E'), 'base cost'],
    [
      'base without the token: no !E<len>',
      BASE_LOCKED,
      true,
      plain('!E', 4),
      'closing refuse(unauthenticated)',
    ],
    ['challenged: cost queries still answered', CHALLENGED, true, plain('!E'), 'challenged cost'],
    ['challenged: !X is the answer', CHALLENGED, true, plain('!X', 69), 'challenged extension'],
    [
      'challenged: no command before the proof',
      CHALLENGED,
      true,
      plain('!C', 4),
      'closing refuse(unauthenticated)',
    ],
    [
      'challenged: no upload before the proof',
      CHALLENGED,
      true,
      plain('!R'),
      'closing refuse(unauthenticated)',
    ],
    ['extended: !X is a job message', EXTENDED, false, plain('!X', 10), 'extended extension'],
    ['extended: command', EXTENDED, false, plain('!C', 4), 'extended command'],
    ['extended: !D ends', EXTENDED, false, plain('!D'), 'closing end'],
    ['extended: !F is refused', EXTENDED, false, plain('!F', 1), 'closing refuse(unexpected-code)'],
    ['closing: anything is refused', CLOSED, false, plain('!E'), 'closing refuse(unexpected-code)'],
    [
      'first !X after offered cost queries: a hello',
      AWAITING_FIRST,
      false,
      plain('!X', 9),
      'awaiting-first extension',
    ],
    ['watching: !D ends', WATCHING, false, plain('!D'), 'closing end'],
    ['watching: no command', WATCHING, false, plain('!C', 4), 'closing refuse(unexpected-code)'],
    ['watching: no cost query', WATCHING, false, plain('!E'), 'closing refuse(unexpected-code)'],
    ['watching: no !X', WATCHING, false, plain('!X', 5), 'closing refuse(unexpected-code)'],
  ];
  for (const [name, state, token, h, want] of table) {
    it(name, () => {
      assert.equal(summary(onHeader(state, h, config(token))), want);
    });
  }

  it('reads a hello or an answer to a challenge only up to HANDSHAKE_MAX_BYTES', () => {
    for (const state of [AWAITING_FIRST, CHALLENGED]) {
      const { effect } = onHeader(state, plain('!X', 10 ** 6), config(true));
      assert.deepEqual(effect, {
        kind: 'extension',
        length: 10 ** 6,
        maxBytes: HANDSHAKE_MAX_BYTES,
      });
    }
    const { effect } = onHeader(EXTENDED, plain('!X', 10), config(false));
    assert.deepEqual(effect, {
      kind: 'extension',
      length: 10,
      maxBytes: DEFAULT_LIMITS.maxCommandBytes,
    });
  });

  it('carries the lengths of a command and of requirements', () => {
    assert.deepEqual(onHeader(BASE_OPEN, plain('!C', 17), config(false)).effect, {
      kind: 'command',
      length: 17,
      endsJob: false,
    });
    assert.deepEqual(onHeader(BASE_OPEN, plain('!R', 5), config(false)).effect, {
      kind: 'requirements',
      length: 5,
    });
  });

  it('with reuse granted, a command ends its job (the next one starts fresh)', () => {
    assert.deepEqual(onHeader(EXTENDED_LOAD, plain('!C', 3), config(false)), {
      state: EXTENDED_LOAD,
      effect: { kind: 'command', length: 3, endsJob: true },
    });
    assert.deepEqual(onHeader(EXTENDED, plain('!C', 3), config(false)).effect, {
      kind: 'command',
      length: 3,
      endsJob: false,
    });
  });

  it('a watching connection is told it carries nothing but !D', () => {
    const { effect } = onHeader(WATCHING, plain('!C', 7), config(false));
    assert.ok(effect.kind === 'refuse');
    assert.match(effect.error.message, /expected !D \(a connection that watches the load/);
  });

  it('a refusal says what was expected and what came', () => {
    const { effect } = onHeader(BASE_OPEN, plain('!X', 30), config(false));
    assert.equal(effect.kind, 'refuse');
    assert.ok(effect.kind === 'refuse' && effect.error.message.includes('!X only after a hello'));
    const locked = onHeader(AWAITING_FIRST, plain('!C', 4), config(true)).effect;
    assert.ok(locked.kind === 'refuse' && locked.error.message.includes('--token-file'));
  });
});

describe('handshake: an !X payload in each state', () => {
  const x = (text: string) => Buffer.from(text, 'utf8');
  // [state, token, payload, expected "next-phase effect"]
  const table: Array<[string, HandshakeState, boolean, string, string]> = [
    [
      'hello without a token: extended, ok',
      AWAITING_FIRST,
      false,
      'hello rake/1 ext=mode,cache',
      'extended send',
    ],
    [
      'hello with a token and auth: challenged',
      AWAITING_FIRST,
      true,
      'hello rake/1 ext=auth,mode',
      'challenged send',
    ],
    [
      'hello with a token, no auth: refused',
      AWAITING_FIRST,
      true,
      'hello rake/1 ext=mode',
      'closing refuse(unauthenticated)',
    ],
    [
      'hello of another protocol: refused',
      AWAITING_FIRST,
      false,
      'hello rake/2 ext=mode',
      'closing refuse(bad-extension)',
    ],
    [
      'a first !X that is no hello: refused',
      AWAITING_FIRST,
      false,
      'have',
      'closing refuse(bad-extension)',
    ],
    [
      'garbage as a hello: refused',
      AWAITING_FIRST,
      false,
      '\u0000\u0001hello',
      'closing refuse(bad-extension)',
    ],
    ['the right proof: extended, ok', CHALLENGED, true, `auth ${proof(SECRET)}`, 'extended send'],
    [
      'a proof with another token: refused',
      CHALLENGED,
      true,
      `auth ${proof('another')}`,
      'closing refuse(unauthenticated)',
    ],
    [
      'a proof of another nonce: refused',
      CHALLENGED,
      true,
      `auth ${proof(SECRET, 'f'.repeat(32))}`,
      'closing refuse(unauthenticated)',
    ],
    [
      'a second hello instead of a proof: refused',
      CHALLENGED,
      true,
      'hello rake/1 ext=auth',
      'closing refuse(bad-extension)',
    ],
    ['extended: have with cache granted', EXTENDED, false, 'have', 'extended job'],
    ['extended: cwd with cwd granted', EXTENDED, false, 'cwd src', 'extended job'],
    ['extended: lookup with results granted', EXTENDED, false, 'lookup', 'extended job'],
    [
      'extended: have without cache: refused',
      EXTENDED_BARE,
      false,
      'have',
      'closing refuse(bad-extension)',
    ],
    [
      'extended: cwd without cwd: refused',
      EXTENDED_BARE,
      false,
      'cwd src',
      'closing refuse(bad-extension)',
    ],
    [
      'extended: a second hello: refused',
      EXTENDED,
      false,
      'hello rake/1 ext=mode',
      'closing refuse(bad-extension)',
    ],
    ['base: no !X at all', BASE_OPEN, false, 'have', 'closing refuse(unexpected-code)'],
    ['extended with load: watch', EXTENDED_LOAD, false, 'watch', 'watching watch'],
    ['extended without load: no watch', EXTENDED, false, 'watch', 'closing refuse(bad-extension)'],
  ];
  for (const [name, state, token, payload, want] of table) {
    it(name, () => {
      assert.equal(summary(onExtension(state, x(payload), config(token))), want);
    });
  }

  it('grants what both sides know, in the hello order; ok may be held only with push', () => {
    const step = onExtension(
      AWAITING_FIRST,
      x('hello rake/1 ext=zip,push,mode,beat'),
      config(false),
    );
    assert.equal(step.state.phase, 'extended');
    assert.deepEqual([...grantedOf(step.state)], ['mode', 'push']);
    assert.deepEqual(step.effect, {
      kind: 'send',
      message: { verb: 'ok', extensions: ['mode', 'push'] },
      mayHold: true,
    });
    const noPush = onExtension(AWAITING_FIRST, x('hello rake/1 ext=mode'), config(false));
    assert.ok(noPush.effect.kind === 'send' && !noPush.effect.mayHold);
  });

  it('says the platform in the ok only to a hello that asked', () => {
    const asked = onExtension(AWAITING_FIRST, x('hello rake/1 ext=mode platform?'), config(false));
    assert.deepEqual(asked.effect, {
      kind: 'send',
      message: { verb: 'ok', extensions: ['mode'], platform: { os: 'linux', arch: 'x64' } },
      mayHold: false,
    });
  });

  it('challenges with a fresh nonce, then answers a good proof with the ok of the hello', () => {
    const hello = onExtension(
      AWAITING_FIRST,
      x('hello rake/1 ext=auth,mode,cache platform?'),
      config(true),
    );
    assert.deepEqual(hello.state, {
      phase: 'challenged',
      nonce: NONCE,
      granted: granted('mode', 'cache'),
      wantsPlatform: true,
    });
    assert.deepEqual(hello.effect, {
      kind: 'send',
      message: { verb: 'challenge', nonce: NONCE },
      mayHold: false,
    });
    assert.equal(isAuthenticated(hello.state), false);
    const answer = onExtension(hello.state, x(`auth ${proof(SECRET)}`), config(true));
    assert.equal(isAuthenticated(answer.state), true);
    assert.deepEqual(answer.effect, {
      kind: 'send',
      message: {
        verb: 'ok',
        extensions: ['mode', 'cache'],
        platform: { os: 'linux', arch: 'x64' },
      },
      mayHold: false,
    });
  });

  it('never shows a refused proof', () => {
    const secretish = `auth ${'a'.repeat(64)}`;
    const { effect } = onExtension(CHALLENGED, x(`${secretish}\nmore`), config(true));
    assert.ok(effect.kind === 'refuse');
    assert.ok(!effect.error.message.includes('a'.repeat(16)), effect.error.message);
  });

  it('no watch once a job started on the connection', () => {
    const step = onExtension(EXTENDED_LOAD, x('watch'), config(false), { jobStarted: true });
    assert.equal(summary(step), 'closing refuse(bad-extension)');
  });

  it('passes a job message on as parsed', () => {
    const { effect } = onExtension(EXTENDED, x('cwd sub/dir'), config(false));
    assert.deepEqual(effect, { kind: 'job', message: { verb: 'cwd', path: 'sub/dir' } });
  });
});

describe('handshake: derived views', () => {
  it('mode and extensions of each state, a closed one as it was', () => {
    assert.equal(modeOf(AWAITING_FIRST), 'base');
    assert.equal(modeOf(BASE_OPEN), 'base');
    assert.equal(modeOf(CHALLENGED), 'extended');
    assert.equal(modeOf(EXTENDED), 'extended');
    assert.equal(modeOf(WATCHING), 'extended');
    assert.deepEqual([...grantedOf(WATCHING)], ['load', 'beat']);
    const closed: HandshakeState = { phase: 'closing', why: 'refused', after: EXTENDED };
    assert.equal(modeOf(closed), 'extended');
    assert.deepEqual([...grantedOf(closed)], [...grantedOf(EXTENDED)]);
    assert.equal(grantedOf(BASE_OPEN).size, 0);
    assert.equal(isAuthenticated(CLOSED), false);
  });

  it('cost reply: bare to a base query, with the annex to our offer', () => {
    const bare = costReply({ kind: 'plain', code: '!E', length: 0 }, 3, 'rake/1 slots=2 ext=mode');
    assert.equal(bare.toString('latin1'), `${'!E1'.padEnd(64, ' ')}3`);
    const offer = costReply(
      { kind: 'plain', code: '!E', length: 0, annex: 'rake/1' },
      12,
      'rake/1 slots=2 ext=mode',
    );
    const annex = 'rake/1 slots=2 ext=mode';
    assert.equal(offer.toString('latin1'), `!E2${' '.repeat(64 - 3 - annex.length)}${annex}12`);
  });
});
