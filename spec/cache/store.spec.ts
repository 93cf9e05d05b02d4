// The local action cache (issue 21): hit, miss, damaged entries (a miss, removed, logged),
// the LRU bound, and two client processes writing one directory at once.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type CacheEntry, defaultCacheDir, LocalCache } from '../../src/cache/store.js';

const T = { timeout: 60_000 };
const key = (n: number) => n.toString(16).padStart(64, '0');

function fresh(): string {
  return mkdtempSync(join(tmpdir(), 'rake-cache-spec-'));
}

const ENTRY: CacheEntry = {
  stdout: Buffer.from('49\n'),
  files: [
    { name: 'program', mode: 0o755, bytes: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 0xff]) },
    { name: 'obj/square.o', mode: 0o644, bytes: Buffer.from('object') },
    { name: 'empty', mode: 0o600, bytes: Buffer.alloc(0) },
  ],
};

function entryPath(dir: string, k: string): string {
  return join(dir, 'entries', k.slice(0, 2), k);
}

describe('local action cache', () => {
  it('misses an unknown key, then hits with the stored bytes and modes', T, async () => {
    const dir = fresh();
    try {
      const cache = new LocalCache(dir);
      assert.equal(cache.get(key(1)), undefined);
      assert.equal(cache.put(key(1), ENTRY), true);
      const got = cache.get(key(1));
      assert.ok(got);
      assert.deepEqual(got.stdout, ENTRY.stdout);
      assert.deepEqual(
        got.files.map((f) => [f.name, f.mode, f.bytes.toString('hex')]),
        ENTRY.files.map((f) => [f.name, f.mode, f.bytes.toString('hex')]),
      );
      // Another client on the same directory sees it; nothing is left in tmp/.
      assert.ok(new LocalCache(dir).get(key(1)));
      assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  for (const [what, damage, reason] of [
    [
      'a flipped byte',
      (b: Buffer) => {
        const c = Buffer.from(b);
        c[c.length - 3] = (c[c.length - 3] as number) ^ 1;
        return c;
      },
      /content does not match its SHA-256/,
    ],
    ['a truncated file', (b: Buffer) => b.subarray(0, b.length - 2), /truncated/],
    ['bytes appended', (b: Buffer) => Buffer.concat([b, Buffer.from('x')]), /1 bytes past the end/],
    ['garbage', () => Buffer.from('not an entry at all'), /no header/],
    ['a header that is not JSON', () => Buffer.from('{oops\n'), /not JSON/],
  ] as const) {
    it(`takes ${what} as a miss, removes it and logs it`, T, async () => {
      const dir = fresh();
      try {
        const logged: string[] = [];
        const cache = new LocalCache(dir, undefined, (m) => logged.push(m));
        cache.put(key(2), ENTRY);
        const path = entryPath(dir, key(2));
        writeFileSync(path, damage(readFileSync(path)));
        assert.equal(cache.get(key(2)), undefined);
        assert.equal(existsSync(path), false, 'the damaged entry is removed');
        assert.equal(logged.length, 1);
        assert.match(logged[0] as string, reason);
        assert.ok((logged[0] as string).includes(path), 'the message names the file');
        // The next write stores it again.
        cache.put(key(2), ENTRY);
        assert.ok(cache.get(key(2)));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it(
    "keeps a success's stderr (its warnings) with the entry, verified like the rest",
    T,
    async () => {
      const dir = fresh();
      try {
        const logged: string[] = [];
        const cache = new LocalCache(dir, undefined, (m) => logged.push(m));
        const warned: CacheEntry = { ...ENTRY, stderr: Buffer.from('u.c:1: warning: unused\n') };
        cache.put(key(5), warned);
        assert.deepEqual(cache.get(key(5))?.stderr, warned.stderr);
        assert.deepEqual(cache.get(key(5))?.stdout, ENTRY.stdout);
        // None written: none read back.
        cache.put(key(6), ENTRY);
        assert.equal(cache.get(key(6))?.stderr, undefined);
        // A flipped byte of the stderr is damage like any other.
        const path = entryPath(dir, key(5));
        const bytes = readFileSync(path);
        const at = bytes.indexOf('warning');
        bytes[at] = (bytes[at] as number) ^ 1;
        writeFileSync(path, bytes);
        assert.equal(cache.get(key(5)), undefined);
        assert.match(logged[0] as string, /stderr: content does not match its SHA-256/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it('still reads an entry of format 1 (before the stderr was stored)', T, async () => {
    const dir = fresh();
    try {
      const cache = new LocalCache(dir);
      const stdout = Buffer.from('old\n');
      const file = Buffer.from('bytes');
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const header = {
        format: 'rake-ts-cache-entry/1',
        key: key(7),
        stdout: { size: stdout.length, sha256: sha(stdout) },
        files: [{ name: 'f', mode: 0o640, size: file.length, sha256: sha(file) }],
      };
      mkdirSync(join(dir, 'entries', key(7).slice(0, 2)), { recursive: true });
      writeFileSync(
        entryPath(dir, key(7)),
        Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), stdout, file]),
      );
      const got = cache.get(key(7));
      assert.deepEqual(got?.stdout, stdout);
      assert.equal(got?.stderr, undefined);
      assert.deepEqual(
        got?.files.map((f) => [f.name, f.mode, f.bytes.toString()]),
        [['f', 0o640, 'bytes']],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it(
    'putAsync stores as put does, off the event loop; a failure is logged, not thrown',
    T,
    async () => {
      const dir = fresh();
      try {
        const logged: string[] = [];
        const cache = new LocalCache(dir, undefined, (m) => logged.push(m));
        const stores = [1, 2, 3].map((n) =>
          cache.putAsync(key(n), { ...ENTRY, stdout: Buffer.from(`${n}\n`) }),
        );
        assert.deepEqual(await Promise.all(stores), [true, true, true]);
        assert.deepEqual(new LocalCache(dir).get(key(2))?.stdout, Buffer.from('2\n'));
        assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
        cache.flush();
        const sizes = [1, 2, 3].reduce(
          (n, k) => n + readFileSync(entryPath(dir, key(k))).length,
          0,
        );
        assert.equal(readFileSync(join(dir, 'entries', 'size'), 'utf8'), `${sizes}\n`);
        // Its directory replaced by a file: not stored, said, and the next store works again.
        await rm(join(dir, 'tmp'), { recursive: true });
        writeFileSync(join(dir, 'tmp'), 'in the way');
        assert.equal(await cache.putAsync(key(4), ENTRY), false);
        assert.match(logged[0] as string, /could not be written/);
        await rm(join(dir, 'tmp'));
        assert.equal(await cache.putAsync(key(4), ENTRY), true);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it('an entry copied under another key is a miss', T, async () => {
    const dir = fresh();
    try {
      const logged: string[] = [];
      const cache = new LocalCache(dir, undefined, (m) => logged.push(m));
      cache.put(key(3), ENTRY);
      cache.put(key(4), { stdout: Buffer.from('other'), files: [] });
      writeFileSync(entryPath(dir, key(4)), readFileSync(entryPath(dir, key(3))));
      assert.equal(cache.get(key(4)), undefined);
      assert.match(logged[0] as string, /stored under another key/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps a tally of its bytes, so a run that stores does not stat every entry', T, async () => {
    const dir = fresh();
    try {
      const tally = join(dir, 'entries', 'size');
      const onDisk = () =>
        [1, 2, 3, 4, 5, 6]
          .filter((n) => existsSync(entryPath(dir, key(n))))
          .reduce((sum, n) => sum + readFileSync(entryPath(dir, key(n))).length, 0);
      const one = (n: number): CacheEntry => ({ stdout: Buffer.alloc(100, n), files: [] });
      const cache = new LocalCache(dir);
      cache.put(key(1), one(1));
      cache.put(key(2), one(2));
      cache.flush(); // (also at the process's exit, and when 1 % of the bound is pending)
      assert.equal(readFileSync(tally, 'utf8'), `${onDisk()}\n`, 'counted, then kept');
      // Another client reads the tally and adds to it: it does not count the entries again.
      writeFileSync(tally, '1000\n');
      const other = new LocalCache(dir);
      other.put(key(3), one(3));
      other.flush();
      assert.equal(
        readFileSync(tally, 'utf8'),
        `${1000 + readFileSync(entryPath(dir, key(3))).length}\n`,
      );
      // A tally that cannot be read is counted again from the entries.
      writeFileSync(tally, 'garbage');
      const third = new LocalCache(dir);
      third.put(key(4), one(4));
      third.flush();
      assert.equal(readFileSync(tally, 'utf8'), `${onDisk()}\n`);
      // A damaged entry removed on read leaves the tally.
      const path = entryPath(dir, key(4));
      const bytes = readFileSync(path);
      const size = bytes.length;
      bytes[size - 1] = (bytes[size - 1] as number) ^ 1; // a flipped byte: same size
      writeFileSync(path, bytes);
      const before = Number(readFileSync(tally, 'utf8'));
      assert.equal(cache.get(key(4)), undefined);
      cache.flush();
      assert.equal(Number(readFileSync(tally, 'utf8')), before - size);
      // A tally over the bound makes the next write evict, by a count of the entries.
      const bounded = new LocalCache(dir, onDisk() * 10);
      writeFileSync(tally, `${onDisk() * 100}\n`);
      bounded.put(key(5), one(5));
      assert.ok(existsSync(entryPath(dir, key(5))));
      assert.equal(readFileSync(tally, 'utf8'), `${onDisk()}\n`, 'recounted');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps within --cache-size, dropping the least recently used first', T, async () => {
    const dir = fresh();
    try {
      const one = (n: number): CacheEntry => ({ stdout: Buffer.alloc(1000, n), files: [] });
      // An entry's size on disk: the header plus 1000 bytes of stdout.
      new LocalCache(dir).put(key(0), one(0));
      const size = readFileSync(entryPath(dir, key(0))).length;
      await rm(join(dir, 'entries'), { recursive: true });
      const cache = new LocalCache(dir, size * 4 + 10);
      for (let n = 1; n <= 4; n++) {
        cache.put(key(n), one(n));
        // Distinct ages, oldest first (the clock may not tick between writes).
        const t = new Date(Date.UTC(2020, 0, 1, 0, 0, n));
        utimesSync(entryPath(dir, key(n)), t, t);
      }
      // Entry 1 is used now: entry 2 is the least recently used.
      assert.ok(cache.get(key(1)));
      cache.put(key(5), one(5));
      const left = [1, 2, 3, 4, 5].filter((n) => existsSync(entryPath(dir, key(n))));
      // Over the bound, it drops to at most 90 %: 3 entries of 4 fit.
      assert.deepEqual(left, [1, 4, 5]);
      // An entry larger than the whole cache is not stored.
      assert.equal(cache.put(key(6), { stdout: Buffer.alloc(size * 5), files: [] }), false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it(
    'two client processes writing and reading one directory at once see only whole entries',
    T,
    async () => {
      const dir = fresh();
      try {
        const script = `
        import { LocalCache } from ${JSON.stringify(new URL('../../src/cache/store.js', import.meta.url).href)};
        const [dir, who] = process.argv.slice(-2);
        const logged = [];
        const cache = new LocalCache(dir, 64 * 1024 * 1024, (m) => logged.push(m));
        let hits = 0;
        for (let i = 0; i < 300; i++) {
          const k = (i % 20).toString(16).padStart(64, '0');
          // Both write the same 20 keys, each with its own large content.
          const body = Buffer.alloc(200_000 + (i % 7) * 1000, who === 'a' ? 0x61 : 0x62);
          cache.put(k, { stdout: body, files: [{ name: 'f', mode: 0o644, bytes: body.subarray(0, 1000) }] });
          const got = cache.get((i * 7 % 20).toString(16).padStart(64, '0'));
          if (got !== undefined) {
            hits++;
            const c = got.stdout[0];
            if (!got.stdout.every((x) => x === c) || !got.files[0].bytes.every((x) => x === c)) {
              console.log('MIXED'); process.exit(2);
            }
          }
        }
        console.log(JSON.stringify({ hits, logged }));
      `;
        const child = (who: string) =>
          new Promise<string>((resolve, reject) => {
            const p = spawn(
              process.execPath,
              ['--import', 'tsx', '--input-type=module', '-e', script, '--', dir, who],
              { stdio: ['ignore', 'pipe', 'inherit'] },
            );
            let out = '';
            p.stdout.on('data', (d: Buffer) => {
              out += d.toString();
            });
            p.on('error', reject);
            p.on('close', (code) =>
              code === 0 ? resolve(out) : reject(new Error(`${who}: exit ${code}: ${out}`)),
            );
          });
        const results = (await Promise.all([child('a'), child('b')])).map(
          (o) =>
            JSON.parse(o.trim().split('\n').at(-1) as string) as { hits: number; logged: string[] },
        );
        for (const r of results) {
          assert.ok(r.hits > 0);
          assert.deepEqual(r.logged, [], 'no reader ever saw a damaged entry');
        }
        assert.deepEqual(readdirSync(join(dir, 'tmp')), [], 'no temporary file is left');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it('lives under XDG_CACHE_HOME, else ~/.cache', T, () => {
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/x/cache' }), '/x/cache/rake-ts');
    assert.match(defaultCacheDir({ XDG_CACHE_HOME: 'relative' }), /\/\.cache\/rake-ts$/);
    assert.match(defaultCacheDir({}), /\/\.cache\/rake-ts$/);
  });
});
