/**
 * Fuzzes rakeserver's input (scripts/fuzz/server-fuzz.ts): a bounded run for CI. The
 * standalone runner does 10 000+ sessions (docs/reliability.md). Override with
 * RAKE_FUZZ_SESSIONS and RAKE_FUZZ_SEED; a failure names the seed that replays it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuzzServer } from '../../scripts/fuzz/server-fuzz.js';

const SESSIONS = Number(process.env.RAKE_FUZZ_SESSIONS ?? 600);
const SEED = Number(process.env.RAKE_FUZZ_SEED ?? 20_251_127);
const TIME_LIMIT_MS = 75_000;

describe('server fuzzing', { timeout: TIME_LIMIT_MS + 45_000 }, () => {
  it(`survives ${SESSIONS} random and mutated sessions, and keeps serving after each`, async (t) => {
    const report = await fuzzServer({
      sessions: SESSIONS,
      seed: SEED,
      concurrency: 8,
      timeLimitMs: TIME_LIMIT_MS,
      log: (line) => t.diagnostic(line),
    });
    const show = (counts: Record<string, number>) => JSON.stringify(counts);
    t.diagnostic(`seed ${report.seed}: ${report.sessions} sessions in ${report.ms} ms`);
    t.diagnostic(`generators ${show(report.generators)} endings ${show(report.endings)}`);
    t.diagnostic(`outcomes ${show(report.outcomes)} refusals ${show(report.refusals)}`);
    t.diagnostic(
      `jobs ${report.jobs}, exact replies ${report.exactReplies}, peak RSS ${report.peakRssMiB} MiB`,
    );

    const replay = `replay: node --import tsx scripts/fuzz/server.ts --seed ${SEED} --sessions ${SESSIONS}`;
    assert.deepEqual(report.findings, [], replay);
    // The time limit may cut a slow run short, but never below a meaningful count.
    assert.ok(report.sessions >= Math.min(SESSIONS, 300), `only ${report.sessions} sessions ran`);
    assert.equal(report.followUps, report.sessions, 'a follow-up request failed');
    // The generators reached every path they aim at.
    for (const g of ['random', 'valid', 'mutated', 'packets']) {
      assert.ok((report.generators[g] ?? 0) > 0, `no ${g} sessions`);
    }
    for (const o of ['ok', 'refused', 'vanished']) {
      assert.ok((report.outcomes[o] ?? 0) > 0, `no connection ended ${o}`);
    }
    for (const r of ['unknown-code', 'bad-length', 'unexpected-code', 'bad-name']) {
      assert.ok((report.refusals[r] ?? 0) > 0, `no ${r} refusal`);
    }
    assert.ok(report.exactReplies > 0, 'no valid transcript was answered exactly');
  });
});
