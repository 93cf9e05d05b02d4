// The live progress display on a real terminal: `rake-ts` runs in a tmux pane (a pseudo-
// terminal), against a loopback server, and the spec reads the screen back. The output
// blocks must be whole, the status lines gone at the end, the summary line there. The same
// run through `script` shows escape codes were used; through a pipe, that none were.
/* biome-ignore-all lint/suspicious/noControlCharactersInRegex: escape codes are what is tested. */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type ServerHandle, serve } from '../../src/server/index.js';

const run = promisify(execFile);
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).href;
const TSX = import.meta.resolve('tsx');
const T = { timeout: 90_000 };

/** Blocks the display must keep whole: each action prints three lines. */
const TAGS = ['alpha', 'bravo', 'charlie', 'delta', 'echo'];

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('live progress on a terminal', T, () => {
  let server: ServerHandle;
  let dir: string;
  let command: string;
  before(async () => {
    server = await serve({ host: '127.0.0.1', port: 0, maxJobs: 4, graceSeconds: 0 });
    dir = await mkdtemp(join(tmpdir(), 'rake-tty-'));
    const block = (tag: string) =>
      `\tremote-echo ${tag}-1; sleep 0.4; echo ${tag}-2; echo ${tag}-3\n`;
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nbuild:\n${TAGS.slice(0, 4).map(block).join('')}finish:\n${block('echo')}`,
    );
    await writeFile(
      join(dir, 'rake-ts.mjs'),
      `const { main } = await import(${JSON.stringify(MAIN)});\nprocess.exitCode = await main(process.argv.slice(2));\n`,
    );
    // The terminal is what decides: no CI / NO_COLOR from the environment the spec runs in.
    command = `env -u CI -u NO_COLOR TERM=xterm-256color ${process.execPath} --import ${TSX} ${join(dir, 'rake-ts.mjs')} -C ${dir} -j 2`;
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('shows the status while running, then leaves whole output blocks and a summary', async () => {
    const socket = `rake-spec-${process.pid}`;
    const tmux = (...args: string[]) => run('tmux', ['-L', socket, '-f', '/dev/null', ...args]);
    const screen = async () =>
      // With the scrollback: no status line may be left there either.
      (await tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', 'rake')).stdout;
    await tmux(
      'new-session',
      '-d',
      '-x',
      '120',
      '-y',
      '40',
      '-s',
      'rake',
      `${command}; echo RAKE-EXIT=$?; sleep 120`,
    );
    try {
      // The header, then a running action once it has a host (until then it says `polling`).
      const live = await until('the status lines', 60_000, async () => {
        const s = await screen();
        return /^ {2}build#\d {2}127\.0\.0\.1:\d+ +\d+\.\d\d s {2}echo /m.test(s) ? s : undefined;
      });
      assert.match(
        live,
        /^\[[0-4]\/5\] build \(1\/2\): \d running, \d queued · \d+\.\d\d s( · ~\d+ s left)?$/m,
      );

      const done = await until('the end of the run', 60_000, async () => {
        const s = await screen();
        return /RAKE-EXIT=\d+/.test(s) ? s : undefined;
      });
      const lines = done.split('\n').map((l) => l.trimEnd());
      assert.ok(lines.includes('RAKE-EXIT=0'), done);
      for (const tag of TAGS) {
        const at = lines.indexOf(`${tag}-1`);
        assert.ok(at >= 0, `${tag}'s output is on the screen:\n${done}`);
        assert.deepEqual(lines.slice(at, at + 3), [`${tag}-1`, `${tag}-2`, `${tag}-3`], done);
      }
      const summary = lines.filter((l) => l.startsWith('rake-ts: ok: '));
      assert.equal(summary.length, 1, done);
      assert.match(
        summary[0] ?? '',
        /^rake-ts: ok: 5\/5 actions succeeded in [\d.]+ s on 1 host \(127\.0\.0\.1:\d+=5\), 0 B up, 0 B down$/,
      );
      assert.ok(!lines.some((l) => /running, \d+ queued/.test(l)), `status left behind:\n${done}`);
    } finally {
      await tmux('kill-server').catch(() => undefined);
    }
  });

  it('shows a failure once on a terminal, readably, and recaps it after the summary', async () => {
    await writeFile(
      join(dir, 'Rakefile.fail'),
      `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nbuild:\n\tremote-echo fine\n\tremote-echo tty-oops-1 >&2; echo tty-oops-2 >&2; exit 4\n`,
    );
    const typescript = join(dir, 'typescript.fail');
    // -v: info records on, as a user asking for more would; the failure's is still not repeated.
    await run('script', ['-qfec', `${command} -v Rakefile.fail`, typescript], {
      timeout: 60_000,
    }).catch(() => undefined);
    const raw = (await readFile(typescript, 'utf8')).replace(/\r/g, '');
    assert.equal((raw.match(/\| tty-oops-1/g) ?? []).length, 1, raw);
    assert.doesNotMatch(raw, /ERROR/, 'no pino record of the failure');
    assert.match(
      raw,
      /rake-ts: [\w/.-]*Rakefile\.fail:6: action failed: echo tty-oops-1 >&2; echo tty-oops-2 >&2; exit 4\n {2}exited with status 4 on 127\.0\.0\.1:\d+\n {2}\| tty-oops-1\n {2}\| tty-oops-2\n/,
    );
    assert.match(
      raw,
      /rake-ts: FAILED: 1\/2 actions succeeded, 1 failed[^\n]*\n(\x1b\[[\d;]*m)*rake-ts: FAILED [\w/.-]*Rakefile\.fail:6 build#1 on 127\.0\.0\.1:\d+ \(exit status 4\): echo tty-oops-1/,
    );
  });

  it('writes escape codes to a terminal (script) and none to a pipe', async () => {
    const typescript = join(dir, 'typescript');
    await run('script', ['-qfec', command, typescript], { timeout: 60_000 });
    const raw = await readFile(typescript, 'utf8');
    assert.match(raw, /\r(\x1b\[1A\x1b\[2K)+/, 'the status lines were redrawn in place');
    assert.match(raw, /rake-ts: ok: 5\/5 actions succeeded/);

    const piped = await new Promise<{ code: number | null; out: string; err: string }>(
      (resolve, reject) => {
        const child = spawn('sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
        });
        child.stderr.on('data', (d: Buffer) => {
          err += d.toString();
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, out, err });
        });
      },
    );
    assert.equal(piped.code, 0, piped.err);
    assert.doesNotMatch(piped.out + piped.err, /\x1b/);
    assert.match(piped.err, /^rake-ts: build \(1\/2\): 4 actions$/m);
    assert.match(piped.err, /^rake-ts: ok build#0 on 127\.0\.0\.1:\d+ in [\d.]+ s: echo alpha-1/m);
    assert.match(piped.out, /^alpha-1\nalpha-2\nalpha-3$/m);
    // Off a terminal, stdout is only what the actions printed; the summary goes to stderr.
    assert.match(piped.err, /^rake-ts: ok: 5\/5 actions succeeded/m);
    assert.doesNotMatch(piped.out, /rake-ts: /, 'progress and summary lines stay on stderr');
  });
});
