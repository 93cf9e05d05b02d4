// The client's load stream over real sockets (issue 20): one connection per host carrying
// the cost query, the hello and the watch; the server's pushed loads as live states; a base
// server, a server without a heartbeat, a server with a token; a real rakeserver program
// that is frozen (SIGSTOP) goes lost, and live again once it is thawed.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  filter,
  firstValueFrom,
  lastValueFrom,
  type Observable,
  type Subscription,
  takeWhile,
  toArray,
} from 'rxjs';
import type { Endpoint } from '../../src/client/endpoint.js';
import { type HostLoad, hostLoad, tcpWatchLoad } from '../../src/client/load-stream.js';
import { DEFAULT_BEAT_MS } from '../../src/client/negotiate.js';
import { DEFAULT_LIMITS, Token } from '../../src/protocol/index.js';
import { startBaseServer } from '../helpers/base-server.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { startServer, type TestServer } from '../server/support.js';

const watch = (token?: string) =>
  tcpWatchLoad({
    limits: DEFAULT_LIMITS,
    connectTimeoutMs: 5000,
    ...(token === undefined ? {} : { tokenFor: () => new Token(token) }),
  });

/** Every state of `endpoint`'s load stream, recorded as it comes. */
function record(endpoint: Endpoint, token?: string): { states: HostLoad[]; sub: Subscription } {
  const states: HostLoad[] = [];
  const sub = hostLoad(endpoint, watch(token), { reconnectMs: 200 }).subscribe((s) =>
    states.push(s),
  );
  return { states, sub };
}

const first = (o: Observable<HostLoad>, state: HostLoad['state']) =>
  firstValueFrom(o.pipe(filter((s) => s.state === state)));

describe('load stream: our server', { timeout: 60_000 }, () => {
  let server: TestServer;
  let gates = '';
  before(async () => {
    server = await startServer({ maxJobs: 2, heartbeatIntervalSeconds: 0.2 });
    gates = await mkdtemp(join(tmpdir(), 'rake-watch-'));
  });
  after(async () => {
    await server.close();
    await rm(gates, { recursive: true, force: true });
  });

  it('is live at once and follows another client’s job; one connection, unsubscribing ends it', async () => {
    const endpoint = { host: '127.0.0.1', port: server.port };
    const { states, sub } = record(endpoint);
    try {
      await waitUntil(() => states.some((s) => s.state === 'live' && s.load.beatMs === 200), {
        what: 'a first load',
      });
      const live = states.filter((s) => s.state === 'live');
      // The cost reply is the first load (its cost, the annex's slots, the default beat), before
      // the server's own `!X load`, which says the same and its beat.
      assert.deepEqual(live.slice(0, 2), [
        {
          host: `127.0.0.1:${server.port}`,
          state: 'live',
          load: { jobs: 0, running: 0, queued: 0, slots: 2, beatMs: DEFAULT_BEAT_MS },
        },
        {
          host: `127.0.0.1:${server.port}`,
          state: 'live',
          load: { jobs: 0, running: 0, queued: 0, slots: 2, beatMs: 200 },
        },
      ]);
      const go = join(gates, 'go');
      const job = await RawPeer.connect(server.port);
      await job.send(pkt('!C', `while [ ! -e ${go} ]; do sleep 0.01; done`));
      await waitUntil(
        () => states.some((s) => s.state === 'live' && s.load.jobs === 1 && s.load.running === 1),
        { what: 'the load with the other client’s job' },
      );
      await writeFile(go, '');
      await job.expect(hdr('!SS  0'));
      await waitUntil(
        () => {
          const last = states.at(-1);
          return last?.state === 'live' && last.load.jobs === 0;
        },
        { what: 'the load after the job' },
      );
      job.destroy();
    } finally {
      sub.unsubscribe();
    }
    assert.ok(
      states.every((s) => s.state !== 'lost'),
      JSON.stringify(states),
    );
    // The watch was one connection, ended with !D: logged as routine, no job, no refusal.
    await waitUntil(
      () =>
        server.logs.some(
          (l) => l.msg === 'connection' && l.costQueries === 1 && l.mode === 'extended',
        ),
      { what: 'the watch connection’s log line' },
    );
    const watches = server.logs.filter((l) => l.msg === 'connection' && l.costQueries === 1);
    assert.equal(watches.length, 1);
    assert.equal(watches[0]?.outcome, 'ok');
  });

  it('a server without a heartbeat (no load) and a base server are unsupported: polled', async () => {
    const quiet = await startServer({ heartbeatIntervalSeconds: 0 });
    const base = await startBaseServer();
    try {
      const q = await first(
        hostLoad({ host: '127.0.0.1', port: quiet.port }, watch(), { reconnectMs: 100 }),
        'unsupported',
      );
      assert.equal(
        q.state === 'unsupported' && q.why,
        'a rake-ts server without the load extension',
      );
      const b = await first(
        hostLoad({ host: '127.0.0.1', port: base.port }, watch(), { reconnectMs: 100 }),
        'unsupported',
      );
      assert.equal(b.state === 'unsupported' && b.why, 'a base-protocol server');
      // The base server was asked its cost and nothing else: no command, no file.
      assert.deepEqual(base.commands, []);
      assert.deepEqual(base.received, []);
    } finally {
      await quiet.close();
      await base.close();
    }
  });

  it('a host that connects but does not answer the cost query in time: unsupported, not reopened', async () => {
    // Accepts and reads, never answers: a busy or frozen base server. Reopening its stream
    // would send it one more `!E0` every back-off, which a poll would not.
    let accepted = 0;
    const silent = createServer((socket) => {
      accepted++;
      socket.on('error', () => {});
      socket.resume();
    });
    await new Promise<void>((ok) => silent.listen(0, '127.0.0.1', ok));
    const port = (silent.address() as { port: number }).port;
    try {
      const quick = tcpWatchLoad({ limits: DEFAULT_LIMITS, connectTimeoutMs: 200 });
      const states = await lastValueFrom(
        hostLoad({ host: '127.0.0.1', port }, quick, { reconnectMs: 50 }).pipe(
          // Up to its first word after `waiting` (before this, `lost`, then reopened).
          takeWhile((x) => x.state === 'waiting', true),
          toArray(),
        ),
      );
      // Unsupported, which ends the stream for good (no reopening): the host is polled.
      assert.deepEqual(
        states.map((x) => x.state),
        ['waiting', 'unsupported'],
      );
      assert.match(
        states[1]?.state === 'unsupported' ? states[1].why : '',
        /no answer to its cost query within 200 ms: polled per action/,
      );
      assert.equal(accepted, 1);
    } finally {
      silent.close();
    }
  });

  it('with a token: the client proves it, then watches; without one the host is polled', async () => {
    const TOKEN = 'load stream token 0123456789';
    const locked = await startServer({ token: TOKEN, heartbeatIntervalSeconds: 0.2, maxJobs: 3 });
    try {
      const endpoint = { host: '127.0.0.1', port: locked.port };
      const ok = await first(hostLoad(endpoint, watch(TOKEN), { reconnectMs: 100 }), 'live');
      assert.equal(ok.state === 'live' && ok.load.slots, 3);
      const refused = await first(hostLoad(endpoint, watch(), { reconnectMs: 100 }), 'unsupported');
      assert.match(
        refused.state === 'unsupported' ? refused.why : '',
        /^refused the load stream: /,
      );
    } finally {
      await locked.close();
    }
  });
});

const root = new URL('../..', import.meta.url).pathname;
const entry =
  "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })";

describe('load stream: a frozen rakeserver', { timeout: 120_000 }, () => {
  let child: ChildProcess | undefined;
  let scratch = '';
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'rake-frozen-'));
    await mkdir(join(scratch, 'work'));
  });
  after(async () => {
    if (child !== undefined && child.exitCode === null) {
      const exited = new Promise((ok) => child?.once('exit', ok));
      child.kill('SIGCONT');
      child.kill('SIGTERM');
      await exited;
    }
    await rm(scratch, { recursive: true, force: true });
  });

  it('goes lost after 3 silent beats, and live again when thawed', async () => {
    child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        entry,
        '--',
        '--port',
        '0',
        '--workdir',
        join(scratch, 'work'),
        '--heartbeat-interval',
        '0.2',
      ],
      { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let text = '';
    child.stderr?.on('data', (c: Buffer) => {
      text += c.toString();
    });
    await waitUntil(() => /"msg":"listening"/.test(text), { ms: 60_000, what: 'listening' });
    const line = text.split('\n').find((l) => l.includes('"msg":"listening"')) as string;
    const port = (JSON.parse(line) as { port: number }).port;
    const { states, sub } = record({ host: '127.0.0.1', port });
    try {
      // The server's own load, which says its beat (the cost reply's stands for a default one).
      await waitUntil(() => states.some((s) => s.state === 'live' && s.load.beatMs === 200), {
        what: 'a first load',
      });
      child.kill('SIGSTOP');
      const frozenAt = performance.now();
      await waitUntil(() => states.at(-1)?.state === 'lost', { ms: 10_000, what: 'lost' });
      // Three beats of 0.2 s, from the last load heard (which came before the freeze).
      assert.ok(performance.now() - frozenAt < 5000);
      assert.match(JSON.stringify(states.at(-1)), /went silent: no load for 0.6 s \(3 beats\)/);
      child.kill('SIGCONT');
      await waitUntil(() => states.at(-1)?.state === 'live', { ms: 10_000, what: 'live again' });
    } finally {
      sub.unsubscribe();
    }
    assert.ok(existsSync(scratch));
  });
});
