/**
 * Load on the multi-host test bed (docs/reliability.md): 20 clients, each a `rake-ts` child
 * process running a 50-action Rakefile with requirements and outputs, all at once, against
 * 3 rakeservers. Every output must equal a local build's (SHA-256), nothing may be left
 * behind (job directories, job processes, temporary files, a non-zero cost), and the
 * servers' peak RSS is reported.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestbed, type Testbed } from '../../scripts/testbed/netns.js';
import { queryCost } from '../../scripts/testbed/probe.js';
import {
  buildClient,
  jobDirs,
  localBuild,
  peakRssKiB,
  processesIn,
  sha256,
  spawnRake,
  waitUntil,
} from './support.js';

const CLIENTS = 20;
const TRANSFORMS = 40;
const DIGESTS = 10;

let bed: Testbed;
let scratch: string;
let built: string;

before(async () => {
  const started = startTestbed({ hosts: 3, log: () => undefined });
  built = buildClient();
  bed = await started;
  scratch = mkdtempSync(join(tmpdir(), 'rake-load-'));
});
after(async () => {
  await bed?.teardown();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Text of `n` random lowercase letters, spaces and newlines. */
function randomText(n: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz     \n';
  return Array.from(randomBytes(n), (b) => alphabet[b % alphabet.length]).join('');
}

/** One client's project: 40 inputs, the Rakefile (40 transforms, then 10 digests), the commands. */
function makeClient(c: number): { dir: string; local: string; outputs: string[] } {
  const dir = join(scratch, `client${c}`);
  const local = join(scratch, `local${c}`);
  const inputs: Record<string, string> = {};
  for (let i = 0; i < TRANSFORMS; i++)
    inputs[`in/${i}.txt`] = randomText(1024 + ((c * 997 + i * 131) % 31_744));
  const transforms = Array.from({ length: TRANSFORMS }, (_, i) => ({
    command: `mkdir -p out && tr a-z A-Z < in/${i}.txt > out/${i}.txt`,
    requires: [`in/${i}.txt`],
  }));
  const digests = Array.from({ length: DIGESTS }, (_, j) => {
    const parts = [0, 1, 2, 3].map((k) => `out/${(j * 4 + k) % TRANSFORMS}.txt`);
    return {
      command: `mkdir -p sum && cat ${parts.join(' ')} | sha256sum > sum/${j}.txt`,
      requires: parts,
    };
  });
  const lines = ['PORT = 6238', bed.rakefileHosts(), '', 'transform:'];
  for (const a of transforms)
    lines.push(`\tremote-${a.command}`, `\t\trequires ${a.requires.join(' ')}`);
  lines.push('', 'digest:');
  for (const a of digests)
    lines.push(`\tremote-${a.command}`, `\t\trequires ${a.requires.join(' ')}`);
  for (const root of [dir, local]) {
    mkdirSync(join(root, 'in'), { recursive: true });
    for (const [name, content] of Object.entries(inputs)) writeFileSync(join(root, name), content);
  }
  writeFileSync(join(dir, 'Rakefile'), `${lines.join('\n')}\n`);
  localBuild(
    local,
    [...transforms, ...digests].map((a) => a.command),
  );
  return {
    dir,
    local,
    outputs: [
      ...transforms.map((_, i) => `out/${i}.txt`),
      ...digests.map((_, j) => `sum/${j}.txt`),
    ],
  };
}

/** Files under `dir` whose names are the receiver's temporary names. */
function tempFiles(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((n) =>
    /\.rake-tmp-[0-9a-f]{12}$/.test(n),
  );
}

describe('load on a 3-host test bed', () => {
  it(`${CLIENTS} clients × ${TRANSFORMS + DIGESTS} actions against 3 servers: every output correct, nothing leaked`, {
    timeout: 300_000,
  }, async (t) => {
    t.diagnostic(`bed mode ${bed.mode}`);
    const clients = Array.from({ length: CLIENTS }, (_, c) => makeClient(c));
    const t0 = Date.now();
    const rakes = clients.map((c) =>
      spawnRake(
        c.dir,
        ['--no-fallback', '--no-embedded', '--connect-timeout', '20', '--cost-timeout', '20'],
        built,
      ),
    );
    const codes = await Promise.all(rakes.map((r) => r.exited));
    const wallMs = Date.now() - t0;
    const rss = bed.hosts.map((h) => ({
      host: h.name,
      peakMiB: Math.round((peakRssKiB(h.pid) ?? 0) / 1024),
    }));
    for (const [c, code] of codes.entries()) {
      assert.equal(code, 0, `client ${c} exited ${code}: ${rakes[c]?.output()}`);
    }

    // Every output, byte for byte (SHA-256), against the local build.
    let compared = 0;
    for (const c of clients) {
      for (const out of c.outputs) {
        assert.equal(sha256(join(c.dir, out)), sha256(join(c.local, out)), `${c.dir}/${out}`);
        compared++;
      }
      assert.deepEqual(tempFiles(c.dir), [], `temporary files left in ${c.dir}`);
    }

    // Nothing left on the servers: job directories, job processes, cost.
    const workdirs = bed.hosts.map((h) => h.workdir);
    const cleanMs = await waitUntil(
      () =>
        bed.hosts.every((h) => jobDirs(h.workdir).length === 0) &&
        processesIn(workdirs).length === 0,
      10_000,
    );
    assert.ok(
      cleanMs !== undefined,
      `left: ${bed.hosts.map((h) => jobDirs(h.workdir).length).join('/')} job dirs, processes ${JSON.stringify(processesIn(workdirs))}`,
    );
    for (const host of bed.hosts) {
      const cost = await queryCost(host.address, host.port, 3000);
      assert.deepEqual(cost.ok ? cost.value : cost, 0, `${host.name} still counts a job`);
    }

    // Where the actions ran: each client's summary line ends `(host=n host=n ...)`.
    const perHost: Record<string, number> = {};
    const seconds: number[] = [];
    for (const r of rakes) {
      const m = /rake-ts: ok: .*? in ([\d.]+) s[^(\n]*\(([^)]*)\)/.exec(r.output());
      if (!m) continue;
      seconds.push(Number(m[1]));
      for (const pair of (m[2] ?? '').split(' ')) {
        const [host, n] = pair.split('=');
        if (host && n) perHost[host] = (perHost[host] ?? 0) + Number(n);
      }
    }
    seconds.sort((a, b) => a - b);
    t.diagnostic(
      `${CLIENTS} clients, ${compared} outputs identical to the local build; wall time ${wallMs} ms; ` +
        `client run time min ${seconds[0]} s, median ${seconds[Math.floor(seconds.length / 2)]} s, max ${seconds.at(-1)} s`,
    );
    t.diagnostic(`actions per host ${JSON.stringify(perHost)}`);
    t.diagnostic(
      `servers' peak RSS (VmHWM) ${rss.map((r) => `${r.host} ${r.peakMiB} MiB`).join(', ')}`,
    );
  });
});
