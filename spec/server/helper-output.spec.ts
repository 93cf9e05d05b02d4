// A job's stdout and stderr through the spawn helper: two pipes per job that the helper
// reads and forwards to the server as frames on its own stdout (docs/server.md, "Starting
// jobs"). Byte-exact output, many jobs at once, a reader that gives up, and the helper's
// bounded buffering when the server does not read.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { runJob } from '../../src/server/job.js';
import { createLauncher, type Launcher } from '../../src/server/launcher.js';
import { SPAWN_HELPER_SOURCE } from '../../src/server/spawn-helper.js';
import { waitUntil } from '../helpers/wait.js';
import { alive } from './support.js';

const silent = pino({ level: 'silent' });

function bytes(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('error', reject);
    stream.once('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** A field of /proc/PID/status, as text. */
async function status(pid: number, field: string): Promise<string> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '';
}

/**
 * The spawn helper's stdout taken apart: its event lines, the bytes of each job's stream
 * (`o1` = job 1's stdout), the text of every stream but `o1`, and the streams that ended;
 * with `check`, that `o1` holds nothing but zeros.
 */
function frames(
  all: Buffer,
  check = false,
): {
  lines: string[];
  got: Map<string, number>;
  text: string[];
  ends: string[];
} {
  const out = {
    lines: [] as string[],
    got: new Map<string, number>(),
    text: [] as string[],
    ends: [] as string[],
  };
  let at = 0;
  while (at < all.length) {
    const nl = all.indexOf(0x0a, at);
    if (nl < 0) break;
    const line = all.subarray(at, nl).toString('latin1');
    at = nl + 1;
    const m = /^([oe]) (\d+) (\d+)$/.exec(line);
    if (!m) {
      out.lines.push(line);
      continue;
    }
    const len = Number(m[3]);
    const key = `${m[1]}${m[2]}`;
    if (len === 0) {
      out.ends.push(key);
      continue;
    }
    if (at + len > all.length) break;
    const body = all.subarray(at, at + len);
    out.got.set(key, (out.got.get(key) ?? 0) + len);
    if (key !== 'o1') out.text.push(`${key}:${body.toString('latin1')}`);
    else if (check)
      assert.ok(
        body.every((b) => b === 0),
        'job 1 wrote only zeros',
      );
    at += len;
  }
  return out;
}

for (const kind of ['python3', 'node'] as const) {
  describe(`job output: ${kind} launcher`, () => {
    let launcher: Launcher;
    let dir: string;
    before(async () => {
      launcher = await createLauncher(kind, silent);
      dir = await mkdtemp(join(tmpdir(), 'rake-output-'));
    });
    after(async () => {
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('carries binary output byte for byte: NUL bytes, bytes that are not UTF-8, 3 MiB', async () => {
      const blob = Buffer.concat([
        Buffer.from([0, 0xff, 0xfe, 0x0a, 0, 0x80, 0xc3]),
        randomBytes(3 * 1024 * 1024),
        Buffer.from('o 1 5\n'),
      ]);
      await writeFile(join(dir, 'blob'), blob);
      const job = await launcher.launch("cat blob; printf '\\000e\\377' >&2; cat blob >&2", dir);
      const [out, err, code] = await Promise.all([
        bytes(job.stdout),
        bytes(job.stderr),
        job.exited,
      ]);
      assert.equal(code, 0);
      assert.ok(out.equals(blob), `stdout: ${out.length} bytes, ${blob.length} sent`);
      const wantErr = Buffer.concat([Buffer.from([0, 0x65, 0xff]), blob]);
      assert.ok(err.equals(wantErr), `stderr: ${err.length} bytes, ${wantErr.length} sent`);
    });

    it('keeps 8 jobs writing at once apart, each its own 1 MiB exactly', async () => {
      const jobs = await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          const outcome = await runJob(
            {
              command: `head -c 1048576 /dev/zero | tr '\\000' '${String.fromCharCode(97 + i)}'; echo e${i} >&2`,
              cwd: dir,
              signal: new AbortController().signal,
              timeoutMs: 0,
              maxOutputBytes: 4 * 1024 * 1024,
            },
            launcher,
          );
          return outcome;
        }),
      );
      for (const [i, o] of jobs.entries()) {
        assert.equal(o.reason, 'exited');
        if (o.reason !== 'exited') continue;
        const out = Buffer.concat(o.stdout);
        assert.equal(out.length, 1048576);
        assert.ok(
          out.equals(Buffer.alloc(1048576, 97 + i)),
          `job ${i}'s stdout mixed with another's`,
        );
        assert.equal(o.stderr.toString(), `e${i}\n`);
      }
    });

    it('a reader that destroys stdout while the job writes: the job gets SIGPIPE (141)', async () => {
      const job = await launcher.launch('while :; do echo tick; sleep 0.01; done', dir);
      await new Promise<void>((ok) => job.stdout.once('data', () => ok()));
      job.stdout.destroy();
      const code = await Promise.race([
        job.exited,
        new Promise<string>((ok) => setTimeout(() => ok('still running after 10 s'), 10_000)),
      ]);
      job.kill();
      assert.equal(code, 141);
    });
  });
}

describe('spawn helper: a stream the server gives up on', () => {
  it("a process that escaped the job's containment and keeps its stdout: the job ends after the grace, the process gets EPIPE", {
    timeout: 60_000,
  }, async () => {
    // Tag containment, and a process that empties its environment (and leaves the process
    // group): nothing kills it when the job ends, so the job's stdout stays open.
    const launcher = await createLauncher('python3', silent, 'python3', 'tag');
    const dir = await mkdtemp(join(tmpdir(), 'rake-output-'));
    let escaped = 0;
    try {
      const outcome = await runJob(
        {
          command:
            "env -i /usr/bin/setsid /bin/sh -c 'echo $$ > escaped; while :; do echo tick; sleep 0.05; done' & " +
            'while [ ! -s escaped ]; do sleep 0.01; done; echo started',
          cwd: dir,
          signal: new AbortController().signal,
          timeoutMs: 0,
          maxOutputBytes: 1 << 20,
        },
        launcher,
      );
      escaped = Number((await readFile(join(dir, 'escaped'), 'utf8')).trim());
      assert.equal(outcome.reason, 'exited');
      if (outcome.reason === 'exited') {
        assert.equal(outcome.exitCode, 0);
        assert.match(Buffer.concat(outcome.stdout).toString(), /started\n/);
      }
      // The server gave up on the stream after the grace, and the helper closed its end.
      await waitUntil(() => !alive(escaped), { what: 'the escaped writer to die of SIGPIPE' });
    } finally {
      if (escaped > 0 && alive(escaped)) process.kill(escaped, 'SIGKILL');
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('spawn helper: output when the server does not read', () => {
  it('holds a bounded amount, blocks the writing job, starts other jobs, and loses nothing', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rake-output-'));
    const helper = spawn('python3', ['-c', SPAWN_HELPER_SOURCE], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const TOTAL = 20_000_000;
    try {
      const out = helper.stdout as Readable;
      const chunks: Buffer[] = [];
      out.on('data', (c: Buffer) => chunks.push(c));
      await waitUntil(() => Buffer.concat(chunks).toString('latin1').startsWith('ready\n'), {
        what: "the helper's ready",
      });
      // The server stops reading: Node stops reading the pipe once its buffer is full.
      out.pause();
      const rssBefore = Number.parseInt(await status(helper.pid ?? 0, 'VmRSS'), 10);
      const run = (id: number, cmd: string) =>
        helper.stdin?.write(`${JSON.stringify({ op: 'run', id, cwd: dir, cmd, env: {} })}\n`);
      run(1, `head -c ${TOTAL} /dev/zero`);
      const kids = async () =>
        (await readFile(`/proc/${helper.pid}/task/${helper.pid}/children`, 'utf8'))
          .trim()
          .split(/\s+/)
          .filter(Boolean)
          .map(Number);
      let writer = 0;
      await waitUntil(
        async () => {
          [writer = 0] = await kids();
          if (writer === 0) return false;
          const wchan = await readFile(`/proc/${writer}/wchan`, 'utf8').catch(() => '');
          return wchan.includes('pipe_write');
        },
        { what: 'the job to block on its full pipe', ms: 30_000 },
      );
      // What the job got rid of is all the helper, the pipes and Node's buffer hold.
      const io = await readFile(`/proc/${writer}/io`, 'utf8');
      const written = Number(/^wchar: (\d+)$/m.exec(io)?.[1]);
      assert.ok(written < 8 * 2 ** 20, `the job wrote ${written} bytes with nobody reading`);
      const rss = Number.parseInt(await status(helper.pid ?? 0, 'VmRSS'), 10);
      assert.ok(rss - rssBefore < 8 * 1024, `the helper grew by ${rss - rssBefore} kB`);
      // Another job starts all the same.
      run(2, 'echo second; echo started > started');
      await waitUntil(async () => (await readdir(dir)).includes('started'), {
        what: 'the second job to run while the first is blocked',
      });
      // The server reads again: everything arrives, in frames per job and stream.
      out.resume();
      await waitUntil(
        () => {
          const { lines, ends } = frames(Buffer.concat(chunks));
          return lines.includes('x 1 0') && lines.includes('x 2 0') && ends.length === 4;
        },
        { what: 'both jobs and their output to end', ms: 30_000 },
      );
      const { got, text: text2, ends, lines } = frames(Buffer.concat(chunks), true);
      assert.ok(
        lines.some((l) => /^s 2 \d+ none$/.test(l)),
        lines.join(' | '),
      );
      assert.equal(got.get('o1'), TOTAL);
      assert.deepEqual(text2, ['o2:second\n']);
      // Each stream's end mark, once.
      assert.deepEqual(ends.sort(), ['e1', 'e2', 'o1', 'o2']);
    } finally {
      helper.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
