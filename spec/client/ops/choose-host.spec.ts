// Operator chooseHost (src/client/ops/choose-host.ts): a pure fold of the poll's answers,
// then pickHost: the lowest effective cost, ties to the first answer, this client's own
// jobs counted, slow hosts as a last resort.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { map } from 'rxjs';
import {
  type Ballot,
  type ChoiceView,
  chooseHost,
  countAnswer,
  EMPTY_BALLOT,
  pickHost,
} from '../../../src/client/ops/choose-host.js';
import type { CostResult } from '../../../src/client/poll.js';
import type { HostLoad } from '../../../src/client/select.js';
import { scheduler } from './support.js';

const IDLE: HostLoad = { inFlight: 0, sincePoll: 0 };

function answer(host: string, cost: number): CostResult {
  return { ok: true, host, endpoint: { host, port: 1 }, cost, rttMs: 1 };
}
function slow(host: string): CostResult {
  return {
    ok: false,
    host,
    endpoint: { host, port: 1 },
    error: 'no answer within 5 ms',
    rttMs: 5,
    failure: 'slow',
    trouble: 'timed-out',
  };
}

const view = (loads: Record<string, HostLoad> = {}, exclude: string[] = []): ChoiceView => ({
  load: (h) => loads[h] ?? IDLE,
  exclude: new Set(exclude),
});

const fold = (results: CostResult[], v: ChoiceView): Ballot =>
  results.reduce((b, r) => countAnswer(b, r, v), EMPTY_BALLOT);

const pick = (b: Ballot, v: ChoiceView, fresh = true, inFlight: Record<string, number> = {}) =>
  pickHost(b, v, { fresh, attempt: 1, inFlight: (h) => inFlight[h] ?? 0 });

describe('chooseHost (marbles)', () => {
  it('folds each answer as it arrives, with its effective cost, and says when one is idle', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const answers = cold('-a--b-c|', { a: answer('a', 2), b: slow('b'), c: answer('c', 0) });
      // a carries one of our jobs sent after the poll went out: 2 + 1.
      const v = view({ a: { inFlight: 1, sincePoll: 1 } });
      const ballots = answers.pipe(
        chooseHost(v),
        map(
          (b) =>
            `${b.seen.map((s) => `${s.host}:${s.effectiveCost ?? s.error}`).join(' ')}${b.idle ? ' idle' : ''}`,
        ),
      );
      expectObservable(ballots).toBe('-A--B-C|', {
        A: 'a:3',
        B: 'a:3 b:no answer within 5 ms',
        C: 'a:3 b:no answer within 5 ms c:0 idle',
      });
    });
  });

  it('a tie goes to the host that answered first', () => {
    const b = fold([answer('b', 1), answer('a', 1), answer('c', 2)], view());
    assert.deepEqual(pick(b, view()), {
      host: 'b',
      effectiveCost: 1,
      reason: 'tie-first-answer',
      endpoint: { host: 'b', port: 1 },
    });
  });

  it("counts this client's own jobs: the cheaper answer loses to an idle host", () => {
    const v = view({ a: { inFlight: 2, sincePoll: 0 } });
    const b = fold([answer('a', 0), answer('b', 1)], v);
    assert.equal(pick(b, v)?.host, 'b');
    assert.equal(pick(b, v)?.reason, 'cheapest');
    // Without those jobs, a would win.
    assert.equal(pick(b, view())?.host, 'a');
  });

  it('a later answer from a host replaces its cost and keeps its place (latest loads)', () => {
    const b = fold([answer('a', 5), answer('b', 1), answer('a', 1)], view());
    assert.deepEqual(b.answers, [
      { host: 'a', cost: 1 },
      { host: 'b', cost: 1 },
    ]);
    assert.equal(pick(b, view())?.host, 'a');
  });

  it('leaves out excluded hosts; with none left, a fresh poll takes the least-loaded slow host', () => {
    const v = view({}, ['a']);
    const b = fold([answer('a', 0), slow('b'), slow('c')], v);
    assert.deepEqual(pick(b, v, true, { b: 2, c: 1 }), {
      host: 'c',
      effectiveCost: 1,
      reason: 'slow-host',
      endpoint: { host: 'c', port: 1 },
    });
    // A used-up ballot (a retry's) never takes a slow host: the caller polls again.
    assert.equal(pick(b, v, false, { b: 2, c: 1 }), undefined);
  });

  it('is pure: folding leaves the earlier ballot as it was', () => {
    const first = fold([answer('a', 1)], view());
    const copy = JSON.stringify({ ...first, endpoints: [...first.endpoints] });
    countAnswer(first, answer('b', 0), view());
    assert.equal(JSON.stringify({ ...first, endpoints: [...first.endpoints] }), copy);
  });

  it('folds an answer in O(1): the new ballot keeps the earlier one, never a copy of its arrays', () => {
    // 64 hosts used to cost O(hosts²) per action: every answer copied answers, seen and the
    // endpoint map. The ballot is a persistent list now; what a choice reads is built on demand.
    const hosts = Array.from({ length: 64 }, (_, i) => `h${i}`);
    let b = EMPTY_BALLOT;
    for (const h of hosts) {
      const next = countAnswer(b, h === 'h7' ? slow(h) : answer(h, 3), view());
      assert.equal(next.before, b);
      b = next;
    }
    assert.equal(b.seen.length, 64);
    assert.deepEqual(b.slow, ['h7']);
    assert.deepEqual(
      b.answers.map((a) => a.host),
      hosts.filter((h) => h !== 'h7'),
    );
    assert.deepEqual([...b.endpoints.keys()], hosts);
  });

  it('a slow host that answers later keeps its place among the endpoints and joins the answers', () => {
    const b = fold([slow('b'), answer('a', 2), answer('b', 1)], view());
    assert.deepEqual([...b.endpoints.keys()], ['b', 'a']);
    assert.deepEqual(b.answers, [
      { host: 'a', cost: 2 },
      { host: 'b', cost: 1 },
    ]);
    assert.deepEqual(b.slow, ['b']);
    assert.deepEqual(
      b.seen.map((s) => s.host),
      ['b', 'a', 'b'],
    );
    assert.equal(b.last?.host, 'b');
    assert.equal(pick(b, view())?.host, 'b');
  });
});
