// rake-ts --executor: the example C project built through REAPI against rakeserver
// --reapi-port on loopback. rake-ts runs as a child process (from source, through tsx), the
// server in this process; jobs, sockets and files are real.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createServer as createTlsServer } from 'node:tls';
import { pino } from 'pino';
import { type ServerHandle, serve } from '../../src/server/server.js';
import { freePort } from '../client/support.js';
import { waitUntil } from '../helpers/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const T = { timeout: 400_000 };

/** The server's log records, as it writes them. */
const records: Array<Record<string, unknown>> = [];
let server: ServerHandle;
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'rake-reapi-cli-'));
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line));
      cb();
    },
  });
  server = await serve({
    port: 0,
    reapiPort: 0,
    maxJobs: 2,
    logger: pino({ level: 'info' }, sink),
  });
});
after(async () => {
  await server.close({ graceSeconds: 1 });
  await rm(work, { recursive: true, force: true });
});

const actionsDone = () => records.filter((r) => r.msg === 'action done');

/** Runs rake-ts in `cwd`; resolves its exit code and output. `onStart` gets the child. */
function rake(
  cwd: string,
  args: string[],
  onStart?: (child: ChildProcess) => void,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    const child = spawn(
      process.execPath,
      ['--import', import.meta.resolve('tsx'), join(root, 'spec/net/rake-cli.ts'), ...args],
      {
        cwd,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    child.on('close', (code, signal) => ok({ code, signal, stdout, stderr }));
    onStart?.(child);
  });
}

async function project(name: string, rakefile?: string): Promise<string> {
  const dir = join(work, name);
  await cp(join(root, 'examples/hello-c'), dir, { recursive: true });
  // HOSTS is ignored with --executor, but the grammar wants one for remote actions.
  if (rakefile !== undefined)
    await writeFile(join(dir, 'Rakefile'), `HOSTS = localhost\n\n${rakefile}`);
  return dir;
}

const executor = () => `grpc://127.0.0.1:${server.reapiPort}`;

describe('rake-ts --executor (REAPI)', T, () => {
  it('builds the example C project on the farm; the local action runs the program', async () => {
    const dir = await project('build');
    const before = actionsDone().length;
    const port = await freePort();
    const r = await rake(dir, [
      '--executor',
      executor(),
      '--port',
      String(port),
      '--progress',
      'never',
      '--trace',
      'build.trace.json',
      '--report',
      'build.html',
    ]);
    assert.equal(r.code, 0, r.stderr);
    // The program's own output: the numbers' statistics.
    assert.match(r.stdout, /hello from rake-ts: 8 numbers, sum 31, max 9, mean 3.87/);
    for (const f of ['main.o', 'parse.o', 'stats.o', 'report.o']) {
      assert.ok((await stat(join(dir, f))).size > 0, f);
    }
    const hello = await stat(join(dir, 'hello'));
    assert.equal(hello.mode & 0o100, 0o100, 'the linked program comes back executable');
    // Four compiles and the link went through REAPI; the inputs did not come back as outputs.
    assert.equal(actionsDone().length - before, 5);
    assert.ok(!r.stderr.includes('internal error'), r.stderr);
    // The trace shows the farm's own timings of each remote action.
    const trace = JSON.parse(await readFile(join(dir, 'build.trace.json'), 'utf8')) as {
      traceEvents: Array<{ cat?: string; args?: { farm?: { worker: string } } }>;
    };
    const farmed = trace.traceEvents.filter((e) => e.cat === 'action' && e.args?.farm);
    assert.equal(farmed.length, 5);
    for (const e of farmed) assert.match(e.args?.farm?.worker ?? '', /^rakeserver@/);
    // And the report's timeline, in each remote action's tooltip.
    const html = await readFile(join(dir, 'build.html'), 'utf8');
    assert.equal(html.match(/farm rakeserver@[^:]+: queued [^,]+, inputs [^,]+, ran /g)?.length, 5);
  });

  it('reports a failing command with its stderr and exit status; exit 1', async () => {
    const dir = await project('fail', 'broken:\n\tremote-cc -c nowhere.c\n\tremote-echo fine\n');
    const r = await rake(dir, ['--executor', executor(), '--progress', 'never']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nowhere\.c/);
    assert.match(r.stderr, /status 1/);
  });

  it('--cache: a second run is answered from the ActionCache (nothing runs again)', async () => {
    const dir = await project(
      'cache',
      'compile:\n\tremote-cc -c src/stats.c -Iinclude\n\t\trequires src/stats.c include/stats.h\n',
    );
    const first = await rake(dir, ['--executor', executor(), '--cache', '--progress', 'never']);
    assert.equal(first.code, 0, first.stderr);
    const ran = actionsDone().length;
    const obj = await readFile(join(dir, 'stats.o'));
    await rm(join(dir, 'stats.o'));
    const second = await rake(dir, ['--executor', executor(), '--cache', '--progress', 'never']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(actionsDone().length, ran, 'no Execute on the second run');
    assert.ok((await readFile(join(dir, 'stats.o'))).equals(obj));
  });

  it('--cache: an action marked # rake-ts: no-cache runs every time', async () => {
    const dir = await project(
      'nocache',
      'compile:\n\tremote-cc -c src/stats.c -Iinclude # rake-ts: no-cache\n\t\trequires src/stats.c include/stats.h\n',
    );
    const first = await rake(dir, ['--executor', executor(), '--cache', '--progress', 'never']);
    assert.equal(first.code, 0, first.stderr);
    const ran = actionsDone().length;
    const second = await rake(dir, ['--executor', executor(), '--cache', '--progress', 'never']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(actionsDone().length, ran + 1, 'Execute ran again');
  });

  it('moves a large input and a large output (over ByteStream) intact', async () => {
    const dir = await project(
      'large',
      'big:\n\tremote-cp big.bin copy.bin\n\t\trequires big.bin\n',
    );
    const data = randomBytes(3 * 1024 * 1024 + 5);
    await writeFile(join(dir, 'big.bin'), data);
    const r = await rake(dir, ['--executor', executor(), '--progress', 'never']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(join(dir, 'copy.bin'))).equals(data));
  });

  it('Ctrl-C cancels the operation: the farm kills the job', async () => {
    const fifo = join(work, 'never.fifo');
    execFileSync('mkfifo', [fifo]);
    const marker = join(work, 'cancel-started');
    const dir = await project('cancel', `wait:\n\tremote-touch ${marker}; cat ${fifo}\n`);
    const before = actionsDone().length;
    const r = await rake(dir, ['--executor', executor(), '--progress', 'never'], (child) => {
      void waitUntil(
        () =>
          stat(marker).then(
            () => true,
            () => false,
          ),
        { what: 'the job to start', ms: 60_000 },
      ).then(() => child.kill('SIGINT'));
    });
    assert.equal(r.code, 130, r.stderr);
    await waitUntil(() => actionsDone().length > before, {
      what: 'the server to end the job',
      ms: 20_000,
    });
    const done = actionsDone().at(-1);
    assert.equal(done?.status, 1, 'CANCELLED');
    assert.equal(server.cost(), 0);
  });

  it('resumes with WaitExecution when the connection breaks while the job runs', async () => {
    const sockets = new Set<Socket>();
    const relay = createServer((down) => {
      const up = connect(server.reapiPort as number, '127.0.0.1');
      sockets.add(down).add(up);
      down.pipe(up).pipe(down);
      const drop = () => {
        down.destroy();
        up.destroy();
      };
      down.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
    });
    await new Promise<void>((ok) => relay.listen(0, '127.0.0.1', ok));
    const relayPort = (relay.address() as { port: number }).port;
    const fifo = join(work, 'resume.fifo');
    execFileSync('mkfifo', [fifo]);
    const marker = join(work, 'resume-started');
    const dir = await project(
      'resume',
      `wait:\n\tremote-touch ${marker}; cat ${fifo} > resumed.txt\n`,
    );
    const r = await rake(
      dir,
      ['--executor', `grpc://127.0.0.1:${relayPort}`, '--progress', 'never'],
      () => {
        void waitUntil(
          () =>
            stat(marker).then(
              () => true,
              () => false,
            ),
          { what: 'the job to start', ms: 60_000 },
        ).then(async () => {
          for (const s of sockets) s.destroy();
          const fh = await open(fifo, 'w');
          await fh.write('after the break\n');
          await fh.close();
        });
      },
    );
    await new Promise((ok) => relay.close(ok));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await readFile(join(dir, 'resumed.txt'), 'utf8'), 'after the break\n');
  });

  it('grpcs://: TLS to the farm, its certificate checked against the trusted roots', async () => {
    const key = join(work, 'tls.key');
    const cert = join(work, 'tls.crt');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    // A TLS-terminating front for the server's plain REAPI port, as a farm's load balancer.
    const front = createTlsServer(
      { key: await readFile(key), cert: await readFile(cert), ALPNProtocols: ['h2'] },
      (down) => {
        const up = connect(server.reapiPort as number, '127.0.0.1');
        down.pipe(up).pipe(down);
        down.on('error', () => up.destroy()).on('close', () => up.destroy());
        up.on('error', () => down.destroy());
      },
    );
    await new Promise<void>((ok) => front.listen(0, '127.0.0.1', ok));
    const tlsPort = (front.address() as { port: number }).port;
    const dir = await project('tls', 'hi:\n\tremote-echo over-tls > tls.txt\n');
    try {
      const untrusted = await rake(dir, [
        '--executor',
        `grpcs://localhost:${tlsPort}`,
        '--no-fallback',
        '--progress',
        'never',
      ]);
      assert.notEqual(untrusted.code, 0, 'a certificate nobody trusts is refused');
      const trusted = await rake(
        dir,
        ['--executor', `grpcs://localhost:${tlsPort}`, '--no-fallback', '--progress', 'never'],
        undefined,
        { ...process.env, NODE_EXTRA_CA_CERTS: cert },
      );
      assert.equal(trusted.code, 0, trusted.stderr);
      assert.equal(await readFile(join(dir, 'tls.txt'), 'utf8'), 'over-tls\n');
    } finally {
      await new Promise((ok) => front.close(ok));
    }
  });

  it('a farm that refuses the output directory "" (as Buildfarm refuses an output path) gets "." instead, remembered for the run; its "." answer is read as the root', async () => {
    const seen: Array<Record<string, unknown>> = [];
    const strict = await serve({
      port: 0,
      reapiPort: 0,
      reapiRefuseEmptyOutputPath: true,
      logger: pino(
        { level: 'info' },
        new Writable({
          write(chunk: Buffer, _e, cb) {
            for (const line of chunk.toString().split('\n')) if (line) seen.push(JSON.parse(line));
            cb();
          },
        }),
      ),
    });
    try {
      // Two actionsets: the second runs after the first has met the refusal.
      const dir = await project(
        'strict-root',
        'one:\n\tremote-mkdir -p out && echo first > out/one.txt\n\ntwo:\n\tremote-cat in.txt > two.txt\n\t\trequires in.txt\n',
      );
      await writeFile(join(dir, 'in.txt'), 'second\n');
      const r = await rake(dir, [
        '--executor',
        `grpc://127.0.0.1:${strict.reapiPort}`,
        '--no-fallback',
        '--progress',
        'never',
        '--log-format',
        'json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readFile(join(dir, 'out/one.txt'), 'utf8'), 'first\n');
      assert.equal(await readFile(join(dir, 'two.txt'), 'utf8'), 'second\n');
      const records = r.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map(
          (l) =>
            JSON.parse(l) as {
              msg?: string;
              event?: string;
              actionId?: string;
              files?: string[];
              farm?: string;
              answer?: string;
            },
        );
      // The tree answered as "." is the working directory: paths as in it, and the input sent
      // unchanged (in.txt) is not written back.
      assert.deepEqual(
        records.filter((l) => l.event === 'action-succeeded').map((l) => [l.actionId, l.files]),
        [
          ['one#0', ['out/one.txt']],
          ['two#0', ['two.txt']],
        ],
      );
      // The farm refused "" once (the first action); the second action asked "." at once.
      const refused = seen.filter((l) => l.msg === 'refused the output path ""');
      assert.equal(refused.length, 1);
      const warned = records.filter((l) =>
        l.msg?.startsWith('the farm refuses the output directory ""'),
      );
      assert.equal(warned.length, 1, r.stderr);
      assert.equal(warned[0]?.farm, `grpc://127.0.0.1:${strict.reapiPort}`);
      assert.match(
        warned[0]?.answer ?? '',
        /^Action [0-9a-f]{64}\/\d+ is invalid: An output directory is an ancestor to another output\.$/,
      );
    } finally {
      await strict.close({ graceSeconds: 1 });
    }
  });

  it("refuses outputs under .git/ and lands none of that action's files", async () => {
    const dir = await project(
      'hostile',
      'plant:\n\tremote-mkdir -p .git/hooks && echo evil > .git/hooks/pre-commit && echo ok > fine.txt\n',
    );
    const r = await rake(dir, ['--executor', executor(), '--progress', 'never']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refused output "\.git\/hooks\/pre-commit": it is inside \.git\//);
    await assert.rejects(stat(join(dir, '.git/hooks/pre-commit')));
    await assert.rejects(stat(join(dir, 'fine.txt')), 'all or nothing');
  });

  it('--fallback: a farm that cannot be reached hands the action to the local server; --no-fallback fails it (exit 3)', async () => {
    const closed = await freePort();
    const dir = await project('fallback', 'hi:\n\tremote-echo ran-here > where.txt\n');
    const port = String(await freePort());
    const down = await rake(dir, [
      '--executor',
      `grpc://127.0.0.1:${closed}`,
      '--no-fallback',
      '--port',
      port,
      '--progress',
      'never',
    ]);
    assert.equal(down.code, 3, down.stderr);
    assert.match(down.stderr, new RegExp(`UNAVAILABLE.*grpc://127\\.0\\.0\\.1:${closed}`));
    await assert.rejects(stat(join(dir, 'where.txt')));
    const fell = await rake(dir, [
      '--executor',
      `grpc://127.0.0.1:${closed}`,
      '--port',
      port,
      '--progress',
      'never',
    ]);
    assert.equal(fell.code, 0, fell.stderr);
    assert.equal(await readFile(join(dir, 'where.txt'), 'utf8'), 'ran-here\n');
  });

  it('retries a transient code with backoff (RESOURCE_EXHAUSTED: a store too small), then fails saying what to do', async () => {
    const small = await serve({ port: 0, reapiPort: 0, cacheSize: 1024 });
    try {
      const dir = await project('full', 'big:\n\tremote-wc -c big.bin\n\t\trequires big.bin\n');
      await writeFile(join(dir, 'big.bin'), randomBytes(4096));
      const r = await rake(dir, [
        '--executor',
        `grpc://127.0.0.1:${small.reapiPort}`,
        '--no-fallback',
        '--progress',
        'never',
        '--log-format',
        'json',
        '-vv',
      ]);
      assert.equal(r.code, 3, r.stderr);
      const retried = r.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg?: string; code?: string; waitMs?: number })
        .filter((l) => l.msg === 'REAPI call retried');
      assert.deepEqual(
        retried.map((l) => [l.code, l.waitMs]),
        [
          ['RESOURCE_EXHAUSTED', 200],
          ['RESOURCE_EXHAUSTED', 400],
          ['RESOURCE_EXHAUSTED', 800],
        ],
      );
      assert.match(r.stderr, /larger --cache-size/);
    } finally {
      await small.close({ graceSeconds: 1 });
    }
  });

  it('says what is wrong with a bad --executor, and with a bad --cache-size', async () => {
    const dir = await project('usage');
    const bad = await rake(dir, ['--executor', 'http://127.0.0.1:1']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /not grpc:\/\/HOST:PORT/);
    // Without --executor, --cache is the local action cache (spec/cache/cli.spec.ts).
    const size = await rake(dir, ['--cache', '--cache-size', 'lots']);
    assert.equal(size.code, 2);
    assert.match(
      size.stderr,
      /--cache-size must be a number of bytes, optionally with K, M or G; got lots/,
    );
  });
});
