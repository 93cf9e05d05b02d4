// The CLI's logs: NDJSON on stderr off a terminal (what pino-pretty reads), pretty lines
// when asked, a log file with --log-file; action output and the summary stay on stdout.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createCliLogger, logLevelOf } from '../../src/cli/logging.js';
import { type ServerHandle, serve } from '../../src/server/index.js';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).href;
const TSX = import.meta.resolve('tsx');
const PINO_PRETTY = new URL('../../node_modules/.bin/pino-pretty', import.meta.url).pathname;

/** Runs `command` with `input` on stdin; resolves its status and output. */
function exec(command: string, args: string[], input = '') {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, CI: '' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
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
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes NDJSON to stderr off a terminal, and keeps stdout for output', async () => {
    const r = await rake('-vv');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    const records = lines
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const other = lines.filter((l) => !l.startsWith('{'));
    assert.ok(
      other.every((l) => l.startsWith('rake-ts: ')),
      `only progress lines besides records:\n${other.join('\n')}`,
    );
    const kinds = new Set(records.map((r) => r.event));
    for (const k of [
      'actionset-started',
      'host-chosen',
      'upload-done',
      'action-succeeded',
      'done',
    ]) {
      assert.ok(kinds.has(k), `a ${k} record`);
    }
    assert.ok(!kinds.has('cost-polled'), '-vv is debug: costs are trace');
    assert.deepEqual(
      r.stdout
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith('rake-ts: ok: '))
        .sort(),
      ['data', 'two'],
    );
    assert.doesNotMatch(r.stdout, /^\{/m, 'no record on stdout');

    const pretty = await exec(process.execPath, [PINO_PRETTY, '--colorize', 'false'], r.stderr);
    assert.equal(pretty.code, 0, pretty.stderr);
    assert.match(pretty.stdout, /DEBUG.*: set#0 goes to 127\.0\.0\.1:\d+ \(/);
    assert.match(pretty.stdout, /INFO.*: run succeeded/);
  });

  it('logs only warnings and errors by default', async () => {
    const r = await rake();
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stderr, /^\{/m);
  });

  it('writes pretty lines with --log-format pretty', async () => {
    const r = await rake('--log-format', 'pretty', '--log-level', 'info');
    assert.match(r.stderr, /INFO.*actionset set started/);
    assert.doesNotMatch(r.stderr, /^\{/m);
  });

  it('appends the records to --log-file instead', async () => {
    const file = join(dir, 'logs', 'rake.log');
    const r = await rake('--log-file', file, '--log-level', 'trace');
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

describe('createCliLogger', () => {
  it('chooses the level from --log-level, -q or -v', () => {
    assert.equal(logLevelOf({}), 'warn');
    assert.equal(logLevelOf({ verbose: 1 }), 'info');
    assert.equal(logLevelOf({ verbose: 2 }), 'debug');
    assert.equal(logLevelOf({ verbose: 5 }), 'trace');
    assert.equal(logLevelOf({ quiet: true, verbose: 2 }), 'error');
    assert.equal(logLevelOf({ 'log-level': 'silent', verbose: 2 }), 'silent');
  });

  it('is json off a terminal and pretty on one, unless told', () => {
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    assert.equal(createCliLogger({}, { stderr: sink, isTTY: false }).format, 'json');
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
