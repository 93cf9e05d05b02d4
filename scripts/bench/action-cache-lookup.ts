/**
 * Benchmark: the local action cache's lookup cost per action (issue 21's "10,000 cached
 * actions: lookup overhead ≤ 1 ms per action").
 *
 *   node --import tsx scripts/bench/action-cache-lookup.ts [--entries 10000] [--runs 5]
 *
 * Stores `--entries` entries (a 40-byte stdout and one 2 KiB output file each, as a small
 * compile's) in a fresh cache directory, then, per run, computes every action's key (the
 * command, two inputs' names, modes and hashes, the platform) and reads and verifies its
 * entry: the work a hit adds before its files are landed. Median and range of the per-action
 * time over `--runs` passes; the load average beside them. Also a run's first store (a fresh
 * LocalCache writing one entry) with the cache's tally file and without it (counting every
 * entry, as before the tally), alternating.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { actionKey } from '../../src/cache/key.js';
import { LocalCache } from '../../src/cache/store.js';
import { median } from './lib/stats.js';

const { values: opts } = parseArgs({
  options: {
    entries: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '5' },
  },
});
const N = Number(opts.entries);
const RUNS = Number(opts.runs);
const dir = mkdtempSync(join(tmpdir(), 'rake-bench-lookup-'));
const platform = { os: 'linux', arch: 'x64' };
const header = randomBytes(32).toString('hex');
const parts = (i: number) => ({
  command: `cc -O2 -c u${i}.c`,
  cwd: '',
  inputs: [
    {
      name: `u${i}.c`,
      mode: 0o644,
      sha256: (i.toString(16) + header).slice(0, 64).padEnd(64, '0'),
    },
    { name: 'common.h', mode: 0o644, sha256: header },
  ],
  platform,
});
try {
  const cache = new LocalCache(dir, 1024 ** 3);
  for (let i = 0; i < N; i++) {
    cache.put(actionKey(parts(i)), {
      stdout: Buffer.alloc(40, 0x61),
      files: [{ name: `u${i}.o`, mode: 0o644, bytes: randomBytes(2048) }],
    });
  }
  const load = loadavg()[0] ?? 0;
  const perAction: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      if (cache.get(actionKey(parts(i))) === undefined) throw new Error(`entry ${i} missing`);
    }
    perAction.push((performance.now() - t0) / N);
  }
  // The first store of a run (a fresh LocalCache): with the tally file, and without it (it
  // must then count every entry, as every run's first store did before the tally), alternating.
  const firstStore: number[] = [];
  const counted: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    for (const withTally of [true, false]) {
      if (!withTally) rmSync(join(dir, 'entries', 'size'), { force: true });
      const fresh = new LocalCache(dir, 1024 ** 3);
      const t0 = performance.now();
      fresh.put(actionKey(parts(N + r * 2 + (withTally ? 0 : 1))), {
        stdout: Buffer.alloc(40, 0x62),
        files: [],
      });
      (withTally ? firstStore : counted).push(performance.now() - t0);
    }
  }
  const ms = (v: number[]) =>
    `${median(v).toFixed(2)} ms (${Math.min(...v).toFixed(2)}–${Math.max(...v).toFixed(2)})`;
  console.log(
    `${N} entries: a run's first store ${ms(firstStore)} with the tally, ${ms(counted)} counting every entry (no tally)`,
  );
  console.log(
    `${N} entries: key + verified read ${median(perAction).toFixed(3)} ms per action (${Math.min(...perAction).toFixed(3)}–${Math.max(...perAction).toFixed(3)}), ${RUNS} passes; load average ${load.toFixed(1)} before, ${(loadavg()[0] ?? 0).toFixed(1)} after`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
