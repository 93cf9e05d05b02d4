// `!X watch` and `!X load` (extension `load`, docs/protocol.md): encoding and what a parser
// refuses or ignores.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeExtensionPayload, parseExtension } from '../../src/protocol/index.js';

const parse = (text: string) => parseExtension(Buffer.from(text, 'latin1'));

describe('extension load messages', () => {
  it('encodes and parses a load', () => {
    const load = { verb: 'load', jobs: 3, running: 2, queued: 1, slots: 2, beatMs: 5000 } as const;
    const bytes = encodeExtensionPayload(load);
    assert.equal(bytes.toString(), 'load jobs=3 running=2 queued=1 slots=2 beat=5000');
    assert.deepEqual(parseExtension(bytes), load);
    assert.deepEqual(parse('watch'), { verb: 'watch' });
  });

  it('says a --cost-offset only when it is not 0; a load without one has offset 0', () => {
    const dear = {
      verb: 'load',
      jobs: 0,
      running: 0,
      queued: 0,
      slots: 1,
      beatMs: 10,
      offset: 7,
    } as const;
    const bytes = encodeExtensionPayload(dear);
    assert.equal(bytes.toString(), 'load jobs=0 running=0 queued=0 slots=1 beat=10 offset=7');
    assert.deepEqual(parseExtension(bytes), dear);
    const plain = encodeExtensionPayload({ ...dear, offset: 0 });
    assert.equal(plain.toString(), 'load jobs=0 running=0 queued=0 slots=1 beat=10');
    assert.equal((parseExtension(plain) as { offset?: number }).offset, undefined);
    assert.throws(() => parse('load jobs=0 running=0 queued=0 slots=1 beat=10 offset=-1'), {
      reason: 'bad-extension',
    });
  });

  it('ignores keys it does not know, in any order', () => {
    assert.deepEqual(parse('load beat=10 slots=1 later=x queued=0 running=0 jobs=0'), {
      verb: 'load',
      jobs: 0,
      running: 0,
      queued: 0,
      slots: 1,
      beatMs: 10,
    });
  });

  for (const bad of [
    'load jobs=1 running=1 queued=0 slots=2',
    'load jobs=1 jobs=1 running=1 queued=0 slots=2 beat=5',
    'load jobs=-1 running=1 queued=0 slots=2 beat=5',
    'load jobs=01 running=1 queued=0 slots=2 beat=5',
    'load jobs=1 running=1 queued=0 slots=0 beat=5',
    'load jobs=1 running=1 queued=0 slots=2 beat=0',
    'load jobs=1 running=1 queued=0 slots=2 beat=3600001',
    'load jobs=1 running=1 queued=0 slots=2 beat=5\n',
    'watch now',
  ]) {
    it(`refuses ${JSON.stringify(bad)}`, () => {
      assert.throws(() => parse(bad), { reason: 'bad-extension' });
    });
  }
});
