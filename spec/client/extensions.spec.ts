// The client's side of the negotiated extensions, end to end on loopback: real servers
// (ours, and one that speaks only the base protocol), real files, real compilers.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { type Logger, pino } from 'pino';
import { lastValueFrom, toArray } from 'rxjs';
import { CACHE_MIN_BYTES } from '../../src/client/negotiate.js';
import { type TransferMeter, tcpTransport } from '../../src/client/transport.js';
import { Token } from '../../src/protocol/token.js';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { startBaseServer } from '../helpers/base-server.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import {
  isLoadStream,
  type RecordedConnection,
  type RecordingProxy,
  startRecordingProxy,
} from '../helpers/recording-proxy.js';
import { exampleCopy, only, project, removeDir, runAll, summary, withHosts } from './support.js';

const T = { timeout: 60_000 };
const OFFER = Buffer.from(`!E0${' '.repeat(55)}rake/1`, 'latin1');

const oneHost = (port: number, body: string) =>
  `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\n${body}`;

/** A pino logger whose lines are kept, to grep for them. */
function capture(): { logger: Logger; text: () => string } {
  let all = '';
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      all += chunk.toString();
      cb();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), text: () => all };
}

/**
 * Runs a one-action Rakefile (`action`, requiring `requires`) in `dir` through a recording
 * proxy in front of `server`; returns its events and the bytes of the job's connection.
 */
async function recordJob(
  server: ServerHandle,
  dir: string,
  action: string,
  requires: string,
): Promise<{ job: RecordedConnection; events: Awaited<ReturnType<typeof runAll>> }> {
  const proxy = await startRecordingProxy(server.port);
  try {
    const text = oneHost(proxy.port, `set:\n\t${action}\n\t\trequires ${requires}\n`);
    const events = await runAll(dir, text, { embedded: false });
    await proxy.settled();
    // Not the load stream (its hello asks for `load`): the job's own connection.
    const job = proxy.connections.find(
      (c) => c.toServer.includes('hello rake/1') && !isLoadStream(c),
    );
    assert.ok(job, 'a job connection with a hello');
    return { job: afterOpeningQuery(proxy, job), events };
  } finally {
    await proxy.close();
  }
}

/**
 * The job's own conversation on `job`: the first job to a host rides the load stream's
 * opening connection (docs/protocol.md, "A warm connection"), whose cost query (`!E0` with
 * the offer, and its answer) comes first; what follows it is as on a connection of its own.
 */
function afterOpeningQuery(proxy: RecordingProxy, job: RecordedConnection): RecordedConnection {
  if (job.toServer.subarray(0, 3).toString('latin1') !== '!E0') return job;
  const replyBytes = 64 + Number(job.toClient.subarray(2, 64).toString('latin1').split(' ')[0]);
  const index = proxy.connections.indexOf(job);
  let back = 0;
  let sent = 0;
  let sentBeforeReply: number | undefined;
  for (const e of proxy.log.filter((x) => x.connection === index)) {
    if (!e.toServer) {
      if (back >= replyBytes && sentBeforeReply === undefined) sentBeforeReply = sent;
      back += e.bytes.length;
    } else if (back >= replyBytes) sent += e.bytes.length;
  }
  return {
    toServer: job.toServer.subarray(64),
    toClient: job.toClient.subarray(replyBytes),
    ...(sentBeforeReply === undefined ? {} : { sentBeforeReply }),
  };
}

async function ourServer(options: Parameters<typeof serve>[0] = {}): Promise<ServerHandle> {
  return serve({ port: 0, maxJobs: 4, graceSeconds: 0, ...options });
}

describe('our client and a base-protocol server', () => {
  it('sends the base bytes exactly, the offer in the !E0 padding aside; never !X', T, async () => {
    const base = await startBaseServer();
    const proxy = await startRecordingProxy(base.port);
    const dir = await project({ 'a.txt': 'hello' });
    try {
      const text = oneHost(proxy.port, 'set:\n\tremote-cat a.txt\n\t\trequires a.txt\n');
      const events = await runAll(dir, text, { embedded: false });
      assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
      assert.deepEqual(
        only(events, 'output').map((e) => e.stdout.text()),
        ['hello'],
      );
      await proxy.settled();
      const [query, job, ...rest] = proxy.connections;
      assert.equal(rest.length, 0);
      // The cost query: one header, the offer in its padding, nothing else.
      assert.deepEqual(query?.toServer, OFFER);
      // The job: exactly what a base client sends (2-byte requests come from the server).
      const want = Buffer.concat([
        hdr('!R0'),
        hdr('!SSIF1'),
        pkt('!S!NF', 'a.txt'),
        pkt('!S!ZF', '5'),
        Buffer.from('hello'),
        pkt('!C', 'cat a.txt'),
        hdr('!D0'),
      ]);
      assert.deepEqual(job?.toServer.toString('latin1'), want.toString('latin1'));
      for (const c of proxy.connections) {
        assert.equal(c.toServer.includes('!X'), false, 'no extension message reached it');
      }
    } finally {
      await proxy.close();
      await base.close();
      await removeDir(dir);
    }
  });
});

describe('our client and a strict base server', () => {
  it(
    'asks again without the offer if a server refuses it, and never offers it again',
    T,
    async () => {
      // Parses the whole header as the seed says, so the offer in the padding is garbage to it.
      const seen: string[] = [];
      const strict = createServer((socket) => {
        socket.once('data', (b: Buffer) => {
          const head = b.subarray(0, 64).toString('latin1');
          seen.push(head.trimEnd());
          if (/^!E0 *$/.test(head)) socket.end(pkt('!E', '4'));
          else socket.end(Buffer.concat([pkt('!F', 'bad header'), pkt('!F', '2')]));
        });
      });
      await new Promise<void>((ok) => strict.listen(0, '127.0.0.1', ok));
      const port = (strict.address() as { port: number }).port;
      try {
        const transport = tcpTransport();
        for (let i = 0; i < 2; i++) {
          const probes = await lastValueFrom(
            transport.queryCost({ host: '127.0.0.1', port }).pipe(toArray()),
          );
          assert.deepEqual(probes.at(-1), { type: 'cost', cost: 4, peer: { kind: 'base' } });
        }
        assert.deepEqual(seen, [OFFER.toString('latin1'), '!E0', '!E0']);
      } finally {
        strict.close();
      }
    },
  );
});

describe('our client and our server', () => {
  it('brings a successful compile’s warnings to the events, with action and host', T, async () => {
    const server = await ourServer();
    const dir = await project({
      'warn.c': 'int f(void) { int unused; return 0; }\n',
    });
    try {
      const text = oneHost(server.port, 'set:\n\tremote-cc -Wall -c warn.c\n\t\trequires warn.c\n');
      const events = await runAll(dir, text, { embedded: false });
      const [ok] = only(events, 'action-succeeded');
      assert.ok(ok, JSON.stringify(only(events, 'action-failed')));
      assert.equal(ok.host, `127.0.0.1:${server.port}`);
      assert.equal(ok.action.command, 'cc -Wall -c warn.c');
      assert.match(ok.stderr ?? '', /warning: unused variable/);
      assert.deepEqual(ok.files, ['warn.o']);
    } finally {
      await server.close();
      await removeDir(dir);
    }
  });

  it('returns executables with +x: the example program runs without chmod', T, async () => {
    const server = await ourServer();
    const dir = await exampleCopy();
    try {
      const rakefile = await readFile(join(dir, 'Rakefile'), 'utf8');
      assert.doesNotMatch(rakefile.replace(/^#.*$/gm, ''), /chmod/);
      const text = withHosts(rakefile, [server.port], server.port);
      const events = await runAll(dir, text);
      assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
      assert.match(only(events, 'output').at(-1)?.stdout.text() ?? '', /^hello from rake-ts/);
      assert.equal((await stat(join(dir, 'hello'))).mode & 0o100, 0o100);
      assert.match(execFileSync(join(dir, 'hello'), ['2', '4'], { encoding: 'utf8' }), /sum 6/);
      assert.equal(
        (await stat(join(dir, 'main.o'))).mode & 0o111,
        0,
        'objects stay non-executable',
      );
    } finally {
      await server.close();
      await removeDir(dir);
    }
  });

  it('does not upload a requirement the server already holds (bytes counted)', T, async () => {
    const server = await ourServer();
    const header = Buffer.alloc(256 * 1024, 0x20);
    header.write('#define SHARED 1\n');
    const files: Record<string, string> = { 'shared.h': header.toString('latin1') };
    const actions: string[] = [];
    for (let i = 0; i < 4; i++) {
      files[`u${i}.c`] = `#include "shared.h"\nint u${i} = SHARED + ${i};\n`;
      actions.push(`\tremote-cc -c u${i}.c\n\t\trequires u${i}.c shared.h`);
    }
    const dir = await project(files);
    try {
      const text = oneHost(server.port, `set:\n${actions.join('\n')}\n`);
      const meters: TransferMeter[] = [];
      for (let build = 0; build < 2; build++) {
        const meter: TransferMeter = { sent: 0, received: 0, connections: 0 };
        const events = await runAll(dir, text, {
          embedded: false,
          transport: tcpTransport({ meter }),
        });
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
        meters.push(meter);
      }
      const [first, second] = meters as [TransferMeter, TransferMeter];
      // The header crosses once on the first build (the other jobs wait for that upload),
      // and not at all on the second. The sources, under CACHE_MIN_BYTES, are sent unasked
      // every time and never cached.
      assert.ok(first.sent > header.length && first.sent < 2 * header.length, `${first.sent}`);
      assert.ok(second.sent < header.length / 4, `${second.sent}`);
      assert.equal(server.cache?.stats().inserts, 1);
    } finally {
      await server.close();
      await removeDir(dir);
    }
  });

  it('sends its have right behind the hello, without waiting for the answer', T, async () => {
    const server = await ourServer();
    const dir = await project({ 'a.txt': 'x'.repeat(CACHE_MIN_BYTES) });
    try {
      const { job, events } = await recordJob(server, dir, 'remote-wc -c a.txt', 'a.txt');
      assert.equal(only(events, 'output')[0]?.stdout.text(), `${CACHE_MIN_BYTES} a.txt\n`);
      const before = job.toServer.subarray(0, job.sentBeforeReply).toString('latin1');
      assert.match(before, /hello rake\/1[\s\S]*have\n/, 'the have went out before any answer');
    } finally {
      await server.close();
      await removeDir(dir);
    }
  });

  it(
    'push: files cross both ways unasked; a server without push is asked, with the same result',
    T,
    async () => {
      for (const push of [true, false]) {
        const server = await ourServer(
          push ? {} : { extensions: ['stderr', 'mode', 'cache', 'auth'] },
        );
        const dir = await project({ 'a.txt': 'x'.repeat(1000) });
        try {
          const { job } = await recordJob(server, dir, 'remote-wc -c a.txt > n.txt', 'a.txt');
          assert.equal(await readFile(join(dir, 'n.txt'), 'utf8'), '1000 a.txt\n');
          const ok = job.toClient.toString('latin1');
          assert.equal(ok.includes('ext=stderr,mode,cache,push'), push, ok);
          // `!T` is only ever a request: the receiver of a pulled filestream sends it per file.
          const up = job.toClient.includes('!T');
          const down = job.toServer.includes('!T');
          assert.deepEqual([up, down], push ? [false, false] : [true, true]);
        } finally {
          await server.close();
          await removeDir(dir);
        }
      }
    },
  );

  it(
    'sends a job of small files whole behind its hello; the ok comes back with the reply',
    T,
    async () => {
      const server = await ourServer();
      const dir = await project({ 'a.txt': 'x'.repeat(1000), 'b.txt': 'y' });
      try {
        const command = 'remote-cat a.txt b.txt > c.txt';
        const { job } = await recordJob(server, dir, command, 'a.txt b.txt');
        assert.equal(await readFile(join(dir, 'c.txt'), 'utf8'), `${'x'.repeat(1000)}y`);
        const before = job.toServer.subarray(0, job.sentBeforeReply).toString('latin1');
        // Everything up to the command went out before the server said anything, and no have.
        assert.match(before, /^!X\d+ +hello rake\/1 ext=\S+!R0 +!SSIF2 [\s\S]*y!C\d+ +cat a\.txt/);
        assert.equal(before.includes('have'), false);
        // The server held its ok back and sent it with the reply and the output file (a job
        // shorter than the first heartbeat gets none: `beat` costs a short job no write).
        const reply = job.toClient.toString('latin1');
        assert.match(
          reply,
          // `reuse` too: with load streams (the default) job connections are kept.
          /^!X\d+ +ok ext=\S*push,cwd,queue,beat,results,reuse!SSI 0 +!SSIF1 +!S!NF5 +c\.txt/,
        );
      } finally {
        await server.close();
        await removeDir(dir);
      }
    },
  );

  it(
    'a pushed requirement over the server’s limit fails with the server’s refusal',
    T,
    async () => {
      // 60 kB goes behind the hello; 8 MB (no cache) is still being sent when the server
      // refuses it, drains for a second and closes: the refusal must still be what is reported.
      for (const [size, cacheSize] of [
        [60_000, undefined],
        [8_000_000, 0],
      ] as const) {
        const server = await ourServer({
          limits: { maxFileSize: 50_000 },
          ...(cacheSize === undefined ? {} : { cacheSize }),
        });
        const dir = await project({ 'big.bin': 'x'.repeat(size) });
        try {
          const text = oneHost(server.port, 'set:\n\tremote-wc -c big.bin\n\t\trequires big.bin\n');
          const events = await runAll(dir, text, { embedded: false, fallback: false });
          const failed = only(events, 'action-failed');
          assert.equal(failed.length, 1);
          assert.equal(failed[0]?.reason, 'exit-non-zero', JSON.stringify(failed[0]));
          assert.match(
            String(failed[0]?.stderr),
            new RegExp(`refused: limit-exceeded: .*big\\.bin.* at most 50000, received ${size}`),
          );
          assert.equal(only(events, 'action-retried').length, 0);
        } finally {
          await server.close();
          await removeDir(dir);
        }
      }
    },
  );

  it(
    'a host restarted without its cache since the cost poll: the job starts again, plainly',
    T,
    async () => {
      const first = await ourServer();
      const endpoint = { host: '127.0.0.1', port: first.port };
      const dir = await project({ 'a.txt': 'x'.repeat(CACHE_MIN_BYTES) });
      const transport = tcpTransport();
      let second: ServerHandle | undefined;
      try {
        // The cost reply says `cache`: the next job would send its have behind the hello.
        const probes = await lastValueFrom(transport.queryCost(endpoint).pipe(toArray()));
        const cost = probes.find((p) => p.type === 'cost');
        assert.ok(cost?.type === 'cost' && cost.peer?.kind === 'rake');
        assert.ok(cost.peer.extensions.includes('cache'));
        await first.close();
        const log = capture();
        second = await ourServer({ port: endpoint.port, cacheSize: 0, logger: log.logger });
        const job = () =>
          lastValueFrom(
            transport
              .sendJob(endpoint, {
                command: 'wc -c a.txt',
                files: [{ name: 'a.txt', path: join(dir, 'a.txt') }],
                outputDir: dir,
              })
              .pipe(toArray()),
          );
        for (const progress of [await job(), await job()]) {
          const reply = progress.find((p) => p.type === 'replied');
          assert.ok(reply?.type === 'replied' && reply.ok, JSON.stringify(progress));
          assert.equal(reply.stdout.text(), `${CACHE_MIN_BYTES} a.txt\n`);
        }
        // The first job's have was refused once; the second job sent none.
        const refused = log
          .text()
          .split('\n')
          .filter((l) => l.includes('"msg":"refused"'));
        assert.equal(refused.length, 1, log.text());
        assert.match(refused[0] as string, /have/);
      } finally {
        await second?.close();
        await removeDir(dir);
      }
    },
  );

  it('uploads everything, as in base mode, from a server without a cache', T, async () => {
    const server = await ourServer({ cacheSize: 0 });
    const dir = await project({ 'a.txt': 'x'.repeat(1000) });
    try {
      const text = oneHost(server.port, 'set:\n\tremote-wc -c a.txt\n\t\trequires a.txt\n');
      const meter: TransferMeter = { sent: 0, received: 0, connections: 0 };
      const events = await runAll(dir, text, {
        embedded: false,
        transport: tcpTransport({ meter }),
      });
      assert.equal(only(events, 'output')[0]?.stdout.text(), '1000 a.txt\n');
      assert.ok(meter.sent > 1000);
      assert.equal(server.cache, undefined);
    } finally {
      await server.close();
      await removeDir(dir);
    }
  });
});

describe('authentication', () => {
  const SECRET = 'a shared secret for this spec only';

  it(
    'right token: runs; no token or a wrong one: a clear refusal; the token is never logged',
    T,
    async () => {
      const serverLogs = capture();
      const server = await ourServer({ token: SECRET, logger: serverLogs.logger });
      const dir = await project();
      try {
        const text = oneHost(server.port, 'set:\n\tremote-echo authenticated\n');
        const clientLogs = capture();
        const ok = await runAll(dir, text, {
          embedded: false,
          token: new Token(SECRET),
          logger: clientLogs.logger,
        });
        assert.equal(summary(ok).exitStatus, 0, JSON.stringify(only(ok, 'action-failed')));
        assert.equal(only(ok, 'output')[0]?.stdout.text(), 'authenticated\n');

        const none = await runAll(dir, text, { embedded: false, logger: clientLogs.logger });
        const [noToken] = only(none, 'action-failed');
        assert.equal(
          noToken?.message,
          `rakeserver at 127.0.0.1:${server.port} requires a token: pass --token-file or set RAKE_TOKEN`,
        );

        const wrong = await runAll(dir, text, {
          embedded: false,
          token: new Token('not the secret'),
          logger: clientLogs.logger,
        });
        assert.match(only(wrong, 'action-failed')[0]?.message ?? '', /refused the token/);

        for (const logs of [serverLogs.text(), clientLogs.text()]) {
          assert.ok(logs.length > 0);
          assert.equal(logs.includes(SECRET), false);
        }
      } finally {
        await server.close();
        await removeDir(dir);
      }
    },
  );

  it('a base-protocol client is refused by a server with a token', T, async () => {
    // The reference client's bytes: !C7 echo hi (spec/server has the byte-level transcript).
    const server = await ourServer({ token: SECRET });
    try {
      const peer = await RawPeer.connect(server.port);
      await peer.send(pkt('!C', 'echo hi'));
      const refusal = await peer.packet();
      assert.match(refusal.payload.toString(), /unauthenticated/);
      assert.equal((await peer.packet()).payload.toString(), '2');
      peer.destroy();
    } finally {
      await server.close();
    }
  });
});
