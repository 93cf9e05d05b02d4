// Issue 17 defect 5 and issue 18 item 4: off a terminal, stdout carries exactly the bytes the
// actions wrote (binary, invalid UTF-8, no trailing newline), each action's as one block,
// written with backpressure to a reader slower than the writer (large outputs spooled, not
// held); a reader that goes away (EPIPE) stops the client quietly. The built program, a real
// pipe, real files; the figure for 16 × 60 MB is in docs/reliability.md
// (scripts/bench/stdout.ts measures it).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SPOOL_THRESHOLD_BYTES } from '../../src/client/output.js';
import { freePort } from '../client/support.js';

const root = new URL('../../', import.meta.url).pathname;
const bin = join(root, 'bin/rake-ts.js');
const built = existsSync(join(root, 'dist/rake-ts.cjs'));

interface Result {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/**
 * Runs the built program with stdout a pipe that this side reads `slow`ly (one chunk, then
 * a pause of a millisecond, so the pipe stays full and the writer must wait), or closes
 * after `closeAfter` bytes (as `head -c` does).
 */
function rakeTs(
  cwd: string,
  args: string[],
  reader: { slow?: boolean; closeAfter?: number } = {},
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    let got = 0;
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      chunks.push(b);
      got += b.length;
      if (reader.closeAfter !== undefined && got >= reader.closeAfter) {
        child.stdout.destroy();
        return;
      }
      if (reader.slow) {
        child.stdout.pause();
        setTimeout(() => child.stdout.resume(), 1);
      }
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const bound = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(bound);
      resolve({ code, stdout: Buffer.concat(chunks), stderr });
    });
  });
}

describe('action output on stdout, off a terminal', {
  timeout: 180_000,
  skip: built ? false : 'run `npm run build` first',
}, () => {
  let dir: string;
  /** What each action prints: `cat` of a requirement, so the bytes are known here. */
  const blobs = new Map<string, Buffer>();
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rake-stdout-'));
    // Larger than the spool threshold (spooled), under it (in memory), invalid UTF-8 with
    // no newline, and a text line that ends without one.
    blobs.set('big1.bin', randomBytes(SPOOL_THRESHOLD_BYTES * 3 + 17));
    blobs.set('big2.bin', randomBytes(SPOOL_THRESHOLD_BYTES * 2 + 5));
    blobs.set('mid.bin', randomBytes(300 * 1024 + 3));
    blobs.set('bad.bin', Buffer.from([0xff, 0xfe, 0x00, 0x61, 0x80, 0xc3]));
    blobs.set('line.txt', Buffer.from('no newline at the end', 'utf8'));
    for (const [name, bytes] of blobs) await writeFile(join(dir, name), bytes);
    const port = await freePort();
    const actions = [...blobs.keys()]
      .map((name) => `\tremote-cat ${name}\n\t\trequires ${name}\n`)
      .join('');
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nprint:\n${actions}`,
    );
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('carries every action’s bytes exactly, each as one block, to a slow reader', async () => {
    // Without -q: the summary goes to stderr, as stdout is not a terminal.
    const r = await rakeTs(dir, ['--progress=never'], { slow: true });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^rake-ts: ok: 5\/5 actions succeeded/m);
    // The blocks come in the order the actions ended: find each one whole, in turn.
    let rest = r.stdout;
    const seen: string[] = [];
    while (rest.length > 0) {
      const next = [...blobs].find(
        ([name, bytes]) => !seen.includes(name) && rest.subarray(0, bytes.length).equals(bytes),
      );
      assert.ok(next, `at byte ${r.stdout.length - rest.length}: no action's output starts here`);
      seen.push(next[0]);
      rest = rest.subarray(next[1].length);
    }
    assert.deepEqual(seen.sort(), [...blobs.keys()].sort());
    const total = [...blobs.values()].reduce((n, b) => n + b.length, 0);
    assert.equal(r.stdout.length, total, 'not one byte added');
  });

  it('stops quietly with status 141 when the reader goes away (EPIPE)', async () => {
    const r = await rakeTs(dir, ['-q', '--progress=never'], { closeAfter: 1 });
    assert.equal(r.code, 141, r.stderr);
    assert.equal(r.stderr, '', 'no error, no stack trace');
  });
});
