// The launcher made at the first job (serve's `launcherOnDemand`, the client's embedded
// servers): a run whose actions all come from the action cache starts no spawn helper and does
// not wait for one (issue 21, the second run's time). Real launchers, a real server, a real
// client run.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { createLauncher, type Launcher, OnDemandLauncher } from '../../src/server/launcher.js';
import { serve } from '../../src/server/server.js';
import { freePort, only, project, removeDir, runAll, summary } from '../client/support.js';

const silent = pino({ level: 'silent' });

/** Waits for a job's stdout and exit status. */
async function output(launcher: Launcher, command: string, cwd: string) {
  const job = await launcher.launch(command, cwd);
  let text = '';
  job.stdout.on('data', (c: Buffer) => {
    text += c.toString('utf8');
  });
  const status = await job.exited;
  if (!job.stdout.closed) await new Promise((ok) => job.stdout.once('close', ok));
  return { text, status };
}

describe('OnDemandLauncher', () => {
  it('makes nothing until the first job, then one launcher for every job', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rake-on-demand-'));
    let made = 0;
    const launcher = new OnDemandLauncher(() => {
      made++;
      return createLauncher('auto', silent);
    });
    try {
      assert.equal(made, 0);
      assert.equal(launcher.kind, 'on-demand');
      assert.equal(launcher.containment.kind, 'on-demand');
      // Two jobs at once wait for the same launcher.
      const [a, b] = await Promise.all([
        output(launcher, 'echo one', dir),
        output(launcher, 'echo two', dir),
      ]);
      assert.deepEqual(
        [a, b],
        [
          { text: 'one\n', status: 0 },
          { text: 'two\n', status: 0 },
        ],
      );
      assert.equal(made, 1);
      assert.ok(launcher.made);
      assert.match(launcher.kind, /^(python3|node)$/);
      assert.match(launcher.containment.kind, /^(cgroup|tag)$/);
    } finally {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    }
    await assert.rejects(launcher.launch('true', tmpdir()), /shutting down/);
    assert.equal(made, 1, 'closing makes nothing');
  });

  it('closing before any job makes nothing', async () => {
    let made = 0;
    const launcher = new OnDemandLauncher(() => {
      made++;
      return createLauncher('auto', silent);
    });
    await launcher.close();
    assert.equal(made, 0);
  });

  it('closing while the launcher is being made: the waiting job starts nothing, the launcher is closed', async () => {
    let finish!: (l: Launcher) => void;
    let closed = 0;
    let launched = 0;
    const made: Launcher = {
      kind: 'node',
      containment: new OnDemandLauncher(() => Promise.reject(new Error('unused'))).containment,
      launch: () => {
        launched++;
        return Promise.reject(new Error('a job started on a closed launcher'));
      },
      close: async () => {
        closed++;
      },
    };
    const launcher = new OnDemandLauncher(
      () =>
        new Promise<Launcher>((resolve) => {
          finish = resolve;
        }),
    );
    const job = launcher.launch('true', tmpdir());
    const closing = launcher.close();
    finish(made);
    await assert.rejects(job, /shutting down/);
    await closing;
    assert.equal(launched, 0);
    assert.equal(closed, 1);
  });

  it('a launcher that cannot be made fails that job with the reason; the next job tries again', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rake-on-demand-'));
    let made = 0;
    const launcher = new OnDemandLauncher(() => {
      made++;
      return made === 1
        ? Promise.reject(new Error('cannot contain jobs in cgroups: no cgroup2 here'))
        : createLauncher('node', silent);
    });
    try {
      await assert.rejects(launcher.launch('true', dir), /no cgroup2 here/);
      assert.equal(launcher.kind, 'on-demand');
      assert.deepEqual(await output(launcher, 'echo again', dir), { text: 'again\n', status: 0 });
      assert.equal(made, 2);
      assert.equal(launcher.kind, 'node');
    } finally {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('serve({ launcherOnDemand: true })', () => {
  it('listens with no launcher made, and runs a client job through the one its first job makes', {
    timeout: 60_000,
  }, async () => {
    const handle = await serve({ port: 0, launcherOnDemand: true, logger: silent });
    const dir = await project({ 'in.txt': 'on demand\n' });
    try {
      assert.equal(handle.spawner, 'on-demand');
      assert.equal(handle.containment, 'on-demand');
      const text = [
        `PORT = ${await freePort()}`,
        `HOSTS = 127.0.0.1:${handle.port}`,
        '',
        'build:',
        '\tremote-tr a-z A-Z < in.txt > out.txt',
        '\t\trequires in.txt',
        '',
      ].join('\n');
      const events = await runAll(dir, text, { embedded: false });
      assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
      assert.equal(readFileSync(join(dir, 'out.txt'), 'utf8'), 'ON DEMAND\n');
    } finally {
      await handle.close({ graceSeconds: 1 });
      await removeDir(dir);
    }
  });
});
