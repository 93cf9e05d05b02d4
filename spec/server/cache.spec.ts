// The server's input cache (extension `cache`): real files in temp dirs, concurrent use.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { InputCache } from '../../src/server/cache.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { startServer, type TestServer } from './support.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const silent = pino({ level: 'silent' });

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'rake-cache-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A source file with `size` bytes of `fill`, and its hash. */
async function source(name: string, size: number, fill: number) {
  const content = Buffer.alloc(size, fill);
  const path = join(root, name);
  await writeFile(path, content);
  return { path, content, sha256: sha256(content), size };
}

describe('InputCache', () => {
  it('inserts only bytes that hash to the claim; materializes a private, read-write copy', async () => {
    const cache = await InputCache.open(join(root, 'c1'), 10_000, silent);
    const a = await source('a', 100, 1);
    const b = await source('b', 100, 2);
    assert.equal(await cache.insert(a.sha256, 100, b.path), 'mismatch');
    assert.equal(await cache.insert(a.sha256, 99, a.path), 'wrong-size');
    assert.equal(cache.has(a.sha256), false);
    assert.equal(await cache.insert(a.sha256, 100, a.path), 'inserted');
    assert.equal(await cache.insert(a.sha256, 100, a.path), 'present');
    const lease = await cache.lease(a.sha256, 100, 0);
    assert.ok(lease);
    const dest = join(root, 'a-copy');
    await cache.materialize(lease, dest, 0o755);
    lease.release();
    assert.deepEqual(await readFile(dest), a.content);
    assert.equal((await stat(dest)).mode & 0o111, 0o111, 'the wire mode is applied');
    // The job's copy is its own: changing it leaves the cache intact.
    await writeFile(dest, 'changed in place');
    const again = await cache.lease(a.sha256, 100, 0);
    assert.ok(again);
    assert.deepEqual(await readFile(again.path), a.content);
    again.release();
    assert.equal(await cache.lease(a.sha256, 101, 0), undefined, 'size must match too');
    // Nothing but entries is left in the directory.
    assert.deepEqual(await readdir(cache.dir), [a.sha256]);
  });

  it('evicts least recently used entries to stay within its size, never a leased one', async () => {
    const cache = await InputCache.open(join(root, 'c2'), 300, silent);
    const files = await Promise.all([1, 2, 3, 4].map((i) => source(`e${i}`, 100, i)));
    const [f1, f2, f3, f4] = files as [
      (typeof files)[0],
      (typeof files)[0],
      (typeof files)[0],
      (typeof files)[0],
    ];
    for (const f of [f1, f2, f3])
      assert.equal(await cache.insert(f.sha256, 100, f.path), 'inserted');
    // Use f1, so f2 is now the least recently used; pin f2 to keep it anyway.
    (await cache.lease(f1.sha256, 100, 0))?.release();
    const pinned = await cache.lease(f2.sha256, 100, 0);
    assert.ok(pinned);
    assert.equal(await cache.insert(f4.sha256, 100, f4.path), 'inserted');
    assert.deepEqual(
      [f1, f2, f3, f4].map((f) => cache.has(f.sha256)),
      [true, true, false, true],
    );
    assert.ok(cache.stats().bytes <= 300);
    pinned.release();
    const big = await source('big', 301, 9);
    assert.equal(await cache.insert(big.sha256, 301, big.path), 'no-room');
    assert.equal(cache.stats().evictions, 1);
  });

  it('keeps a concurrent materialize safe from eviction and concurrent inserts consistent', async () => {
    const cache = await InputCache.open(join(root, 'c3'), 1024 * 1024, silent);
    const shared = await source('shared', 256 * 1024, 5);
    const results = await Promise.all(
      Array.from({ length: 8 }, () => cache.insert(shared.sha256, shared.size, shared.path)),
    );
    assert.equal(results.filter((r) => r === 'inserted').length, 1);
    assert.ok(results.every((r) => r === 'inserted' || r === 'present'));
    const others = await Promise.all([6, 7, 8, 9].map((i) => source(`o${i}`, 256 * 1024, i)));
    // Eight jobs copy the shared entry while four inserts push the cache past its bound.
    const copies = Array.from({ length: 8 }, async (_, i) => {
      const lease = await cache.lease(shared.sha256, shared.size, 0);
      assert.ok(lease);
      try {
        await cache.materialize(lease, join(root, `copy-${i}`));
      } finally {
        lease.release();
      }
    });
    const inserts = others.map((o) => cache.insert(o.sha256, o.size, o.path));
    await Promise.all([...copies, ...inserts]);
    for (let i = 0; i < 8; i++) {
      assert.deepEqual(await readFile(join(root, `copy-${i}`)), shared.content);
    }
    assert.ok(cache.stats().bytes <= 1024 * 1024);
  });

  it('reopens with the entries a previous server left, and drops temporary files', async () => {
    const dir = join(root, 'c4');
    const first = await InputCache.open(dir, 10_000, silent);
    const f = await source('kept', 50, 3);
    await first.insert(f.sha256, 50, f.path);
    await writeFile(join(dir, '.junk.tmp-123'), 'partial');
    const second = await InputCache.open(dir, 10_000, silent);
    assert.ok(second.has(f.sha256));
    assert.deepEqual(await readdir(dir), [f.sha256]);
  });
});

describe('rakeserver with a small --cache-size', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ cacheSize: 3000 });
  });
  after(async () => {
    await server.close();
  });

  /** One job: hello, have `file`, upload it if needed; resolves whether it was needed. */
  async function job(name: string, content: Buffer): Promise<boolean> {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=cache'));
    await peer.expect(pkt('!X', 'ok ext=cache'));
    await peer.send(pkt('!X', `have\n${sha256(content)} ${content.length} 644 ${name}`));
    const head = await peer.header();
    const answer = (await peer.read(Number(head.slice(2)))).toString();
    const needed = answer === `need\n${name}`;
    assert.ok(needed || answer === 'need', answer);
    if (needed) {
      await peer.send(hdr('!R0'), hdr('!SSIF1'));
      await peer.serveFile(name, content);
    }
    await peer.send(pkt('!C', `test -s ${name}`));
    await peer.header();
    await peer.send(hdr('!D0'));
    await peer.readToEnd();
    return needed;
  }

  it('evicts the oldest input once the inputs outgrow it', async () => {
    const inputs = [1, 2, 3, 4].map((i) => Buffer.alloc(1000, i));
    const [in1, in2, in3, in4] = inputs as [Buffer, Buffer, Buffer, Buffer];
    assert.equal(await job('in1', in1), true);
    assert.equal(await job('in1', in1), false, 'cached after one upload');
    assert.equal(await job('in2', in2), true);
    assert.equal(await job('in3', in3), true);
    assert.equal(await job('in4', in4), true);
    assert.equal(await job('in4', in4), false);
    assert.equal(await job('in1', in1), true, 'in1 was evicted to make room for in4');
    assert.ok((server.handle.cache?.stats().bytes ?? Infinity) <= 3000);
  });
});
