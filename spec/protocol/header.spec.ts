import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  decodeHeader,
  decodeRequest,
  encodeHeader,
  encodePacket,
  expectFlagged,
  expectPlain,
  HEADER_SIZE,
  type Header,
  isProtocolError,
  PLAIN_CODES,
  ProtocolError,
  parseDecimal,
} from '../../src/protocol/index.js';

const text = (s: string) => Buffer.from(s.padEnd(64, ' '), 'latin1');

/** Asserts `fn` throws a ProtocolError with `reason` whose message mentions `fragment`. */
function throwsReason(fn: () => unknown, reason: string, fragment?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, String(err));
    assert.equal(err.reason, reason);
    if (fragment) assert.ok(err.message.includes(fragment), err.message);
    return true;
  });
}

describe('encodeHeader', () => {
  it('pads the plain layout to 64 bytes', () => {
    assert.equal(
      encodeHeader({ kind: 'plain', code: '!C', length: 7 }).toString('latin1'),
      `!C7${' '.repeat(61)}`,
    );
  });

  it('writes the flagged layout: !S, 3 flags, length', () => {
    const cases: Array<[string, number, string]> = [
      ['S  ', 3, '!SS  3'],
      ['SI ', 0, '!SSI 0'],
      ['SIF', 2, '!SSIF2'],
      ['!NF', 8, '!S!NF8'],
      ['!ZF', 2, '!S!ZF2'],
    ];
    for (const [flags, length, want] of cases) {
      const buf = encodeHeader({ kind: 'flagged', flags, length });
      assert.equal(buf.length, HEADER_SIZE);
      assert.equal(buf.toString('latin1').trimEnd(), want);
    }
  });

  it('refuses impossible headers', () => {
    assert.throws(() => encodeHeader({ kind: 'plain', code: '!C', length: -1 }), RangeError);
    assert.throws(() => encodeHeader({ kind: 'plain', code: '!C', length: 1.5 }), RangeError);
    assert.throws(() => encodeHeader({ kind: 'flagged', flags: 'S', length: 1 }), RangeError);
  });

  it('encodePacket counts the payload in bytes', () => {
    const p = encodePacket({ flags: 'S  ' }, 'hé\n');
    assert.equal(p.subarray(0, 64).toString('latin1').trimEnd(), '!SS  4');
    assert.equal(p.subarray(64).toString('utf8'), 'hé\n');
  });
});

describe('decodeHeader', () => {
  it('round-trips every valid header', () => {
    const header = fc.oneof(
      fc.record({
        kind: fc.constant('plain' as const),
        code: fc.constantFrom(...PLAIN_CODES),
        length: fc.integer({ min: 0, max: 2 ** 40 }),
      }),
      fc.record({
        kind: fc.constant('flagged' as const),
        flags: fc.stringMatching(/^[A-Z! ]{3}$/),
        length: fc.integer({ min: 0, max: 2 ** 40 }),
      }),
    );
    fc.assert(
      fc.property(header, (h: Header) => {
        assert.deepEqual(decodeHeader(encodeHeader(h)), { ...h });
      }),
    );
  });

  it('reads an all-space length as 0 and tolerates spaces around the length', () => {
    assert.deepEqual(decodeHeader(text('!E')), { kind: 'plain', code: '!E', length: 0 });
    assert.deepEqual(decodeHeader(text('!C  12')), { kind: 'plain', code: '!C', length: 12 });
  });

  it('names what was expected and what arrived', () => {
    throwsReason(() => decodeHeader(text('!Xabc')), 'unknown-code', '"!Xabc +59 spaces"');
    throwsReason(() => decodeHeader(text('!Cabc')), 'bad-length', 'non-numeric');
    throwsReason(() => decodeHeader(text('!C-1')), 'bad-length', 'negative');
    throwsReason(() => decodeHeader(text('!C0x10')), 'bad-length');
    throwsReason(() => decodeHeader(text('!C1e3')), 'bad-length');
    throwsReason(() => decodeHeader(text('!SS  1x')), 'bad-length');
    throwsReason(() => decodeHeader(text('!S123')), 'unknown-code');
    throwsReason(() => decodeHeader(text(`!C${'9'.repeat(40)}`)), 'length-too-large');
    throwsReason(() => decodeHeader(text('!C101'), { maxLength: 100 }), 'length-too-large', '100');
    throwsReason(() => decodeHeader(Buffer.from('!C1')), 'short-read', '64 header bytes');
  });

  it('never throws anything but a ProtocolError on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (bytes) => {
        try {
          decodeHeader(bytes);
        } catch (err) {
          assert.ok(isProtocolError(err), String(err));
        }
      }),
    );
  });
});

describe('requests, expectations and decimals', () => {
  it('decodes the three requests and refuses others', () => {
    assert.equal(decodeRequest(Buffer.from('!N')), '!N');
    throwsReason(() => decodeRequest(Buffer.from('!Q')), 'unknown-code', '"!Q"');
    throwsReason(() => decodeRequest(Buffer.from('!Z'), '!N'), 'unexpected-code', 'request !N');
  });

  it('expectPlain / expectFlagged name both sides', () => {
    const h = decodeHeader(text('!SSIF2'));
    assert.equal(expectFlagged(h, 'SIF').length, 2);
    throwsReason(() => expectPlain(h, '!C', '!E'), 'unexpected-code', 'a !C or !E header');
    throwsReason(() => expectFlagged(decodeHeader(text('!F3')), '!NF'), 'unexpected-code', '!F3');
  });

  it('parseDecimal accepts digits and refuses the rest', () => {
    assert.equal(parseDecimal(Buffer.from('67'), 'size'), 67);
    assert.equal(parseDecimal(' 5 ', 'cost'), 5);
    throwsReason(() => parseDecimal('-1', 'size'), 'bad-number', 'size as decimal digits');
    throwsReason(() => parseDecimal('', 'size'), 'bad-number');
    throwsReason(() => parseDecimal('12abc', 'size'), 'bad-number');
    throwsReason(() => parseDecimal('11', 'size', 10), 'limit-exceeded', 'at most 10');
  });
});
