// Issue 17, defect 12: a loopback host that accepts connections and never answers (a frozen
// rakeserver, a server of another protocol) must not hang the client. The embedded-server
// probe is bounded by --connect-timeout and --cost-timeout, cancelling a run closes every
// socket it opened, and the built program exits promptly on SIGTERM whatever is still open.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseRakefile } from '../../grammar/parse.js';
import { run } from '../../src/client/run.js';
import { freePort } from '../client/support.js';
import { waitUntil } from '../helpers/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const bin = join(root, 'bin/rake-ts.js');
const built = existsSync(join(root, 'dist/rake-ts.cjs'));

/** A listener that accepts every connection, reads everything, and never writes a byte. */
interface Silent {
  readonly port: number;
  readonly open: Set<Socket>;
  accepted: number;
  readonly server: Server;
}

async function silentListener(): Promise<Silent> {
  const open = new Set<Socket>();
  const state = { accepted: 0 };
  const server = createServer((socket) => {
    state.accepted++;
    open.add(socket);
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => open.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    open,
    server,
    get accepted() {
      return state.accepted;
    },
  } as Silent;
}

async function closeListener(s: Silent): Promise<void> {
  for (const socket of s.open) socket.destroy();
  await new Promise<void>((resolve) => s.server.close(() => resolve()));
}

/** Runs the built program; resolves its status, output and how long it took. */
function rakeTs(
  cwd: string,
  args: string[],
  onStart: (child: ChildProcess) => void = () => {},
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    onStart(child);
  });
}

describe('a loopback host that accepts and never answers', {
  timeout: 60_000,
  skip: built ? false : 'run `npm run build` first',
}, () => {
  let silent: Silent;
  let dir: string;
  before(async () => {
    silent = await silentListener();
    dir = await mkdtemp(join(tmpdir(), 'rake-silent-'));
  });
  after(async () => {
    await closeListener(silent);
    await rm(dir, { recursive: true, force: true });
  });

  it('gets no embedded server and is reported as not answering within --cost-timeout', async () => {
    // PORT is a free port: the fallback starts an embedded server there, not at the silent host.
    const port = await freePort();
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${port}\nHOSTS = 127.0.0.1:${silent.port}\n\nall:\n\tremote-echo hi\n`,
    );
    const failed = await rakeTs(dir, ['--cost-timeout', '1', '--no-fallback', '--progress=never']);
    assert.equal(failed.code, 3, failed.stderr);
    assert.match(
      failed.stderr,
      new RegExp(
        `no host answered the cost poll \\(127\\.0\\.0\\.1:${silent.port}: no answer within 1000 ms\\)`,
      ),
    );
    // With the fallback, the action runs on the local (embedded) server instead.
    const ok = await rakeTs(dir, ['--cost-timeout', '1', '--progress=never']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.split('\n')[0], 'hi');
    assert.match(
      ok.stderr,
      new RegExp(`started an embedded server at 127\\.0\\.0\\.1:${port} \\(fallback\\)`),
    );
    assert.doesNotMatch(ok.stderr, new RegExp(`embedded server at 127\\.0\\.0\\.1:${silent.port}`));
  });

  it('exits with 143 promptly on SIGTERM while a job waits on it', async () => {
    // The local server is the silent listener: the local action's job waits for a reply.
    await writeFile(join(dir, 'Rakefile'), `PORT = ${silent.port}\n\nall:\n\techo hi\n`);
    const before = silent.accepted;
    let child: ChildProcess | undefined;
    const exited = rakeTs(dir, ['--cost-timeout', '1', '--progress=never'], (c) => {
      child = c;
    });
    // The probe's connection, then the job's: the client is now waiting on the job.
    await waitUntil(() => silent.accepted >= before + 2, { ms: 30_000, what: 'the job' });
    child?.kill('SIGTERM');
    // The silent peer never closes: before the fix the process stayed alive for good. The
    // bound only tells a hang from an exit; it is no speed claim.
    let bound: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      exited,
      new Promise<never>((_, reject) => {
        bound = setTimeout(() => reject(new Error('still running 20 s after SIGTERM')), 20_000);
      }),
    ]).finally(() => clearTimeout(bound));
    assert.equal(result.code, 143, result.stderr);
    assert.match(result.stderr, /terminated: cancelled every action/);
    await waitUntil(() => silent.open.size === 0, { ms: 10_000, what: 'every socket closed' });
  });
});

describe('cancelling a run against a silent loopback host', { timeout: 30_000 }, () => {
  it('closes every socket it opened, the embedded-server probe included', async () => {
    const silent = await silentListener();
    try {
      const rakefile = parseRakefile(
        `PORT = ${silent.port}\nHOSTS = 127.0.0.1:${silent.port}\n\nall:\n\techo hi\n`,
      );
      assert.ok(rakefile.ok);
      // Long timeouts: the probe is still waiting when the run is cancelled.
      const subscription = run(rakefile.rakefile, {
        connectTimeoutMs: 20_000,
        costTimeoutMs: 20_000,
      }).subscribe();
      await waitUntil(() => silent.open.size >= 1, { ms: 10_000, what: 'the probe' });
      subscription.unsubscribe();
      await waitUntil(() => silent.open.size === 0, {
        ms: 10_000,
        what: 'the probe connection to close',
      });
    } finally {
      await closeListener(silent);
    }
  });
});
