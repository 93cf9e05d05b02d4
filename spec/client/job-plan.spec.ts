// JobPlan (src/client/job-plan.ts): the talk to one server, planned once from what the host
// offered, as data; and what a grant short of the plan means (stale: start again).
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { planJob, staleFor } from '../../src/client/job-plan.js';
import { CACHE_MIN_BYTES, ContentHasher, type PeerInfo } from '../../src/client/negotiate.js';
import type { Extension } from '../../src/protocol/extensions.js';
import { Token } from '../../src/protocol/token.js';

const ours = (extensions: Extension[], authRequired = false): PeerInfo => ({
  kind: 'rake',
  protocol: 'rake/1',
  extensions,
  authRequired,
});
const ALL: Extension[] = ['stderr', 'mode', 'cache', 'queue', 'cwd', 'beat', 'push'];

describe('planJob', () => {
  let dir = '';
  let small = { name: 'a.c', path: '' };
  let large = { name: 'big.bin', path: '' };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'job-plan-'));
    small = { name: 'a.c', path: join(dir, 'a.c') };
    large = { name: 'big.bin', path: join(dir, 'big.bin') };
    await writeFile(small.path, 'int main(){}\n');
    await writeFile(large.path, Buffer.alloc(CACHE_MIN_BYTES + 1, 7));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const input = (over: Partial<Parameters<typeof planJob>[1]> = {}) => ({
    files: [small],
    cwd: undefined,
    token: undefined,
    cacheable: false,
    mayOfferEarly: true,
    hasher: new ContentHasher(),
    ...over,
  });

  it('base: a host that did not answer the offer gets the base protocol, whatever else holds', async () => {
    const plan = await planJob({ kind: 'base' }, input({ cacheable: true, cwd: 'sub' }));
    assert.deepEqual(plan, { kind: 'base', files: [small] });
  });

  it('pushed: push and mode, no token, nothing worth asking the cache', async () => {
    const plan = await planJob(ours(ALL), input());
    assert.deepEqual(plan, {
      kind: 'pushed',
      files: [small],
      cwd: undefined,
      queue: true,
      beats: true,
    });
  });

  it('extended-cache: a file worth a have goes behind the hello', async () => {
    const plan = await planJob(ours(ALL), input({ files: [small, large] }));
    assert.equal(plan.kind, 'extended-cache');
    assert.deepEqual(plan.kind === 'extended-cache' ? plan.offer.entries.map((e) => e.name) : [], [
      'big.bin',
    ]);
    // Without push, every file is worth listing.
    const noPush = await planJob(ours(['mode', 'cache']), input());
    assert.equal(noPush.kind, 'extended-cache');
  });

  it('extended: a token to prove, a host that wants one, a cacheable job, or a stale offer', async () => {
    for (const [peer, over] of [
      [ours(ALL), { token: new Token('secret') }],
      [ours(ALL, true), {}],
      [ours(ALL), { cacheable: true }],
      [ours(ALL), { mayOfferEarly: false }],
      [ours(['stderr']), {}],
    ] as const) {
      const plan = await planJob(peer, input(over));
      assert.equal(plan.kind, 'extended', JSON.stringify(over));
    }
    const plan = await planJob(ours(ALL), input({ cacheable: true }));
    assert.deepEqual(plan, { kind: 'extended', files: [small], cwd: undefined, lookup: true });
  });
});

describe('staleFor', () => {
  const files = [{ name: 'a', path: '/a' }];
  it('a grant short of what was sent on its promise is stale; base never is', () => {
    const granted = (...e: Extension[]) => new Set<Extension>(e);
    const pushed = { kind: 'pushed', files, cwd: undefined, queue: false, beats: false } as const;
    assert.equal(staleFor(pushed, granted('push', 'mode')), false);
    assert.equal(staleFor(pushed, granted('push')), true);
    const cached = {
      kind: 'extended-cache',
      files,
      cwd: 'sub',
      lookup: false,
      offer: { entries: [], message: new Uint8Array() },
    } as const;
    assert.equal(staleFor(cached, granted('cache', 'cwd')), false);
    assert.equal(staleFor(cached, granted('cwd')), true);
    assert.equal(staleFor(cached, granted('cache')), true);
    assert.equal(
      staleFor({ kind: 'extended', files, cwd: undefined, lookup: true }, granted()),
      false,
    );
    assert.equal(staleFor({ kind: 'base', files }, granted()), false);
  });
});
