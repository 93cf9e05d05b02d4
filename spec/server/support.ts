import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Readable, Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import { type ServeOptions, type ServerHandle, serve } from '../../src/server/index.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { pollUntil } from '../helpers/wait.js';

/** A server on a loopback port with its own workdir, and the log lines it wrote. */
export interface TestServer {
  readonly handle: ServerHandle;
  readonly port: number;
  readonly workdir: string;
  /** A scratch directory outside the workdir (pid files, fixtures). */
  readonly scratch: string;
  readonly logs: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

/**
 * Starts a server on port 0 with a logger that records JSON lines. The workdir is a
 * directory of the test's own unless `ownWorkdir`, where the server makes (and removes) it.
 */
export async function startServer(
  options: ServeOptions = {},
  { ownWorkdir = false } = {},
): Promise<TestServer> {
  const root = await mkdtemp(join(tmpdir(), 'rake-spec-'));
  const workdir = join(root, 'work');
  const scratch = join(root, 'scratch');
  await mkdir(scratch, { recursive: true });
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
      }
      cb();
    },
  });
  const logger: Logger = pino({ level: 'debug' }, sink);
  const handle = await serve({
    port: 0,
    logger,
    graceSeconds: 2,
    ...(ownWorkdir ? {} : { workdir }),
    ...options,
  });
  return {
    handle,
    port: handle.port,
    workdir: handle.workdir,
    scratch,
    logs,
    async close() {
      await handle.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** Polls `check` every 20 ms for up to `ms`; returns whether it came true. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms = 5000,
): Promise<boolean> {
  return (await pollUntil(check, { ms })) !== undefined;
}

/** Job directories currently under the workdir. */
export async function jobDirs(workdir: string): Promise<string[]> {
  return (await readdir(workdir).catch(() => [] as string[])).filter((n) => n.startsWith('job-'));
}

/** True while a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  const stat = `/proc/${pid}/stat`;
  if (!existsSync(stat)) return false;
  try {
    // Field 3 is the state; Z = zombie (dead, not yet reaped by its parent).
    const fields = readFileSync(stat, 'utf8')
      .replace(/^.*\) /, '')
      .split(' ');
    return fields[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Reads pids written by a job into files under `dir` (one per file), waiting for them. */
export async function readPids(dir: string, names: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const name of names) {
    const file = join(dir, name);
    let text = '';
    await waitFor(() => {
      text = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
      return /^\d+$/.test(text);
    });
    pids.push(Number(text));
  }
  return pids;
}

/** Asserts the server is clean and still serving: no job dirs, pids dead, `echo ok` works. */
export async function assertHealthy(
  server: TestServer,
  pids: readonly number[] = [],
): Promise<string[]> {
  const problems: string[] = [];
  if (!(await waitFor(async () => (await jobDirs(server.workdir)).length === 0))) {
    problems.push(`job dirs left: ${(await jobDirs(server.workdir)).join(', ')}`);
  }
  for (const pid of pids) {
    if (!(await waitFor(() => !alive(pid)))) problems.push(`process ${pid} still alive`);
  }
  if (!(await waitFor(() => server.handle.cost() === 0))) {
    problems.push(`cost is ${server.handle.cost()}, not 0`);
  }
  const peer = await RawPeer.connect(server.port);
  try {
    await peer.send(pkt('!C', 'echo ok'));
    await peer.expect(Buffer.concat([hdr('!SS  3'), Buffer.from('ok\n')]));
    await peer.send(hdr('!D0'));
  } catch (err) {
    problems.push(`follow-up request failed: ${(err as Error).message}`);
  } finally {
    peer.destroy();
  }
  return problems;
}

/**
 * Everything a job's output stream carries, as text, once it has closed. A job that closed
 * its output before launch() resolved hands over a stream that has already ended (net emits
 * 'end' at EOF once its buffer is empty): no 'close' will come, so `closed` is checked first.
 */
export function collect(stream: Readable): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    stream.on('data', (c: Buffer) => {
      text += c.toString('utf8');
    });
    if (stream.closed) resolve(text);
    else stream.once('close', () => resolve(text));
  });
}
