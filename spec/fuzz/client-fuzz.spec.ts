/**
 * Fuzzes what the client reads from a hostile server (scripts/fuzz/client-fuzz.ts): a
 * bounded run for CI; the standalone runner does 10 000+ sessions (docs/reliability.md).
 * Override with RAKE_FUZZ_SESSIONS and RAKE_FUZZ_SEED; a failure names the seed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuzzClient, SESSION_BOUND_MS } from '../../scripts/fuzz/client-fuzz.js';

const SESSIONS = Number(process.env.RAKE_FUZZ_SESSIONS ?? 1500);
const SEED = Number(process.env.RAKE_FUZZ_SEED ?? 20_251_127);
const TIME_LIMIT_MS = 60_000;

describe('client fuzzing', { timeout: TIME_LIMIT_MS + SESSION_BOUND_MS + 30_000 }, () => {
  it(`survives ${SESSIONS} hostile replies: no hang, no escape, one outcome each`, async (t) => {
    const report = await fuzzClient({
      sessions: SESSIONS,
      seed: SEED,
      concurrency: 16,
      timeLimitMs: TIME_LIMIT_MS,
      log: (line) => t.diagnostic(line),
    });
    t.diagnostic(`seed ${report.seed}: ${report.sessions} sessions in ${report.ms} ms`);
    t.diagnostic(`generators ${JSON.stringify(report.generators)}`);
    t.diagnostic(`results ${JSON.stringify(report.results)}`);
    t.diagnostic(`exact outcomes ${report.exactOutcomes}, slowest session ${report.slowestMs} ms`);

    const replay = `replay: node --import tsx scripts/fuzz/client.ts --seed ${SEED} --sessions ${SESSIONS}`;
    assert.deepEqual(report.findings, [], replay);
    assert.ok(report.sessions >= Math.min(SESSIONS, 500), `only ${report.sessions} sessions ran`);
    assert.ok(report.slowestMs < SESSION_BOUND_MS);
    for (const g of ['valid', 'mutated', 'random', 'cost', 'extended', 'extended-mutated']) {
      assert.ok((report.generators[g] ?? 0) > 0, `no ${g} sessions`);
    }
    // Every way an action can end against a hostile server was reached.
    for (const r of [
      'succeeded',
      'failed:exit-non-zero',
      'failed:protocol-error',
      'failed:bad-output',
      'failed:host-lost',
      'failed:timeout',
      'failed:no-host',
    ]) {
      assert.ok((report.results[r] ?? 0) > 0, `no action ended ${r}`);
    }
    assert.ok(report.exactOutcomes > 0, 'no valid reply gave its exact outcome');
  });
});
