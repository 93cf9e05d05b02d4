// The rakeserver program: flags, NDJSON logs on stderr, graceful exit on SIGTERM/SIGINT.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { alive, jobDirs, readPids, waitFor } from './support.js';

const root = new URL('../..', import.meta.url).pathname;
const entry = (module: string) =>
  `import('./src/cli/${module}.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })`;

/** Runs the program from source; collects stderr as NDJSON lines. */
function program(
  args: string[],
  module = 'rakeserver',
): {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  text: () => string;
} {
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', entry(module), '--', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  const lines: Array<Record<string, unknown>> = [];
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
    const parts = stderr.split('\n');
    stderr = parts.pop() ?? '';
    for (const p of parts) {
      try {
        lines.push(JSON.parse(p) as Record<string, unknown>);
      } catch {
        lines.push({ text: p });
      }
    }
  });
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  return { child, lines, text: () => stdout };
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));

describe('rakeserver program', () => {
  it('prints help and exits 0', async () => {
    const p = program(['--help']);
    assert.equal(await exited(p.child), 0);
    for (const flag of [
      '--port',
      '--host',
      '--workdir',
      '--max-jobs',
      '--cost-offset',
      '--job-timeout',
      '--log-level',
      '--grace',
    ]) {
      assert.ok(p.text().includes(flag), flag);
    }
    // What the environment changes, the containment among it (issue 17 defect 3).
    assert.match(p.text().replace(/\s+/g, ' '), /RAKE_JOB_CONTAINMENT=auto\|cgroup\|tag/);
    assert.match(p.text(), /RAKE_TOKEN/);
  });

  it('exits 2 on a bad flag', async () => {
    const p = program(['--max-jobs', '0']);
    assert.equal(await exited(p.child), 2);
  });

  it('is also `rake-ts serve`, with the same flags', async () => {
    const help = program(['serve', '--help'], 'main');
    assert.equal(await exited(help.child), 0);
    assert.ok(help.text().includes('--cost-offset'));
    const bad = program(['serve', '--max-jobs', '0'], 'main');
    assert.equal(await exited(bad.child), 2);
    assert.ok(bad.lines.some((l) => String(l.text).includes('--max-jobs must be')));
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`serves, logs NDJSON and on ${signal} kills jobs after the grace period, exiting 0`, async () => {
      const scratch = await mkdtemp(join(tmpdir(), 'rake-prog-'));
      const workdir = join(scratch, 'work');
      const p = program([
        '--port',
        '0',
        '--workdir',
        workdir,
        '--grace',
        '0.2',
        '--cost-offset',
        '2',
      ]);
      assert.ok(await waitFor(() => p.lines.some((l) => l.msg === 'listening'), 10_000));
      const port = p.lines.find((l) => l.msg === 'listening')?.port as number;
      const peer = await RawPeer.connect(port);
      await peer.send(hdr('!E0'));
      await peer.expect(Buffer.concat([hdr('!E1'), Buffer.from('2')]));
      const job = await RawPeer.connect(port);
      await job.send(pkt('!C', `echo $$ > ${scratch}/pid; sleep 30`));
      const [pid] = await readPids(scratch, ['pid']);
      p.child.kill(signal);
      assert.equal(await exited(p.child), 0);
      assert.equal(existsSync(`/proc/${pid}`), false);
      assert.deepEqual(await jobDirs(workdir), []);
      assert.ok(await job.waitClosed());
      assert.ok(p.lines.some((l) => l.msg === 'connection' && l.outcome === 'shutdown'));
      assert.ok(
        p.lines.some(
          (l) => l.msg === 'job end' && l.reason === 'aborted' && l.component === 'server',
        ),
      );
      peer.destroy();
      await rm(scratch, { recursive: true, force: true });
    });
  }

  it('killed with SIGKILL: its jobs die with it, and the next server in its workdir removes what it left', async () => {
    const scratch = await mkdtemp(join(tmpdir(), 'rake-prog-'));
    const workdir = join(scratch, 'work');
    const listening = async (p: ReturnType<typeof program>) => {
      assert.ok(await waitFor(() => p.lines.some((l) => l.msg === 'listening'), 10_000));
      return p.lines.find((l) => l.msg === 'listening')?.port as number;
    };
    const first = program(['--port', '0', '--workdir', workdir]);
    const job = await RawPeer.connect(await listening(first));
    await job.send(pkt('!C', `echo $$ > ${scratch}/pid; sleep 30`));
    const [pid] = await readPids(scratch, ['pid']);
    assert.equal((await jobDirs(workdir)).length, 1);
    first.child.kill('SIGKILL');
    await exited(first.child);
    assert.ok(await waitFor(() => !alive(pid ?? 0)), `job ${pid} outlived its server`);
    assert.equal((await jobDirs(workdir)).length, 1, 'a SIGKILLed server cannot clean up');
    const second = program(['--port', '0', '--workdir', workdir]);
    await listening(second);
    assert.ok(await waitFor(async () => (await jobDirs(workdir)).length === 0));
    assert.ok(
      await waitFor(() =>
        second.lines.some(
          (l) => l.msg === 'removed directories dead servers left' && l.dir === workdir,
        ),
      ),
    );
    second.child.kill('SIGTERM');
    assert.equal(await exited(second.child), 0);
    job.destroy();
    await rm(scratch, { recursive: true, force: true });
  });
});
