// Hosts dialed before the bundle loads (issue 20, bin/early-dial.js): the loader's scan of the
// command line and the Rakefile, the bytes it sends, and the built program's runs against a
// real server behind a recording proxy on loopback. The Rakefiles name the server as
// `0.0.0.0:PORT`: not a loopback name to the client (which dials loopback hosts only as the
// run needs them), while Linux delivers a connection to 0.0.0.0 to this machine's loopback.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import yargs from 'yargs';
import { withRunOptions } from '../../src/cli/commands/run.js';
import { endLoaderDials, takeLoaderDials } from '../../src/client/early-dial.js';
import { OFFER_ANNEX } from '../../src/protocol/extensions.js';
import { encodeHeader } from '../../src/protocol/header.js';
import { startBaseServer } from '../helpers/base-server.js';
import { startRecordingProxy } from '../helpers/recording-proxy.js';
import { type Ran, runProcess } from '../helpers/run-process.js';
import { startServer } from '../server/support.js';
import { project, removeDir } from './support.js';

const root = new URL('../../', import.meta.url).pathname;
const built = existsSync(join(root, 'dist/rake-ts.cjs'));
const loader = createRequire(import.meta.url)('../../bin/early-dial.js') as {
  planAhead(args: string[], env: NodeJS.ProcessEnv, cwd: string): { host: string; port: number }[];
  OPENING: Buffer;
  REGISTRY: symbol;
  VALUED: Set<string>;
  SWITCHES: Set<string>;
};
const T = { timeout: 60_000 };
const OFFER = encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: OFFER_ANNEX });
const BYE = encodeHeader({ kind: 'plain', code: '!D', length: 0 });

describe("bin/early-dial.js: its flags are the CLI's", () => {
  // The loader reads argv without yargs (it runs before the bundle loads): a flag it takes
  // with a value must take one in the CLI, and a switch must be one, or its scan would read
  // the command line otherwise than the run does.
  it('each flag it knows takes a value exactly when the CLI says it does', () => {
    const options = (
      withRunOptions(yargs([])) as unknown as { getOptions(): YargsOptions }
    ).getOptions();
    // A key and its aliases (`verbose` and `v`): yargs lists some aliases by type, not all.
    const named = (keys: string[]) =>
      new Set(keys.flatMap((k) => [k, ...(options.alias[k] ?? [])]).map(flag));
    const valued = named([...options.string, ...options.number]);
    const switches = named([...options.boolean, ...options.count]);
    for (const name of loader.VALUED)
      assert.ok(valued.has(name), `${name} takes no value in the CLI`);
    for (const name of loader.SWITCHES) {
      // -vv and -vvv: the count option -v, repeated.
      const base = /^-v+$/.test(name) ? '-v' : name;
      assert.ok(switches.has(base), `${name} is no switch in the CLI`);
    }
  });
});

/** yargs' own view of its options (the parts the check above reads). */
interface YargsOptions {
  string: string[];
  number: string[];
  boolean: string[];
  count: string[];
  alias: Record<string, string[]>;
}

/** `file` → `--file`, `f` → `-f`. */
const flag = (key: string) => (key.length === 1 ? `-${key}` : `--${key}`);

describe('bin/early-dial.js: whom to dial before the bundle loads', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rake-loader-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, lines: readonly string[]) => {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), `${lines.join('\n')}\n`);
  };
  const plan = (args: string[], env: NodeJS.ProcessEnv = {}) => loader.planAhead(args, env, dir);
  write('Rakefile', [
    'PORT = 7001',
    'HOSTS = build1 10.0.0.2:7002 localhost:7003 127.0.0.1 rakes://secure build1:7001',
    '',
    'all:',
    '\tremote-cc -c a.c',
    '\t\trequires a.c',
    '\tcc -o a a.o',
  ]);

  it('sends exactly the opening cost query the load stream sends', () => {
    assert.deepEqual(loader.OPENING, OFFER);
  });

  it('names the hosts hostsAhead names: PORT applied, no loopback, TLS or repeats', () => {
    const hosts = [
      { host: 'build1', port: 7001 },
      { host: '10.0.0.2', port: 7002 },
    ];
    assert.deepEqual(plan([]), hosts);
    assert.deepEqual(plan(['-q', '--progress=never', '--trace', 't.json', '-j', '4']), hosts);
    assert.deepEqual(plan(['--port', '7100']), [
      { host: 'build1', port: 7100 },
      { host: '10.0.0.2', port: 7002 },
    ]);
    assert.deepEqual(plan(['--hosts', 'x, y:9']), [
      { host: 'x', port: 7001 },
      { host: 'y', port: 9 },
    ]);
  });

  it('finds the Rakefile as the run does: -C, -f, the argument', () => {
    write('sub/other', ['HOSTS = far:9', 'a:', '\tremote-true']);
    const far = [{ host: 'far', port: 9 }];
    assert.deepEqual(plan(['-C', 'sub', '-f', 'other']), far);
    assert.deepEqual(plan(['--directory=sub', 'other']), far);
    assert.deepEqual(plan(['sub/other']), far);
    assert.deepEqual(plan(['-f', 'missing']), []);
  });

  it('dials nothing for a command line it does not take for a plain run', () => {
    for (const args of [
      ['-n'],
      ['--executor', 'grpc://far:1'],
      ['--tls'],
      ['--tls-ca', 'ca.pem'],
      ['--no-load-streams'],
      ['--load-streams=false'],
      ['--unknown-flag'],
      ['-qj4'],
      ['check'],
      ['hosts'],
      ['Rakefile', 'another'],
      ['--port', '0'],
      ['--hosts'],
    ]) {
      assert.deepEqual(plan(args), [], args.join(' '));
    }
    assert.deepEqual(plan([], { RAKE_LOAD_STREAMS: '0' }), []);
    assert.equal(plan(['--load-streams'], { RAKE_LOAD_STREAMS: '0' }).length, 2);
    assert.deepEqual(plan([], { RAKE_EARLY_DIAL: '0' }), []);
  });

  it('dials nothing for a file in doubt', () => {
    const cases = [
      ['HOSTS = far:9', 'all:', '\ttrue', '\tremote-true'],
      ['HOSTS = far:9', 'all:', '\trequires-setup', '\tremote-true'],
      ['HOSTS = a:1', 'HOSTS = b:2', 'all:', '\tremote-true'],
      ['PORT = 70000', 'HOSTS = a', 'all:', '\tremote-true'],
      ['HOSTS = [::2]:9', 'all:', '\tremote-true'],
      ['HOSTS = a:1:2', 'all:', '\tremote-true'],
      ['HOSTS = 300.1.1.1:9', 'all:', '\tremote-true'],
      ['all:', '\tremote-true'],
    ];
    for (const lines of cases) {
      write('doubt', lines);
      assert.deepEqual(plan(['doubt']), [], lines.join(' | '));
    }
    writeFileSync(
      join(dir, 'large'),
      `HOSTS = a:1\nall:\n\tremote-true\n${'# padding\n'.repeat(7000)}`,
    );
    assert.deepEqual(plan(['large']), []);
  });
});

describe('takeLoaderDials', () => {
  it('empties the registry, and endLoaderDials ends what it took with !D0', async () => {
    const server = await startServer({ maxJobs: 1 });
    const proxy = await startRecordingProxy(server.port);
    const { connect } = await import('node:net');
    try {
      const socket = connect({ host: '127.0.0.1', port: proxy.port });
      const registry = new Map([[`127.0.0.1:${proxy.port}`, { socket }]]);
      (process as unknown as Record<symbol, unknown>)[loader.REGISTRY] = registry;
      const taken = takeLoaderDials();
      assert.equal(taken.size, 1);
      assert.equal(registry.size, 0);
      assert.equal(takeLoaderDials().size, 0);
      endLoaderDials(taken);
      assert.equal(taken.size, 0);
      await new Promise((resolve) => socket.once('close', resolve));
      assert.deepEqual(proxy.connections[0]?.toServer, BYE);
    } finally {
      delete (process as unknown as Record<symbol, unknown>)[loader.REGISTRY];
      await proxy.close();
      await server.close();
    }
  });
});

/** Runs the program at `program` in `cwd`; resolves its status and output. */
function runProgram(
  program: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
): Promise<Ran> {
  return runProcess([process.execPath, program, ...args], {
    cwd,
    env: { ...process.env, RAKE_LOAD_STREAMS: '1', ...env },
  });
}

const FLAGS = ['--no-embedded', '--no-fallback', '--progress=never', '-q'];

describe('the built program dials before its bundle loads', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  const program = join(root, 'bin/rake-ts.js');

  for (const mode of ['query', 'connect'] as const) {
    it(
      `runs on the connection dialed ahead (${mode}): the conversation a run without it has`,
      T,
      async () => {
        const server = await startServer({ maxJobs: 1 });
        const proxy = await startRecordingProxy(server.port);
        const dir = await project({
          Rakefile: `HOSTS = 0.0.0.0:${proxy.port}\n\nall:\n\tremote-echo hi\n`,
        });
        try {
          const env = mode === 'connect' ? { RAKE_EARLY_DIAL: 'connect' } : {};
          const r = await runProgram(program, FLAGS, dir, env);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, 'hi\n');
          await proxy.settled();
          // The stream's opening connection (its cost query, then the job) and the watch's:
          // no third connection, so the one dialed ahead was taken, not dialed again.
          assert.equal(proxy.connections.length, 2, JSON.stringify(proxy.connections));
          const first = proxy.connections[0]?.toServer ?? Buffer.alloc(0);
          assert.deepEqual(first.subarray(0, 64), OFFER);
          // The query went out once, then the job: nothing sent twice.
          assert.equal(first.indexOf(OFFER, 64), -1);
          assert.ok(first.includes('!C'), 'the job went out on the opening connection');
        } finally {
          await proxy.close();
          await server.close();
          await removeDir(dir);
        }
      },
    );
  }

  it('shows a base-protocol server byte for byte what a run without it does', T, async () => {
    const base = await startBaseServer();
    /** What each connection of one run sent the base server, in a stable order. */
    const transcripts = async (env: NodeJS.ProcessEnv) => {
      const proxy = await startRecordingProxy(base.port);
      const dir = await project({
        Rakefile: `HOSTS = 0.0.0.0:${proxy.port}\n\nall:\n\tremote-echo hi\n`,
      });
      try {
        const r = await runProgram(program, FLAGS, dir, env);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, 'hi\n');
        await proxy.settled();
        return proxy.connections.map((c) => c.toServer.toString('latin1')).sort();
      } finally {
        await proxy.close();
        await removeDir(dir);
      }
    };
    try {
      const early = await transcripts({});
      const without = await transcripts({ RAKE_EARLY_DIAL: '0' });
      assert.deepEqual(early, without);
      // The load stream's opening query, which the base server answers as a cost query.
      assert.ok(early.includes(OFFER.toString('latin1')), JSON.stringify(early));
    } finally {
      await base.close();
    }
  });

  /**
   * Runs `program` on a project whose Rakefile names one host (a server behind a recording
   * proxy) after `HOSTS`, then `body`; checks the exit status and that the host saw the
   * opening query, then the goodbye, on the one connection the loader made.
   */
  async function dialedThenEnded(program: string, body: string, status: number): Promise<void> {
    const server = await startServer({ maxJobs: 1 });
    const proxy = await startRecordingProxy(server.port);
    const dir = await project({
      Rakefile: `HOSTS = 0.0.0.0:${proxy.port}\n${body}`,
    });
    try {
      const r = await runProgram(program, FLAGS, dir);
      assert.equal(r.code, status, r.stderr);
      await proxy.settled();
      assert.equal(proxy.connections.length, 1);
      // Dialed before the bundle loaded, the opening query sent, then the goodbye.
      assert.deepEqual(proxy.connections[0]?.toServer, Buffer.concat([OFFER, BYE]));
    } finally {
      await proxy.close();
      await server.close();
      await removeDir(dir);
    }
  }

  it('ends with !D0 a connection its run does not take (the file does not parse)', T, async () => {
    // The loader's line scan passes a line the grammar refuses.
    await dialedThenEnded(program, 'what is this\nall:\n\tremote-echo hi\n', 2);
  });

  it('ends with !D0 a connection the bundle never asks for', T, async () => {
    // A copy of the program whose bundle only returns: the loader ends what it dialed.
    const home = mkdtempSync(join(tmpdir(), 'rake-loader-program-'));
    after(() => rmSync(home, { recursive: true, force: true }));
    mkdirSync(join(home, 'bin'));
    mkdirSync(join(home, 'dist'));
    for (const name of ['rake-ts.js', 'early-dial.js', 'package.json']) {
      copyFileSync(join(root, 'bin', name), join(home, 'bin', name));
    }
    writeFileSync(join(home, 'dist/rake-ts.cjs'), 'module.exports.main = async () => 5;\n');
    await dialedThenEnded(join(home, 'bin/rake-ts.js'), '\nall:\n\tremote-echo hi\n', 5);
  });

  it('fails as before when the host refuses the connection', T, async () => {
    // A port nothing listens on: taken from a server that is then closed.
    const server = await startServer({ maxJobs: 1 });
    const port = server.port;
    await server.close();
    const dir = await project({ Rakefile: `HOSTS = 0.0.0.0:${port}\n\nall:\n\tremote-echo hi\n` });
    try {
      const early = await runProgram(program, FLAGS, dir);
      const without = await runProgram(program, FLAGS, dir, { RAKE_EARLY_DIAL: '0' });
      assert.equal(early.code, without.code, early.stderr);
      assert.notEqual(early.code, 0);
      for (const r of [early, without]) assert.ok(r.stderr.includes(`0.0.0.0:${port}`), r.stderr);
    } finally {
      await removeDir(dir);
    }
  });
});
