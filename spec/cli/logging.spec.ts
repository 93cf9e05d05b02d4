// The CLI's logs: NDJSON on stderr off a terminal (what pino-pretty reads), pretty lines
// when asked, a log file with --log-file; action output and the summary stay on stdout.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createCliLogger, logLevelOf } from '../../src/cli/logging.js';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { freePort } from '../client/support.js';
import { runProcess } from '../helpers/run-process.js';
import { waitUntil } from '../helpers/wait.js';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).href;
const TSX = import.meta.resolve('tsx');
const PINO_PRETTY = new URL('../../node_modules/.bin/pino-pretty', import.meta.url).pathname;

/** Runs `command` with `input` on stdin; resolves its status and output. */
function exec(command: string, args: string[], input = '', env: NodeJS.ProcessEnv = {}) {
  return runProcess([command, ...args], {
    env: { ...process.env, CI: '', ...env },
    input,
    killAfterMs: 60_000,
  });
}

describe('rake-ts logging', { timeout: 90_000 }, () => {
  let server: ServerHandle;
  let dir = '';
  let entry = '';
  const rake = (...args: string[]) =>
    exec(process.execPath, ['--import', TSX, entry, '-C', dir, ...args]);
  before(async () => {
    server = await serve({ host: '127.0.0.1', port: 0, graceSeconds: 0 });
    dir = await mkdtemp(join(tmpdir(), 'rake-log-'));
    entry = join(dir, 'rake-ts.mjs');
    await writeFile(
      entry,
      `const { main } = await import(${JSON.stringify(MAIN)});\nprocess.exitCode = await main(process.argv.slice(2));\n`,
    );
    await writeFile(join(dir, 'in.txt'), 'data\n');
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nset:\n\tremote-cat in.txt\n\t\trequires in.txt\n\tremote-echo two\n`,
    );
    await writeFile(
      join(dir, 'Rakefile.fail'),
      `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nset:\n\tremote-cat in.txt\n\t\trequires in.txt\n\tremote-echo two\n\tremote-echo oops >&2; exit 2\n`,
    );
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('with --log-format json, every stderr line is a pino record that jq and pino-pretty read', async () => {
    const r = await rake('--log-format', 'json', '-vv', 'Rakefile.fail');
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    // jq itself: one compact line out per record in, and nothing it cannot read.
    const jq = await exec('jq', ['-c', '.'], r.stderr);
    assert.equal(jq.code, 0, `jq failed: ${jq.stderr}\n${r.stderr}`);
    assert.equal(jq.stdout.trimEnd().split('\n').length, lines.length);
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    // No key twice (JSON readers keep the last): the record is its own re-serialization.
    for (const [i, l] of lines.entries()) assert.equal(JSON.stringify(records[i]), l);
    for (const x of records) {
      assert.equal(typeof x.msg, 'string');
      assert.equal(typeof x.level, 'number');
      // One name per fact, client and server alike.
      for (const old of ['ms', 'exitCode'])
        assert.ok(!(old in x), `${old} in ${JSON.stringify(x)}`);
    }
    const of = (event: string) => records.filter((x) => x.event === event);
    // The progress, the failure (once, with its stderr) and the summary are records.
    assert.equal(of('actionset-started')[0]?.msg, 'set (1/1): 3 actions');
    const failed = of('action-failed');
    assert.equal(failed.length, 1, 'the failure once');
    assert.equal(failed[0]?.stderr, 'oops\n');
    assert.equal(failed[0]?.exitStatus, 2);
    assert.match(
      String(failed[0]?.msg),
      /^(\.\.\/)*[\w/.-]*Rakefile\.fail:8: action failed: echo oops >&2; exit 2: exited with status 2 on 127\.0\.0\.1:\d+$/,
    );
    const ok = of('action-succeeded');
    assert.equal(ok.length, 2);
    assert.equal(typeof ok[0]?.durationMs, 'number');
    const done = of('done');
    assert.equal(done.length, 1);
    assert.match(String(done[0]?.msg), /^FAILED: 2\/3 actions succeeded, 1 failed in [\d.]+ s/);
    assert.deepEqual(done[0]?.failures, [
      {
        actionId: 'set#2',
        line: 8,
        command: 'echo oops >&2; exit 2',
        reason: 'exit-non-zero',
        host: `127.0.0.1:${server.port}`,
        exitStatus: 2,
      },
    ]);
    // Action output on stdout, byte for byte, and nothing else.
    assert.deepEqual(
      r.stdout
        .split('\n')
        .filter((l) => l !== '')
        .sort(),
      ['data', 'two'],
    );

    const pretty = await exec(process.execPath, [PINO_PRETTY, '--colorize', 'false'], r.stderr);
    assert.equal(pretty.code, 0, pretty.stderr);
    assert.match(pretty.stdout, /ERROR.*Rakefile\.fail:8: action failed: echo oops/);
    assert.match(pretty.stdout, /ERROR.*: FAILED: 2\/3 actions succeeded/);
  });

  it("an embedded server's records name their component once", async () => {
    const port = await freePort();
    await writeFile(
      join(dir, 'Rakefile.embedded'),
      `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nset:\n\tremote-echo hi\n`,
    );
    const r = await rake('--log-format', 'json', '-vv', 'Rakefile.embedded');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    const server = lines.filter((l) => l.includes('"embedded-server"'));
    assert.ok(server.length > 0, r.stderr);
    for (const l of lines) {
      assert.ok((l.match(/"component":/g) ?? []).length <= 1, l);
      assert.ok((l.match(/"pid":/g) ?? []).length <= 1, l);
    }
    assert.ok(server.some((l) => (JSON.parse(l) as { msg?: string }).msg === 'listening'));
    // The server's records use the same names: exitStatus, durationMs.
    const jobEnds = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((x) => x.msg === 'job end');
    assert.ok(jobEnds.length >= 1, 'the server logs each job');
    for (const x of jobEnds) {
      assert.equal(typeof x.exitStatus, 'number');
      assert.equal(typeof x.durationMs, 'number');
    }
  });

  it('off a terminal without --log-format, stderr is readable lines and a failure is shown once', async () => {
    const r = await rake('-vv', 'Rakefile.fail');
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    assert.deepEqual(
      lines.filter((l) => l.startsWith('{')),
      [],
      'no JSON line',
    );
    assert.equal((r.stderr.match(/^ {2}\| oops$/gm) ?? []).length, 1, r.stderr);
    assert.ok(!/ERROR/.test(r.stderr), `no log record repeats the failure:\n${r.stderr}`);
    assert.match(r.stderr, /DEBUG.*: set#0 goes to 127\.0\.0\.1:\d+ \(/);
    assert.match(
      r.stderr,
      /^rake-ts: [\w/.-]*Rakefile\.fail:8: action failed: echo oops >&2; exit 2\n {2}exited with status 2 on 127\.0\.0\.1:\d+\n {2}\| oops$/m,
    );
    // The recap after the summary: where, which host, the status, not the stderr again.
    // Off a terminal it is on stderr: stdout holds only what the actions printed (in the
    // order they finished: the two run at once).
    assert.deepEqual(r.stdout.split('\n').sort(), ['', 'data', 'two'], r.stdout);
    assert.match(
      r.stderr,
      /\nrake-ts: FAILED [\w/.-]*Rakefile\.fail:8 set#2 on 127\.0\.0\.1:\d+ \(exit status 2\): echo oops >&2; exit 2\n$/,
    );
  });

  it('with --log-format json, a Rakefile error is a record too', async () => {
    await writeFile(join(dir, 'Rakefile.bad'), 'PORT = 1\n\nset\n\tremote-echo hi\n');
    const r = await rake('--log-format', 'json', 'Rakefile.bad');
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    const record = JSON.parse(lines[0] ?? '') as {
      level?: number;
      event?: string;
      diagnostics?: { position?: { line?: number } }[];
      msg?: string;
    };
    assert.equal(record.level, 50);
    assert.equal(record.event, 'rakefile-invalid');
    assert.equal(record.diagnostics?.[0]?.position?.line, 3);
    assert.match(record.msg ?? '', /Rakefile\.bad:3/);
  });

  it('logs only warnings and errors by default', async () => {
    const r = await rake();
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stderr, /^\{/m);
  });

  it('keeps every record in --log-file, the failure too', async () => {
    const file = join(dir, 'logs', 'fail.log');
    const r = await rake('--log-file', file, 'Rakefile.fail');
    assert.equal(r.code, 1);
    const records = (await readFile(file, 'utf8'))
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { event?: string });
    assert.equal(records.filter((x) => x.event === 'action-failed').length, 1);
    assert.equal((r.stderr.match(/^ {2}\| oops$/gm) ?? []).length, 1, 'and stderr shows it once');
  });

  it('writes pretty lines with --log-format pretty', async () => {
    const r = await rake('--log-format', 'pretty', '--log-level', 'debug');
    assert.match(r.stderr, /DEBUG.*: set#0 goes to 127\.0\.0\.1:\d+ \(/);
    // The display prints the actionset's start itself; its record is not repeated.
    assert.match(r.stderr, /^rake-ts: set \(1\/1\): 2 actions$/m);
    assert.doesNotMatch(r.stderr, /actionset set started/);
    assert.doesNotMatch(r.stderr, /^\{/m);
  });

  it('appends the records to --log-file instead', async () => {
    const file = join(dir, 'logs', 'rake.log');
    // Polled (--no-load-streams): each answer is a trace record (`cost-polled`).
    const r = await rake('--log-file', file, '--log-level', 'trace', '--no-load-streams');
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stderr, /^\{/m);
    const records = (await readFile(file, 'utf8'))
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { event?: string });
    assert.ok(records.some((x) => x.event === 'cost-polled'));
    assert.ok(records.some((x) => x.event === 'done'));
  });
});

describe('rake-ts: load streams on by default', { timeout: 90_000 }, () => {
  it('polls nothing by default; RAKE_LOAD_STREAMS=0 polls; --load-streams wins over it', async () => {
    const server = await serve({ host: '127.0.0.1', port: 0, graceSeconds: 0 });
    const dir = await mkdtemp(join(tmpdir(), 'rake-ls-'));
    try {
      const entry = join(dir, 'rake-ts.mjs');
      await writeFile(
        entry,
        `const { main } = await import(${JSON.stringify(MAIN)});\nprocess.exitCode = await main(process.argv.slice(2));\n`,
      );
      await writeFile(
        join(dir, 'Rakefile'),
        `HOSTS = 127.0.0.1:${server.port}\n\nset:\n\tremote-echo one\n\tremote-echo two\n`,
      );
      /** The run's `cost-polled` records (trace), with `env` and `flags`. */
      const polled = async (env: NodeJS.ProcessEnv, ...flags: string[]) => {
        const file = join(dir, `log-${Math.random().toString(36).slice(2)}.json`);
        const args = [
          '--import',
          TSX,
          entry,
          '-C',
          dir,
          '--log-file',
          file,
          '--log-level',
          'trace',
        ];
        const r = await exec(process.execPath, [...args, '--no-embedded', ...flags], '', env);
        assert.equal(r.code, 0, r.stderr);
        return (await readFile(file, 'utf8'))
          .trimEnd()
          .split('\n')
          .filter((l) => (JSON.parse(l) as { event?: string }).event === 'cost-polled').length;
      };
      assert.equal(await polled({ RAKE_LOAD_STREAMS: '' }), 0, 'load streams by default');
      assert.ok((await polled({ RAKE_LOAD_STREAMS: '0' })) > 0, 'RAKE_LOAD_STREAMS=0 polls');
      assert.equal(await polled({ RAKE_LOAD_STREAMS: '0' }, '--load-streams'), 0, 'the flag wins');
      assert.ok((await polled({ RAKE_LOAD_STREAMS: '1' }, '--no-load-streams')) > 0);
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('createCliLogger', () => {
  it('chooses the level from --log-level, -q or -v', () => {
    assert.equal(logLevelOf({}), 'warn');
    assert.equal(logLevelOf({ verbose: 1 }), 'info');
    assert.equal(logLevelOf({ verbose: 2 }), 'debug');
    assert.equal(logLevelOf({ verbose: 5 }), 'trace');
    assert.equal(logLevelOf({ quiet: true, verbose: 2 }), 'error');
    assert.equal(logLevelOf({ 'log-level': 'silent', verbose: 2 }), 'silent');
  });

  it('is pretty on stderr unless told, json into a file', () => {
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    assert.equal(createCliLogger({}, { stderr: sink, isTTY: false }).format, 'pretty');
    assert.equal(createCliLogger({}, { stderr: sink, isTTY: true }).format, 'pretty');
    assert.equal(
      createCliLogger({ 'log-format': 'json' }, { stderr: sink, isTTY: true }).format,
      'json',
    );
  });

  it('writes pretty lines through the given writer, without color under NO_COLOR', () => {
    const out: string[] = [];
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    const { logger } = createCliLogger(
      { 'log-level': 'info' },
      { stderr: sink, isTTY: true, write: (t) => out.push(t), env: { NO_COLOR: '1' } },
    );
    logger.info({ event: 'x', host: 'h:1' }, 'hello');
    assert.equal(out.length, 1);
    assert.match(out[0] ?? '', /INFO.*: hello \{"event":"x","host":"h:1"\}\n$/);
    assert.ok(!(out[0] ?? '').includes('\u001b'), 'no escape codes');
  });
});

describe('error records', { timeout: 30_000 }, () => {
  it("carry the error through pino's serializer: type, code and stack, not a string", async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(l) });
    const server = await serve({ host: '127.0.0.1', port: 0, graceSeconds: 0, logger });
    try {
      const socket = connect(server.port, '127.0.0.1');
      // A cost query answered: the server is reading this connection; then a reset (RST).
      const answered = new Promise<void>((resolve) => socket.once('data', () => resolve()));
      socket.write('!E0'.padEnd(64, ' '));
      await answered;
      socket.resetAndDestroy();
      await waitUntil(() => lines.some((l) => l.includes('"socket error"')), {
        ms: 10_000,
        what: 'the socket error record',
      });
      const record = JSON.parse(lines.find((l) => l.includes('"socket error"')) ?? '{}') as {
        err?: { type?: string; code?: string; stack?: string };
      };
      assert.equal(record.err?.type, 'Error');
      assert.equal(record.err?.code, 'ECONNRESET');
      assert.match(record.err?.stack ?? '', /^Error: read ECONNRESET\n {4}at /);
    } finally {
      await server.close();
    }
  });
});
