// Where a server's default workdir goes: memory (/dev/shm) where it can, else the temp dir.
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import {
  MIN_MEMORY_SCRATCH_BYTES,
  type ScratchProbe,
  SHM_DIR,
  scratchRoot,
  TMPFS_MAGIC,
} from '../../src/server/scratch.js';
import { serve } from '../../src/server/server.js';
import { pkt, RawPeer } from '../helpers/raw-peer.js';

const EXT4_MAGIC = 0xef53;

/** A machine with a roomy tmpfs at /dev/shm, changed by `over`. */
function probe(over: Partial<ScratchProbe> = {}): ScratchProbe {
  return {
    env: {},
    platform: 'linux',
    tmpdir: () => '/var/tmp-of-the-test',
    statfs: () => ({ type: TMPFS_MAGIC, bavail: 4 * 1024 ** 2, bsize: 4096 }),
    access: () => {},
    ...over,
  };
}

describe('scratch root of a default workdir', () => {
  it('is /dev/shm on Linux when it is a writable tmpfs with 1 GiB free', () => {
    assert.deepEqual(scratchRoot(probe()), { dir: SHM_DIR, reason: 'memory' });
  });

  it('is $TMPDIR when the user set it', () => {
    const r = scratchRoot(probe({ env: { TMPDIR: '/big/disk' }, tmpdir: () => '/big/disk' }));
    assert.deepEqual(r, { dir: '/big/disk', reason: 'tmpdir' });
  });

  it('is the temp dir, saying why, when /dev/shm will not do', () => {
    const cases: Array<[Partial<ScratchProbe>, RegExp]> = [
      [{ platform: 'darwin' }, /not Linux \(darwin\)/],
      [
        {
          statfs: () => {
            throw new Error('ENOENT: no such file or directory');
          },
        },
        /\/dev\/shm: ENOENT/,
      ],
      [
        {
          access: () => {
            throw new Error('EACCES: permission denied');
          },
        },
        /\/dev\/shm: EACCES/,
      ],
      [{ statfs: () => ({ type: EXT4_MAGIC, bavail: 1e9, bsize: 4096 }) }, /is not a tmpfs/],
      [
        // A container's default /dev/shm: 64 MiB.
        { statfs: () => ({ type: TMPFS_MAGIC, bavail: (64 * 1024 ** 2) / 4096, bsize: 4096 }) },
        /has 64 MiB free, under 1 GiB/,
      ],
    ];
    for (const [over, why] of cases) {
      const r = scratchRoot(probe(over));
      assert.equal(r.dir, '/var/tmp-of-the-test');
      assert.equal(r.reason, 'default');
      assert.match(r.why ?? '', why);
    }
  });

  it('counts only the blocks this user may take', () => {
    const justUnder = (MIN_MEMORY_SCRATCH_BYTES - 4096) / 4096;
    const r = scratchRoot(
      probe({ statfs: () => ({ type: TMPFS_MAGIC, bavail: justUnder, bsize: 4096 }) }),
    );
    assert.equal(r.reason, 'default');
  });

  it('is where a server with no --workdir runs its jobs, and removes it on close', async () => {
    const expected = scratchRoot();
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const server = await serve({ port: 0, logger });
    try {
      assert.ok(
        server.workdir.startsWith(`${expected.dir}/rakeserver-p${process.pid}-`),
        `${server.workdir} is not in ${expected.dir}`,
      );
      const listening = lines.find((l) => l.msg === 'listening');
      assert.equal(listening?.scratch, expected.reason);
      const peer = await RawPeer.connect(server.port);
      await peer.send(pkt('!C', 'pwd'));
      const reply = await peer.packet();
      peer.destroy();
      assert.equal(reply.head.slice(0, 4), '!SS ');
      assert.ok(reply.payload.toString().startsWith(`${server.workdir}/job-`));
      // On this project's machines /dev/shm is a roomy tmpfs: jobs run in memory there.
      if (expected.reason === 'memory') assert.ok(server.workdir.startsWith('/dev/shm/'));
      else assert.ok(server.workdir.startsWith(tmpdir()), expected.why);
    } finally {
      await server.close();
    }
    assert.equal(existsSync(server.workdir), false);
  });

  it('is not used when --workdir is given', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const server = await serve({ port: 0, logger, workdir: `${tmpdir()}/rake-scratch-given` });
    try {
      assert.equal(server.workdir, `${tmpdir()}/rake-scratch-given`);
      assert.equal(lines.find((l) => l.msg === 'listening')?.scratch, undefined);
    } finally {
      await server.close();
      rmSync(server.workdir, { recursive: true, force: true });
    }
  });
});
