// One server under two names is one host (issue 18, item 10): `localhost:P` beside
// `127.0.0.1:P` is not a second host for spreading, retries or the summary; and the summary
// counts actions per host, not attempts. Real servers on loopback, real child processes.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lastValueFrom } from 'rxjs';
import { distinctHosts } from '../../src/client/hosts.js';
import type { ServerHandle } from '../../src/server/index.js';
import { closeAll, only, project, removeDir, runAll, startServers, summary } from './support.js';

describe('one server under two names', { timeout: 60_000 }, () => {
  let p: ServerHandle;
  let q: ServerHandle;
  let dir = '';
  before(async () => {
    [p, q] = (await startServers(2)) as [ServerHandle, ServerHandle];
    dir = await project();
  });
  after(async () => {
    await closeAll([p, q]);
    await removeDir(dir);
  });

  it('spreads over servers, not names, and the summary names each server once', async () => {
    const text = `HOSTS = 127.0.0.1:${p.port} localhost:${p.port} 127.0.0.1:${q.port}\n\nall:\n${'\tremote-true\n'.repeat(4)}`;
    const events = await runAll(dir, text, { embedded: false, fallback: false });
    const s = summary(events);
    assert.equal(s.exitStatus, 0);
    assert.deepEqual(
      Object.keys(s.perHost).sort(),
      [`127.0.0.1:${p.port}`, `127.0.0.1:${q.port}`].sort(),
    );
    assert.equal(
      Object.values(s.perHost).reduce((a, b) => a + b, 0),
      4,
    );
    assert.deepEqual(s.aliases, [
      { host: `127.0.0.1:${p.port}`, alias: `localhost:${p.port}`, address: `127.0.0.1:${p.port}` },
    ]);
    // Nobody asked the second name.
    const asked = new Set(only(events, 'cost-polled').map((e) => e.cost.host));
    assert.ok(!asked.has(`localhost:${p.port}`), [...asked].join(' '));
  });

  it('does not "retry on another host" on the same server under its other name', async () => {
    const text = `HOSTS = 127.0.0.1:${p.port} localhost:${p.port}\n\nall:\n\tremote-sleep 30\n`;
    const events = await runAll(dir, text, {
      embedded: false,
      fallback: false,
      jobTimeoutMs: 500,
    });
    const chosen = only(events, 'host-chosen').map((e) => e.host);
    assert.deepEqual(chosen, [`127.0.0.1:${p.port}`]);
    const [failed] = only(events, 'action-failed');
    assert.equal(failed?.reason, 'host-lost', failed?.message);
    assert.equal(summary(events).exitStatus, 3);
  });

  it('counts a retried action once, on the host where it ended', async () => {
    // The first attempt (whichever host) hangs past the job timeout; the retry finishes.
    const flag = join(dir, 'first-attempt');
    const text = `HOSTS = 127.0.0.1:${p.port} 127.0.0.1:${q.port}\n\nall:\n\tremote-if mkdir ${flag} 2>/dev/null; then sleep 30; fi\n`;
    const events = await runAll(dir, text, {
      embedded: false,
      fallback: false,
      jobTimeoutMs: 1000,
    });
    const s = summary(events);
    assert.equal(s.exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
    assert.equal(s.retries, 1);
    const [ok] = only(events, 'action-succeeded');
    assert.deepEqual(s.perHost, { [ok?.host as string]: 1 });
  });
});

describe('distinctHosts', { timeout: 10_000 }, () => {
  it('merges names that share an address and port, keeping the first spelling', async () => {
    const lookup = async (h: string) =>
      ({ 'build-a': ['10.0.0.5'], 'build-a.lan': ['10.0.0.5', 'fd00::5'], other: ['10.0.0.6'] })[
        h
      ] ?? [];
    const result = await lastValueFrom(
      distinctHosts(
        [
          { host: 'build-a', port: 7001 },
          { host: '10.0.0.5', port: 7001 },
          { host: 'build-a.lan', port: 7001 },
          { host: 'build-a', port: 7002 },
          { host: 'other', port: 7001 },
          { host: 'nowhere', port: 7001 },
        ],
        { host: 'localhost', port: 6238 },
        lookup,
      ),
    );
    assert.deepEqual(
      result.hosts.map((e) => `${e.host}:${e.port}`),
      ['build-a:7001', 'build-a:7002', 'other:7001', 'nowhere:7001'],
    );
    assert.deepEqual(
      result.aliases.map((a) => `${a.alias}=${a.host}@${a.address}`),
      ['10.0.0.5:7001=build-a:7001@10.0.0.5:7001', 'build-a.lan:7001=build-a:7001@10.0.0.5:7001'],
    );
  });

  it('gives the local server the spelling of the listed host it is', async () => {
    const result = await lastValueFrom(
      distinctHosts(
        [{ host: '127.0.0.1', port: 6238 }],
        { host: 'localhost', port: 6238 },
        undefined,
      ),
    );
    assert.deepEqual(result.local, { host: '127.0.0.1', port: 6238 });
  });

  it('needs no lookup for IP literals and loopback names (synchronous)', () => {
    let seen: unknown;
    distinctHosts(
      [
        { host: 'localhost', port: 1 },
        { host: '127.0.0.1', port: 1 },
      ],
      { host: 'localhost', port: 2 },
      () => Promise.reject(new Error('must not be called')),
    ).subscribe((r) => {
      seen = r.hosts;
    });
    assert.deepEqual(seen, [{ host: 'localhost', port: 1 }]);
  });
});
