// The wire of the negotiated extensions: the annex in `!E` headers, `!X` messages, `!M`,
// and tokens. Base-mode decoding is covered, unchanged, by header.spec.ts.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import {
  applicableMode,
  authProof,
  decodeHeader,
  describeServer,
  encodeExtension,
  encodeHeader,
  FramedReader,
  isProtocolError,
  loadToken,
  parseExtension,
  parseServerDescription,
  prepareInside,
  receiveFilestream,
  sendFilestream,
  Token,
} from '../../src/protocol/index.js';
import { hdr } from '../helpers/raw-peer.js';

const text = (t: string) => Buffer.from(t.padEnd(64, ' '), 'latin1');
const annexed = (t: string, annex: string) =>
  Buffer.from(t + ' '.repeat(64 - t.length - annex.length) + annex, 'latin1');

function throwsReason(f: () => unknown, reason: string): void {
  assert.throws(f, (err: unknown) => isProtocolError(err) && err.reason === reason);
}

describe('the annex of an !E header', () => {
  it('encodes right-aligned and decodes wherever it sits in the padding', () => {
    const offer = encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: 'rake/1' });
    assert.deepEqual(offer, annexed('!E0', 'rake/1'));
    assert.deepEqual(decodeHeader(offer), {
      kind: 'plain',
      code: '!E',
      length: 0,
      annex: 'rake/1',
    });
    assert.deepEqual(decodeHeader(text('!E0 rake/1  v=1')), {
      kind: 'plain',
      code: '!E',
      length: 0,
      annex: 'rake/1 v=1',
    });
    assert.deepEqual(decodeHeader(annexed('!E', 'rake/1')), {
      kind: 'plain',
      code: '!E',
      length: 0,
      annex: 'rake/1',
    });
    assert.deepEqual(decodeHeader(hdr('!E0')), { kind: 'plain', code: '!E', length: 0 });
  });

  it('is only an annex on !E, and only when it starts with rake/', () => {
    throwsReason(() => decodeHeader(text('!C7 rake/1')), 'bad-length');
    throwsReason(() => decodeHeader(text('!E1 2')), 'bad-length');
    throwsReason(() => decodeHeader(text('!Ex rake/1')), 'bad-length');
    assert.throws(() => encodeHeader({ kind: 'plain', code: '!C', length: 1, annex: 'rake/1' }));
    assert.throws(() =>
      encodeHeader({ kind: 'plain', code: '!E', length: 1, annex: 'x'.repeat(61) }),
    );
  });

  it('describes a server within the header, dropping the version if it would not fit', () => {
    assert.equal(
      describeServer('0.1.0', ['auth', 'stderr', 'mode', 'cache']),
      'rake/1 v=0.1.0 ext=stderr,mode,cache,auth',
    );
    assert.equal(describeServer('9'.repeat(60), ['mode']), 'rake/1 ext=mode');
    assert.deepEqual(parseServerDescription('rake/1 v=0.1.0 ext=stderr,zip,auth later=1'), {
      protocol: 'rake/1',
      version: '0.1.0',
      extensions: ['stderr', 'auth'],
    });
    assert.equal(parseServerDescription('rake/2 ext=stderr'), undefined);
    assert.equal(parseServerDescription(undefined), undefined);
  });

  it('says how many jobs the server runs at once, and drops that before the extensions', () => {
    const annex = describeServer('0.1.0', ['auth', 'stderr', 'mode', 'cache'], 16);
    assert.equal(annex, 'rake/1 v=0.1.0 slots=16 ext=stderr,mode,cache,auth');
    // The whole cost reply header still fits its 64 bytes.
    assert.equal(encodeHeader({ kind: 'plain', code: '!E', length: 1, annex }).length, 64);
    assert.deepEqual(parseServerDescription(annex), {
      protocol: 'rake/1',
      version: '0.1.0',
      extensions: ['stderr', 'mode', 'cache', 'auth'],
      slots: 16,
    });
    assert.equal(describeServer('9'.repeat(40), ['mode'], 2), 'rake/1 slots=2 ext=mode');
    assert.equal(describeServer('9'.repeat(60), ['mode'], 2), 'rake/1 slots=2 ext=mode');
    // Not a count of slots: not said, and not believed.
    assert.equal(describeServer(undefined, ['mode'], 0), 'rake/1 ext=mode');
    assert.equal(describeServer(undefined, ['mode'], 1.5), 'rake/1 ext=mode');
    for (const bad of ['0', '-1', '2.5', 'x', '01', '99999999', '']) {
      assert.equal(parseServerDescription(`rake/1 slots=${bad} ext=mode`)?.slots, undefined, bad);
    }
    assert.equal(parseServerDescription('rake/1 slots=1000000 ext=mode')?.slots, 1_000_000);
  });
});

describe('!X messages', () => {
  it('is a code only in its exact form !X<decimal>', () => {
    assert.deepEqual(decodeHeader(hdr('!X12')), { kind: 'plain', code: '!X', length: 12 });
    throwsReason(() => decodeHeader(hdr('!Xabc')), 'unknown-code');
    throwsReason(() => decodeHeader(hdr('!X1 2')), 'unknown-code');
  });

  it('round-trips every verb', () => {
    const messages = [
      { verb: 'hello', protocol: 'rake/1', extensions: ['stderr', 'mode', 'cache', 'auth'] },
      { verb: 'ok', extensions: [] },
      { verb: 'ok', extensions: ['mode'] },
      { verb: 'challenge', nonce: '0123456789abcdef0123456789abcdef' },
      { verb: 'auth', proof: 'ab'.repeat(32) },
      {
        verb: 'have',
        entries: [
          { sha256: 'a'.repeat(64), size: 1048576, mode: 0o644, name: 'include/big header.h' },
          { sha256: 'b'.repeat(64), size: 0, mode: 0o755, name: 'ünï.c' },
        ],
      },
      { verb: 'have', entries: [] },
      { verb: 'need', names: ['include/big header.h'] },
      { verb: 'need', names: [] },
      { verb: 'stderr', bytes: Buffer.from([0x77, 0x0a, 0xff]) },
      { verb: 'beat', intervalMs: 5000 },
      { verb: 'beat', intervalMs: 1 },
      { verb: 'beat', intervalMs: 3_600_000 },
    ] as const;
    for (const msg of messages) {
      const packet = encodeExtension(msg);
      const h = decodeHeader(packet.subarray(0, 64));
      assert.deepEqual(h, { kind: 'plain', code: '!X', length: packet.length - 64 });
      assert.deepEqual(parseExtension(packet.subarray(64)), msg);
    }
    assert.equal(
      encodeExtension({ verb: 'need', names: ['a', 'b'] })
        .subarray(64)
        .toString(),
      'need\na\nb',
    );
  });

  it('refuses malformed messages and verbs that were not expected', () => {
    const bad = (s: string, expected?: Parameters<typeof parseExtension>[1]) =>
      throwsReason(() => parseExtension(Buffer.from(s), expected), 'bad-extension');
    bad('nonsense');
    bad('hello');
    bad('challenge xyz');
    bad('auth 1234');
    bad('have\nnot a hash 1 644 a');
    bad(`have\n${'a'.repeat(64)} 1 644 a\n${'b'.repeat(64)} 1 644 a`);
    bad('need\na\n\nb');
    bad('stderr');
    bad('ok ext=mode', ['hello']);
    for (const beat of [
      'beat',
      'beat 0',
      'beat -5',
      'beat 05',
      'beat 1.5',
      'beat 3600001',
      'beat 5 x',
      'beat 5\n',
    ]) {
      bad(beat);
    }
    bad('beat 5000', ['stderr']);
    throwsReason(
      () =>
        parseExtension(Buffer.from(`have\n${'a'.repeat(64)} 11 644 a`), ['have'], {
          maxFileSize: 10,
        }),
      'limit-exceeded',
    );
  });
});

describe('tokens', () => {
  it('proves with HMAC-SHA256 over "rake/1 auth <nonce>" and never prints the secret', () => {
    const token = new Token('  s3cret\n');
    const nonce = '00112233445566778899aabbccddeeff';
    assert.equal(token.proof(nonce), authProof(Buffer.from('s3cret'), nonce));
    assert.ok(token.verify(nonce, token.proof(nonce)));
    assert.equal(token.verify(nonce, new Token('other').proof(nonce)), false);
    assert.equal(token.verify(nonce, 'abcd'), false);
    for (const shown of [String(token), JSON.stringify({ token }), inspect({ token })]) {
      assert.equal(shown.includes('s3cret'), false, shown);
    }
    assert.throws(() => new Token(' \n'));
  });

  it('loads from a file (trimmed), else from RAKE_TOKEN, and reports a readable file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rake-token-'));
    try {
      const file = join(dir, 'token');
      await writeFile(file, 'from-file\n');
      await chmod(file, 0o644);
      const loaded = await loadToken(file, { RAKE_TOKEN: 'from-env' });
      assert.equal(loaded?.token.proof('n'), new Token('from-file').proof('n'));
      assert.equal(loaded?.exposed, true);
      const env = await loadToken(undefined, { RAKE_TOKEN: 'from-env' });
      assert.equal(env?.token.proof('n'), new Token('from-env').proof('n'));
      assert.equal(await loadToken(undefined, {}), undefined);
      await assert.rejects(loadToken(join(dir, 'missing'), {}), /cannot read the token file/);
      await writeFile(file, '\n');
      await assert.rejects(loadToken(file, {}), /is empty/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('filestream modes (!M)', () => {
  it('applies the sender’s bits within the receiver’s umask, never special bits', () => {
    assert.equal(applicableMode(0o755, 0o644), 0o755);
    assert.equal(applicableMode(0o644, 0o644), 0o644);
    assert.equal(applicableMode(0o777, 0o644), 0o755);
    assert.equal(applicableMode(0o4755, 0o644), 0o755);
    assert.equal(applicableMode(0o755, 0o600), 0o700);
    assert.equal(applicableMode(0o600, 0o644), 0o600);
  });

  it('carries +x across a real socket', async () => {
    const src = await mkdtemp(join(tmpdir(), 'rake-mode-src-'));
    const dst = await mkdtemp(join(tmpdir(), 'rake-mode-dst-'));
    const server = createServer();
    try {
      await writeFile(join(src, 'tool'), '#!/bin/sh\n');
      await chmod(join(src, 'tool'), 0o750);
      await writeFile(join(src, 'data'), 'x');
      await chmod(join(src, 'data'), 0o640);
      await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
      const accepted = new Promise<Socket>((ok) => server.once('connection', ok));
      const a = connect((server.address() as { port: number }).port, '127.0.0.1');
      const b = await accepted;
      const files = ['tool', 'data'].map((name) => ({ name, path: join(src, name) }));
      const [sent, received] = await Promise.all([
        sendFilestream(a, new FramedReader(a), files, { modes: true }),
        receiveFilestream(new FramedReader(b), b, {
          resolve: (n) => prepareInside(dst, n),
          modes: true,
        }),
      ]);
      a.destroy();
      b.destroy();
      assert.deepEqual(
        sent.map((f) => f.mode),
        [0o750, 0o640],
      );
      assert.equal((await stat(join(dst, 'tool'))).mode & 0o100, 0o100, 'owner may execute');
      assert.equal((await stat(join(dst, 'data'))).mode & 0o111, 0, 'data stays non-executable');
      assert.equal(received[0]?.mode, (await stat(join(dst, 'tool'))).mode & 0o777);
    } finally {
      server.close();
      await rm(src, { recursive: true, force: true });
      await rm(dst, { recursive: true, force: true });
    }
  });
});
