// The fuzzers' mutation engine (scripts/fuzz/transcript.ts) must itself never crash: a crash
// there ends a fuzz run before any server or client is tried (seed 3 did, at session ~300).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyMutations, type Mutation, OPS, type Piece } from '../../scripts/fuzz/transcript.js';

const piece = (kind: Piece['kind'], text: string): Piece => ({
  kind,
  bytes: Buffer.from(text, 'latin1'),
});
const m = (op: Mutation['op'], a = 0, b = 0): Mutation => ({ op, a, b, junk: Uint8Array.of(7) });
const sources = { splices: [], names: [Buffer.from('x')], junk: (b: Uint8Array) => Buffer.from(b) };

describe('fuzz mutations', () => {
  it('a duplicate after a delete that emptied the transcript yields empty bytes, not a crash', () => {
    const base = [piece('request', '!E0'), piece('junk', 'zz')];
    const out = applyMutations(base, [m('delete', 0, 1), m('duplicate', 3), m('flip', 1)], sources);
    assert.equal(out.length, 0);
  });

  it('every operation applies to an empty transcript', () => {
    for (const op of OPS) {
      assert.doesNotThrow(() => applyMutations([], [m('delete'), m(op, 5, 3)], sources), op);
    }
  });
});
