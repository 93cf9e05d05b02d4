import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { identity, lastValueFrom, toArray } from 'rxjs';
import type { Rakefile } from '../../grammar/model.js';
import { parseRakefile } from '../../grammar/parse.js';
import type { RakeEvent, RakeEventOf, RakeEventType } from '../../src/client/events.js';
import { type RunOptions, run } from '../../src/client/run.js';
import { logEvents } from '../../src/observe/log-events.js';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { waitUntil } from '../helpers/wait.js';

const EXAMPLE = new URL('../../examples/hello-c/', import.meta.url).pathname;

/** Starts `n` servers on loopback ports; close them with {@link closeAll}. */
export async function startServers(
  n: number,
  options: { maxJobs?: number; costOffset?: (i: number) => number } = {},
): Promise<ServerHandle[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) =>
      serve({
        port: 0,
        maxJobs: options.maxJobs ?? 8,
        costOffset: options.costOffset?.(i) ?? 0,
        graceSeconds: 0,
      }),
    ),
  );
}

export async function closeAll(servers: readonly { close(): Promise<unknown> }[]): Promise<void> {
  await Promise.all(servers.map((s) => s.close()));
}

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A scratch directory holding `files` (paths relative to it). */
export async function project(files: Record<string, string> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rake-client-'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

/** A copy of examples/hello-c (sources only) in a scratch directory. */
export async function exampleCopy(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rake-example-'));
  await cp(EXAMPLE, dir, {
    recursive: true,
    filter: (src) => !/\.o$|\/hello$/.test(src),
  });
  return dir;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** `HOSTS = 127.0.0.1:p1 ...` and `PORT = p` lines replacing those of `text`. */
export function withHosts(text: string, ports: readonly number[], port: number): string {
  const hosts = ports.map((p) => `127.0.0.1:${p}`).join(' ');
  return text.replace(/^PORT.*$/m, `PORT = ${port}`).replace(/^HOSTS.*$/m, `HOSTS = ${hosts}`);
}

/** Parses Rakefile text, throwing on diagnostics. */
export function parse(text: string, file = 'Rakefile'): Rakefile {
  const result = parseRakefile(text, { file });
  if (!result.ok) throw new Error(result.diagnostics.map((d) => d.message).join('\n'));
  return result.rakefile;
}

/** Runs Rakefile text in `dir` and collects every event. */
export async function runAll(
  dir: string,
  text: string,
  options: RunOptions = {},
): Promise<RakeEvent[]> {
  // run() logs none of its events: with a logger, they are logged here, as the CLI does.
  const log = options.logger?.child({ component: 'client' });
  return lastValueFrom(
    run(parse(text, join(dir, 'Rakefile')), { directory: dir, ...options }).pipe(
      log === undefined ? identity : logEvents(log),
      toArray(),
    ),
  );
}

/** The events of one type. */
export function only<T extends RakeEventType>(
  events: readonly RakeEvent[],
  type: T,
): RakeEventOf<T>[] {
  return events.filter((e): e is RakeEventOf<T> => e.type === type);
}

/** The `done` summary. */
export function summary(events: readonly RakeEvent[]) {
  const done = only(events, 'done')[0];
  if (done === undefined) throw new Error('no done event');
  return done.summary;
}

/** Polls `check` every 10 ms until it is true; throws after `ms`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms = 10_000,
  what = 'condition',
): Promise<void> {
  await waitUntil(check, { ms, every: 10, what });
}

/** Every file under `dir`, relative, sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) =>
      join(e.parentPath ?? (e as unknown as { path: string }).path, e.name).slice(dir.length + 1),
    )
    .sort();
}

/**
 * Runs `text` (a Rakefile) in `dir` with load streams, no embedded server and no fallback,
 * as the load-dispatch specs do; every event of the run.
 */
export async function runWithStreams(
  dir: string,
  text: string,
  options: RunOptions = {},
): Promise<RakeEvent[]> {
  return lastValueFrom(
    run(parse(text), {
      directory: dir,
      embedded: false,
      fallback: false,
      loadStreams: true,
      ...options,
    }).pipe(toArray()),
  );
}
