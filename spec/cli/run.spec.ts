// The default command, `rake-ts [Rakefile]`, driven through runRake with captured streams.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import yargs from 'yargs';
import { EXIT, type RunArgs, runRake, withRunOptions } from '../../src/cli/commands/run.js';
import {
  closeAll,
  exampleCopy,
  project,
  removeDir,
  startServers,
  waitFor,
  withHosts,
} from '../client/support.js';
import { capture } from './support.js';

const T = { timeout: 60_000 };

/** Parses flags as the program would: the default command `$0 [rakefile]`. */
async function argsOf(argv: string[]): Promise<RunArgs> {
  let failure: string | undefined;
  let args: RunArgs | undefined;
  await yargs(argv)
    .command(
      '$0 [rakefile]',
      'run',
      (y) => withRunOptions(y),
      (a) => {
        args = a as unknown as RunArgs;
      },
    )
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      failure = msg || err?.message;
    })
    .parseAsync();
  if (failure !== undefined || args === undefined) throw new Error(failure ?? 'no arguments');
  return args;
}

async function rake(cwd: string, argv: string[], signals = new EventEmitter()) {
  const out = capture();
  const err = capture();
  const code = await runRake(await argsOf(argv), {
    stdout: out.stream,
    stderr: err.stream,
    cwd,
    signals,
  });
  return { code, stdout: out.text(), stderr: err.text() };
}

describe('rake-ts [Rakefile]', () => {
  it('builds and runs the example, printing its output and a summary', T, async () => {
    const servers = await startServers(2);
    const dir = await exampleCopy();
    try {
      const ports = servers.map((s) => s.port);
      const { readFile } = await import('node:fs/promises');
      await writeFile(
        join(dir, 'Rakefile'),
        withHosts(await readFile(join(dir, 'Rakefile'), 'utf8'), ports, ports[0] as number),
      );
      const r = await rake(dir, []);
      assert.equal(r.code, EXIT.ok, r.stderr);
      assert.match(r.stdout, /^hello from rake-ts: 8 numbers, sum 31, max 9, mean 3\.87\n/);
      assert.match(r.stderr, /rake-ts: ok: 6\/6 actions succeeded in [\d.]+ s/);
    } finally {
      await closeAll(servers);
      await removeDir(dir);
    }
  });

  it('prints each action output as one block, never interleaved', T, async () => {
    const [server] = await startServers(1);
    const dir = await project();
    try {
      const p = server?.port;
      const loop = (tag: string) => `\tremote-for i in 1 2 3; do echo ${tag}$i; sleep 0.1; done\n`;
      await writeFile(
        join(dir, 'Rakefile'),
        `PORT = ${p}\nHOSTS = 127.0.0.1:${p}\n\nset:\n${loop('a')}${loop('b')}`,
      );
      const r = await rake(dir, ['-q']);
      assert.equal(r.code, EXIT.ok, r.stderr);
      assert.ok(r.stdout.includes('a1\na2\na3\n') && r.stdout.includes('b1\nb2\nb3\n'), r.stdout);
      assert.doesNotMatch(r.stderr, /rake-ts: ok/, '-q leaves out the summary');
    } finally {
      await closeAll(server ? [server] : []);
      await removeDir(dir);
    }
  });

  it('reports a failed action with its line, host, status and stderr; exit 1', T, async () => {
    const [server] = await startServers(1);
    const dir = await project();
    try {
      const p = server?.port;
      await writeFile(
        join(dir, 'Rakefile'),
        `PORT = ${p}\nHOSTS = 127.0.0.1:${p}\n\nfirst:\n\tremote-echo oops >&2; exit 4\nsecond:\n\tremote-echo never\n`,
      );
      const r = await rake(dir, []);
      assert.equal(r.code, EXIT.actionFailed);
      assert.match(r.stderr, /Rakefile:5: action failed: echo oops >&2; exit 4/);
      assert.match(r.stderr, new RegExp(`\\n  exited with status 4 on 127\\.0\\.0\\.1:${p}\\n`));
      assert.match(r.stderr, /\| oops/);
      assert.doesNotMatch(r.stdout, /never/);
      assert.match(r.stderr, /FAILED: 0\/2 actions succeeded, 1 failed, 1 not started/);
    } finally {
      await closeAll(server ? [server] : []);
      await removeDir(dir);
    }
  });

  it('-n prints the plan and contacts no server', T, async () => {
    let connections = 0;
    const listener = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const port = (listener.address() as { port: number }).port;
    const dir = await project({ 'src/a.c': 'int a;\n' });
    try {
      await writeFile(
        join(dir, 'Rakefile'),
        `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nbuild:\n\tremote-cc -c src/a.c\n\t\trequires ./src/a.c\n\techo done\n`,
      );
      const r = await rake(dir, ['-n']);
      assert.equal(r.code, EXIT.ok, r.stderr);
      assert.match(r.stdout, /\[remote\] cc -c src\/a\.c {2}# line 5/);
      assert.match(r.stdout, /sends \.\/src\/a\.c as src\/a\.c/);
      assert.match(
        r.stdout,
        new RegExp(`\\[local \\] echo done {2}# line 7, on localhost:${port}`),
      );
      assert.equal(connections, 0);
    } finally {
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      await removeDir(dir);
    }
  });

  it('exits 2 for a Rakefile error or a missing Rakefile, with -C and -f', T, async () => {
    const dir = await project({ 'sub/Broken': 'PORT = x\n' });
    try {
      const bad = await rake(dir, ['-C', 'sub', '-f', 'Broken']);
      assert.equal(bad.code, EXIT.usage);
      assert.match(bad.stderr, /sub\/Broken:1:\d+: error: .*\[invalid-port\]/);
      const missing = await rake(dir, ['Nope']);
      assert.equal(missing.code, EXIT.usage);
      assert.match(missing.stderr, /cannot read the Rakefile/);
      const noDir = await rake(dir, ['-C', 'nowhere']);
      assert.equal(noDir.code, EXIT.usage);
    } finally {
      await removeDir(dir);
    }
  });

  it('rejects bad flags', async () => {
    await assert.rejects(argsOf(['-j', '-1']), /--jobs must be a whole number/);
    await assert.rejects(argsOf(['--hosts', 'a:99999']), /--hosts: cannot read/);
    await assert.rejects(argsOf(['A', '-f', 'B']), /either as the argument or with -f/);
  });

  it('exits 3 when no host can run a remote action (--no-fallback)', T, async () => {
    const dir = await project();
    try {
      await writeFile(
        join(dir, 'Rakefile'),
        'PORT = 1\nHOSTS = 127.0.0.1:1\n\nset:\n\tremote-true\n',
      );
      const r = await rake(dir, ['--no-fallback', '--no-embedded']);
      assert.equal(r.code, EXIT.noHost, r.stderr);
      assert.match(r.stderr, /no host answered the cost poll \(127\.0\.0\.1:1: ECONNREFUSED\)/);
      assert.match(r.stderr, /^rake-ts: FAILED Rakefile:5 set#0 \(no-host\): true$/m);
    } finally {
      await removeDir(dir);
    }
  });

  it('Ctrl-C cancels everything: the remote process is killed, exit 130', T, async () => {
    const [server] = await startServers(1);
    const dir = await project();
    try {
      const p = server?.port;
      await writeFile(
        join(dir, 'Rakefile'),
        `PORT = ${p}\nHOSTS = 127.0.0.1:${p}\n\nset:\n\tremote-sleep 30\n`,
      );
      const signals = new EventEmitter();
      const pending = rake(dir, [], signals);
      await waitFor(() => (server?.cost() ?? 0) > 0, 10_000, 'the job to start');
      signals.emit('SIGINT');
      const r = await pending;
      assert.equal(r.code, EXIT.interrupted);
      assert.match(r.stderr, /interrupted/);
      await waitFor(() => server?.cost() === 0, 10_000, 'the server to drop the job');
    } finally {
      await closeAll(server ? [server] : []);
      await removeDir(dir);
    }
  });
});
