// Issue 17, defect 4: a job that builds a tree deeper than PATH_MAX (4096 bytes) used to leave
// a directory nothing could remove: not the job's clean-up, not shutdown, not the next server's
// sweep. Removal now works at any depth, read-only directories included.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { removeStale } from '../../src/server/stale.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { jobDirs, startServer } from './support.js';

const T = { timeout: 120_000 };
/** 400 levels of a 10-byte name: a path of 4 400 bytes below the start, over PATH_MAX. */
const LEVELS = 400;

/**
 * A Python program that, from its working directory, makes LEVELS nested directories
 * (moving down by relative chdir, as a job can), leaves a file at the bottom and makes the
 * bottom directory read-only.
 */
const BUILD_DEEP = [
  'import os',
  `for i in range(${LEVELS}):`,
  "    os.mkdir('dddddddddd'); os.chdir('dddddddddd')",
  "open('bottom.txt', 'w').write('deep')",
  "os.chmod('.', 0o500)",
].join('\n');

/** Whether Node's own recursive removal gives up on such a tree (the defect's premise). */
function nodeRmFails(): boolean {
  const probe = spawnSync(
    process.execPath,
    [
      '-e',
      `const fs = require('fs'), os = require('os'), path = require('path'), cp = require('child_process');
       const d = fs.mkdtempSync(path.join(os.tmpdir(), 'rake-deep-probe-'));
       cp.execFileSync('python3', ['-c', ${JSON.stringify(BUILD_DEEP)}], { cwd: d });
       let failed = false;
       try { fs.rmSync(d, { recursive: true, force: true }); } catch { failed = true; }
       if (fs.existsSync(d)) { failed = true; cp.execFileSync('sh', ['-c', 'chmod -R u+rwx "$0"; rm -rf "$0"', d]); }
       process.stdout.write(String(failed));`,
    ],
    { encoding: 'utf8' },
  );
  return probe.stdout === 'true';
}

describe('directories deeper than PATH_MAX', () => {
  it("Node's recursive rm cannot remove one (what the fallback is for)", T, () => {
    assert.ok(nodeRmFails());
  });

  it("are removed when the job's connection ends", T, async () => {
    const server = await startServer();
    const peer = await RawPeer.connect(server.port);
    try {
      await peer.send(
        pkt('!C', `python3 -c '${BUILD_DEEP.replaceAll("'", `'"'"'`)}' && echo built`),
      );
      const reply = await peer.packet(60_000);
      assert.deepEqual([reply.head, reply.payload.toString()], ['!SS  6', 'built\n']);
      assert.equal((await jobDirs(server.workdir)).length, 1);
      await peer.send(hdr('!D0'));
      await waitUntil(async () => (await jobDirs(server.workdir)).length === 0, {
        ms: 60_000,
        what: 'the deep job directory to be removed',
      });
      assert.ok(
        !server.logs.some((l) => l.msg === 'cannot remove job directory'),
        'the server logged a failed removal',
      );
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("are removed by the next server's sweep when a dead server left one", T, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rake-deep-stale-'));
    try {
      const dead = spawnSync('/bin/true').pid as number;
      const left = join(dir, `job-7-p${dead}-deadbeef`);
      await mkdir(left);
      const built = spawnSync('python3', ['-c', BUILD_DEEP], { cwd: left, encoding: 'utf8' });
      assert.equal(built.status, 0, built.stderr);
      const removed = await removeStale(dir, pino({ level: 'silent' }));
      assert.equal(removed, 1);
      assert.ok(!existsSync(left), `${left} is still there`);
    } finally {
      spawnSync('sh', ['-c', 'chmod -R u+rwx "$0"; rm -rf "$0"', dir]);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
