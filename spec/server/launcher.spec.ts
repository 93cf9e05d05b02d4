import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { runJob } from '../../src/server/job.js';
import { createLauncher, type Launcher } from '../../src/server/launcher.js';
import { waitUntil } from '../helpers/wait.js';
import { alive, collect } from './support.js';

const silent = pino({ level: 'silent' });

async function readPid(file: string): Promise<number> {
  await waitUntil(async () => (await readFile(file, 'utf8').catch(() => '')).trim() !== '', {
    what: `a pid in ${file}`,
  });
  return Number((await readFile(file, 'utf8')).trim());
}

for (const kind of ['python3', 'node'] as const) {
  describe(`launcher: ${kind}`, () => {
    let launcher: Launcher;
    let dir: string;
    before(async () => {
      launcher = await createLauncher(kind, silent);
      assert.equal(launcher.kind, kind);
      dir = await mkdtemp(join(tmpdir(), 'rake-launcher-'));
    });
    after(async () => {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('runs /bin/sh -c in the directory given, with stdout, stderr and the exit status', async () => {
      await writeFile(join(dir, 'here.txt'), 'x');
      const job = await launcher.launch('ls; echo oops >&2; exit 3', dir);
      const [out, err, status] = await Promise.all([
        collect(job.stdout),
        collect(job.stderr),
        job.exited,
      ]);
      assert.equal(out, 'here.txt\n');
      assert.equal(err, 'oops\n');
      assert.equal(status, 3);
    });

    it('reports death by a signal as 128 + n', async () => {
      const job = await launcher.launch('kill -TERM $$', dir);
      assert.equal(await job.exited, 143);
    });

    it('starts the job with stdin from /dev/null and SIGPIPE at its default action', async () => {
      // With SIGPIPE ignored, `yes` would fail on EPIPE and complain on stderr instead of dying quietly.
      const job = await launcher.launch('cat; yes | head -n 1', dir);
      const [out, err, status] = await Promise.all([
        collect(job.stdout),
        collect(job.stderr),
        job.exited,
      ]);
      assert.deepEqual([out, err, status], ['y\n', '', 0]);
    });

    it('passes the server environment through', async () => {
      process.env.RAKE_LAUNCHER_SPEC = 'seen';
      const spawned = await createLauncher(kind, silent);
      try {
        const job = await spawned.launch('printf %s "$RAKE_LAUNCHER_SPEC"', dir);
        assert.equal(await collect(job.stdout), 'seen');
      } finally {
        delete process.env.RAKE_LAUNCHER_SPEC;
        await spawned.close();
      }
    });

    it("keeps the server's RAKE_TOKEN from its jobs, and gives each its own RAKE_JOB_TAG", async () => {
      process.env.RAKE_TOKEN = 'the-server-secret';
      const spawned = await createLauncher(kind, silent);
      try {
        const run = async () => {
          const job = await spawned.launch('env', dir);
          return (await collect(job.stdout)).split('\n');
        };
        const [one, two] = [await run(), await run()];
        assert.ok(!one.some((l) => l.startsWith('RAKE_TOKEN=')), 'the job saw RAKE_TOKEN');
        const tag = (env: string[]) => env.find((l) => l.startsWith('RAKE_JOB_TAG='));
        assert.ok(tag(one) && tag(two) && tag(one) !== tag(two), `${tag(one)} / ${tag(two)}`);
      } finally {
        delete process.env.RAKE_TOKEN;
        await spawned.close();
      }
    });

    it('kills what the job left in the background once the shell exits', async () => {
      const pidFile = join(dir, 'bg.pid');
      const job = await launcher.launch(`sleep 30 & echo $! > ${pidFile}`, dir);
      assert.equal(await job.exited, 0);
      const pid = await readPid(pidFile);
      await waitUntil(() => !alive(pid), { what: `background sleep ${pid} to die` });
      await rm(pidFile);
    });

    it('kill() ends the whole process group: status 137', async () => {
      const pidFile = join(dir, 'group.pid');
      const job = await launcher.launch(`sleep 30 & echo $! > ${pidFile}; wait`, dir);
      const pid = await readPid(pidFile);
      job.kill();
      assert.equal(await job.exited, 137);
      await waitUntil(() => !alive(pid), { what: `grandchild ${pid} to die` });
      job.kill(); // after the end: a no-op
      await rm(pidFile);
    });

    it('rejects with the reason when the shell cannot start', async () => {
      await assert.rejects(launcher.launch('true', join(dir, 'missing')), /ENOENT|No such file/);
      const job = await launcher.launch('echo still fine', dir);
      assert.equal(await collect(job.stdout), 'still fine\n');
    });

    it('hands over a stream the job closed at once as closed, not as one to wait for', async () => {
      // The race behind a hang of this file (issue 17, defect 11): output closed before
      // anyone read it emits no 'close' later, so a reader must check `closed` first.
      const job = await launcher.launch(
        'exec >&- 2>&-; while [ ! -e go ]; do sleep 0.02; done',
        dir,
      );
      await waitUntil(() => job.stdout.closed && job.stderr.closed, {
        what: 'the closed streams to end unread',
      });
      assert.deepEqual(await Promise.all([collect(job.stdout), collect(job.stderr)]), ['', '']);
      await writeFile(join(dir, 'go'), '');
      assert.equal(await job.exited, 0);
      await rm(join(dir, 'go'));
    });

    it('runs 40 jobs at once, each with its own output', async () => {
      const results = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const j = await launcher.launch(`echo ${i}; echo e${i} >&2`, dir);
          return Promise.all([collect(j.stdout), collect(j.stderr), j.exited]);
        }),
      );
      for (const [i, r] of results.entries()) assert.deepEqual(r, [`${i}\n`, `e${i}\n`, 0]);
    });

    it('runJob caps output and kills the job (output-limit), over this launcher', async () => {
      const outcome = await runJob(
        {
          command: 'yes',
          cwd: dir,
          signal: new AbortController().signal,
          timeoutMs: 0,
          maxOutputBytes: 100_000,
        },
        launcher,
      );
      assert.equal(outcome.reason, 'output-limit');
    });
  });
}

describe('launcher: python3 spawn helper', () => {
  it('gives a command of plain words (run without a shell) what the shell would give it', async () => {
    const launcher = await createLauncher('python3', silent);
    const dir = await mkdtemp(join(tmpdir(), 'rake-launcher-'));
    const run = async (command: string) => {
      const job = await launcher.launch(command, dir);
      const [out, err, status] = await Promise.all([
        collect(job.stdout),
        collect(job.stderr),
        job.exited,
      ]);
      return { out, err, status };
    };
    try {
      // The program leads the job, and PWD names the job's directory, as under sh.
      const self = await run('cat /proc/self/stat');
      assert.equal(self.out.split(' ')[1], '(cat)');
      assert.equal((await run('printenv PWD')).out, `${dir}\n`);
      assert.deepEqual(await run('  printf %s:%s a,b c=d  '), {
        out: 'a,b:c=d',
        err: '',
        status: 0,
      });
      // A program that is not there: the shell's own message and status.
      const missing = await run('no-such-program-here --flag');
      assert.equal(missing.status, 127);
      assert.match(missing.err, /no-such-program-here: not found/);
      // Builtins, assignments and anything quoted or expanded keep their shell.
      assert.equal((await run('cd / && pwd')).out, '/\n');
      assert.equal((await run('X=1 printenv X')).out, '1\n');
      assert.equal((await run("echo 'a  b' $HOME")).out, `a  b ${process.env.HOME}\n`);
    } finally {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('falls back to node with auto, and explains itself with python3, when Python cannot run', async () => {
    const auto = await createLauncher('auto', silent, '/nonexistent/python3');
    assert.equal(auto.kind, 'node');
    await auto.close();
    await assert.rejects(
      createLauncher('python3', silent, '/nonexistent/python3'),
      /cannot start the spawn helper with \/nonexistent\/python3: .*ENOENT.*--spawner node/,
    );
  });

  it('survives the helper being killed: its jobs end lost, the next job starts a new helper', async () => {
    const launcher = await createLauncher('python3', silent);
    const dir = await mkdtemp(join(tmpdir(), 'rake-launcher-'));
    try {
      const pidFile = join(dir, 'job.pid');
      const job = await launcher.launch(`echo $$ > ${pidFile}; sleep 30`, dir);
      const shell = await readPid(pidFile);
      const helper = Number(
        (await readFile(`/proc/${shell}/stat`, 'utf8')).split(') ')[1]?.split(' ')[1],
      );
      process.kill(helper, 'SIGKILL');
      assert.equal(await job.exited, 'lost');
      await waitUntil(() => !alive(shell), { what: `job ${shell} to die with its helper` });
      const next = await launcher.launch('echo again', dir);
      assert.equal(await collect(next.stdout), 'again\n');
    } finally {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('kills running jobs when the server process is SIGKILLed (the helper sees its stdin close)', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rake-launcher-'));
    const pidFile = join(dir, 'job.pid');
    const launcherUrl = new URL('../../src/server/launcher.ts', import.meta.url).href;
    const code = `
      const { createLauncher } = await import(${JSON.stringify(launcherUrl)});
      const { pino } = await import('pino');
      const l = await createLauncher('python3', pino({ level: 'silent' }));
      await l.launch(${JSON.stringify(`echo $$ > ${pidFile}; sleep 60`)}, ${JSON.stringify(dir)});
      console.log('launched');
      setInterval(() => {}, 1000);`;
    const server = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      // Started, however long a loaded machine takes to start Node with tsx (it took over
      // 10 s at load average 25): wait for its word, or its end, not for a fixed time.
      const said = await new Promise<string>((resolve) => {
        let text = '';
        server.stdout?.on('data', (c: Buffer) => {
          text += c.toString('utf8');
          if (text.includes('launched\n')) resolve(text);
        });
        server.once('exit', (code, signal) => resolve(`exited (${signal ?? code})`));
      });
      assert.equal(said, 'launched\n');
      const shell = await readPid(pidFile);
      assert.ok(alive(shell));
      server.kill('SIGKILL');
      await waitUntil(() => !alive(shell), { what: `job ${shell} to die with its server` });
    } finally {
      server.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
