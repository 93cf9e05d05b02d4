// The run's summary accounts for every action: actions = succeeded + failed + cancelled +
// skipped, whatever mix of outcomes a run has — real runs against a loopback server, with
// actions that succeed, fail, or miss a requirement (which stops their whole actionset
// before anything is sent), with and without --fail-fast.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { ServerHandle } from '../../src/server/index.js';
import { closeAll, project, removeDir, runAll, startServers, summary } from '../client/support.js';

type Kind = 'ok' | 'fail' | 'missing';

const LINE: Record<Kind, string> = {
  ok: '\tremote-echo ok',
  fail: '\tremote-exit 3',
  missing: '\tremote-cat absent.txt\n\t\trequires absent.txt',
};

function rakefileText(port: number, sets: readonly (readonly Kind[])[]): string {
  const body = sets.map((kinds, i) => [`s${i}:`, ...kinds.map((k) => LINE[k])].join('\n'));
  return [`PORT = ${port}`, `HOSTS = 127.0.0.1:${port}`, '', ...body, ''].join('\n');
}

describe('the run summary counts every action once', { timeout: 120_000 }, () => {
  let servers: ServerHandle[] = [];
  let dir = '';
  let port = 0;
  before(async () => {
    servers = await startServers(1, { maxJobs: 4 });
    port = servers[0]?.port ?? 0;
    dir = await project({});
  });
  after(async () => {
    await closeAll(servers);
    await removeDir(dir);
  });

  it('a missing requirement in an actionset of 3: the other two are not started', async () => {
    const s = summary(await runAll(dir, rakefileText(port, [['ok', 'missing', 'ok']])));
    assert.deepEqual(
      { ...s, perHost: undefined, ms: undefined },
      {
        actionsets: 1,
        actionsetsRun: 1,
        actions: 3,
        succeeded: 0,
        failed: 1,
        cancelled: 0,
        skipped: 2,
        retries: 0,
        fallbacks: 0,
        perHost: undefined,
        ms: undefined,
        exitStatus: 1,
      },
    );
  });

  it('actions = succeeded + failed + cancelled + skipped, for every outcome mix', async () => {
    const kind = fc.constantFrom<Kind>('ok', 'ok', 'fail', 'missing');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(kind, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        async (sets, failFast) => {
          const s = summary(await runAll(dir, rakefileText(port, sets), { failFast }));
          const total = sets.reduce((n, k) => n + k.length, 0);
          assert.equal(s.actions, total);
          assert.equal(s.succeeded + s.failed + s.cancelled + s.skipped, total, JSON.stringify(s));
          // Nothing after the first actionset with a failure starts.
          const firstBad = sets.findIndex((k) => k.some((x) => x !== 'ok'));
          const after =
            firstBad < 0 ? 0 : sets.slice(firstBad + 1).reduce((n, k) => n + k.length, 0);
          assert.ok(s.skipped >= after, JSON.stringify(s));
          assert.equal(s.exitStatus, firstBad < 0 ? 0 : 1);
        },
      ),
      { numRuns: 25 },
    );
  });
});
