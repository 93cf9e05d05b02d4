// Connections dialed while the Rakefile is parsed (issue 20, src/client/early-dial.ts): the
// line scan that names the hosts before the parse, and a run whose load streams open on the
// connections dialed ahead (real server behind a recording proxy on loopback), ending with
// `!D` the ones it does not take.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { lastValueFrom, toArray } from 'rxjs';
import { readRakefile } from '../../grammar/parse.js';
import { EarlyDials, hostsAhead, SCAN_MAX_CHARS } from '../../src/client/early-dial.js';
import { type Dialed, plainDial } from '../../src/client/load-stream.js';
import { run } from '../../src/client/run.js';
import { OFFER_ANNEX } from '../../src/protocol/extensions.js';
import { encodeHeader } from '../../src/protocol/header.js';
import { startRecordingProxy } from '../helpers/recording-proxy.js';
import { startServer } from '../server/support.js';
import { parse, project, removeDir, runWithStreams, summary, waitFor } from './support.js';

const T = { timeout: 60_000 };
const OFFER = encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: OFFER_ANNEX });
const BYE = encodeHeader({ kind: 'plain', code: '!D', length: 0 });

describe('hostsAhead: the hosts a Rakefile names, read before it is parsed', () => {
  const file = (lines: readonly string[]) => `${lines.join('\n')}\n`;
  const remote = file([
    'PORT = 7001',
    'HOSTS = build1 10.0.0.2:7002 build3:7001',
    '',
    'all:',
    '\tremote-cc -c a.c',
    '\t\trequires a.c',
    '\tcc -o a a.o',
  ]);

  it('names every host, an entry without a port taking PORT', () => {
    assert.deepEqual(hostsAhead(remote), [
      { host: 'build1', port: 7001 },
      { host: '10.0.0.2', port: 7002 },
      { host: 'build3', port: 7001 },
    ]);
  });

  it('applies --port to the hosts on PORT, and --hosts instead of HOSTS, as the run does', () => {
    assert.deepEqual(hostsAhead(remote, { port: 7100 }), [
      { host: 'build1', port: 7100 },
      { host: '10.0.0.2', port: 7002 },
      { host: 'build3', port: 7100 },
    ]);
    assert.deepEqual(hostsAhead(remote, { hosts: 'x, y:9' }), [
      { host: 'x', port: 7001 },
      { host: 'y', port: 9 },
    ]);
    assert.deepEqual(hostsAhead(remote, { hosts: 'x', port: 7100 }), [{ host: 'x', port: 7100 }]);
  });

  it('leaves out loopback, TLS and repeated hosts; none at all with --tls', () => {
    const text = file([
      'HOSTS = localhost 127.0.0.1:7 rakes://secure:8 far:9 far:9 # a comment',
      'all:',
      '\tremote-true',
    ]);
    assert.deepEqual(hostsAhead(text), [{ host: 'far', port: 9 }]);
    assert.deepEqual(hostsAhead(text, { tlsAll: true }), []);
  });

  it('names none when the first action is local or there is no remote action', () => {
    assert.deepEqual(hostsAhead(file(['HOSTS = far:9', 'all:', '\ttrue', '\tremote-true'])), []);
    assert.deepEqual(hostsAhead(file(['HOSTS = far:9', 'all:', '\ttrue'])), []);
    assert.deepEqual(hostsAhead(file(['all:', '\tremote-true'])), []);
  });

  it('names none when anything is in doubt', () => {
    const cases = [
      ['HOSTS = a:1', 'HOSTS = b:2', 'all:', '\tremote-true'],
      ['PORT = 1', 'PORT = 2', 'HOSTS = a', 'all:', '\tremote-true'],
      ['PORT = 70000', 'HOSTS = a', 'all:', '\tremote-true'],
      ['HOSTS = ::1', 'all:', '\tremote-true'],
      ['HOSTS = a:1', 'all:', '\tremote-true', '  HOSTS = b'],
      ['HOSTS = a:1', 'what is this', 'all:', '\tremote-true'],
    ];
    for (const lines of cases) assert.deepEqual(hostsAhead(file(lines)), [], lines.join(' | '));
    const large = `HOSTS = a:1\nall:\n\tremote-true\n${'# padding\n'.repeat(SCAN_MAX_CHARS / 10)}`;
    assert.deepEqual(hostsAhead(large), []);
  });
});

describe('readRakefile: beforeParse', () => {
  it('is given the text and awaited before the parse; not called for a file it cannot read', async () => {
    const dir = await project();
    try {
      const path = join(dir, 'Rakefile');
      const text = 'HOSTS = a:1\nall:\n\tremote-true\n';
      await writeFile(path, text);
      const seen: string[] = [];
      let released = false;
      const read = await readRakefile(path, {
        beforeParse: (t) => {
          seen.push(t);
          return new Promise<void>((resolve) =>
            setImmediate(() => {
              released = true;
              resolve();
            }),
          );
        },
      });
      assert.ok(read.ok);
      assert.deepEqual(seen, [text]);
      assert.ok(released);
      const missing = await readRakefile(join(dir, 'none'), {
        beforeParse: (t) => {
          seen.push(t);
          return undefined;
        },
      });
      assert.ok(!missing.ok);
      assert.equal(seen.length, 1);
    } finally {
      await removeDir(dir);
    }
  });
});

/** A TCP server that records what each connection says until it ends. */
async function recorder(): Promise<{
  port: number;
  said: Promise<Buffer>[];
  accepted: () => number;
  close: () => Promise<void>;
}> {
  const said: Promise<Buffer>[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    const chunks: Buffer[] = [];
    said.push(
      new Promise<Buffer>((resolve) => {
        s.on('data', (d: Buffer) => chunks.push(d));
        s.on('close', () => resolve(Buffer.concat(chunks)));
        s.on('end', () => s.end());
        s.on('error', () => {});
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    port: address.port,
    said,
    accepted: () => said.length,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a run on connections dialed early', () => {
  const runIn = runWithStreams;

  it(
    'opens the load stream on the connection dialed before it: no connection more',
    T,
    async () => {
      const server = await startServer({ maxJobs: 1 });
      const proxy = await startRecordingProxy(server.port);
      const dir = await project();
      try {
        const text = `PORT = ${proxy.port}\nHOSTS = 127.0.0.1:${proxy.port}\n\nall:\n\tremote-echo hi\n`;
        const early = new EarlyDials([{ host: '127.0.0.1', port: proxy.port }]);
        // Connected, and nothing said on it, before the run starts.
        await waitFor(() => proxy.connections.length === 1);
        assert.equal(proxy.connections[0]?.toServer.length, 0);
        const events = await runIn(dir, text, { early });
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(summary(events)));
        await proxy.settled();
        // The stream's opening connection (its cost query, then handed to the job) and the
        // watch's: as a run without early dials makes.
        assert.equal(proxy.connections.length, 2);
        const first = proxy.connections[0]?.toServer ?? Buffer.alloc(0);
        assert.deepEqual(first.subarray(0, 64), OFFER);
        assert.ok(first.includes('!C'), 'the job went out on the connection dialed early');
        assert.deepEqual(early.pending, []);
      } finally {
        await proxy.close();
        await server.close();
        await removeDir(dir);
      }
    },
  );

  it('ends with !D, and nothing else, a connection it does not take', T, async () => {
    const server = await startServer({ maxJobs: 1 });
    const stray = await recorder();
    const dir = await project();
    try {
      const text = `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nall:\n\tremote-echo hi\n`;
      // A name the run does not use (merged into another host, say).
      const early = new EarlyDials([{ host: '127.0.0.1', port: stray.port }]);
      await waitFor(() => stray.accepted() === 1);
      const events = await runIn(dir, text, { early });
      assert.equal(summary(events).exitStatus, 0);
      assert.deepEqual(await stray.said[0], BYE);
      assert.equal(stray.accepted(), 1);
    } finally {
      await stray.close();
      await server.close();
      await removeDir(dir);
    }
  });

  it('ends them in a run without load streams', T, async () => {
    const stray = await recorder();
    const dir = await project();
    try {
      const text = `PORT = ${stray.port}\nHOSTS = 127.0.0.1:${stray.port}\n\nall:\n\techo here\n`;
      const early = new EarlyDials([{ host: '127.0.0.1', port: stray.port }]);
      await waitFor(() => stray.accepted() === 1);
      const events = run(parse(text), {
        directory: dir,
        embedded: false,
        localHere: true,
        loadStreams: false,
        early,
      });
      const done = lastValueFrom(events.pipe(toArray()));
      assert.deepEqual(await stray.said[0], BYE);
      assert.equal(summary(await done).exitStatus, 0);
    } finally {
      await stray.close();
      await removeDir(dir);
    }
  });

  it('hands out no connection that closed while it waited', T, async () => {
    const closing = createServer((s) => s.end());
    await new Promise<void>((resolve) => closing.listen(0, '127.0.0.1', resolve));
    const address = closing.address();
    assert.ok(address !== null && typeof address === 'object');
    const endpoint = { host: '127.0.0.1', port: address.port };
    const dialed: Dialed[] = [];
    const early = new EarlyDials([endpoint], (e) => {
      const d = plainDial(e);
      dialed.push(d);
      return d;
    });
    try {
      const socket = dialed[0]?.socket;
      assert.ok(socket !== undefined);
      await new Promise<void>((resolve) => socket.once('close', () => resolve()));
      assert.equal(early.take(endpoint), undefined);
    } finally {
      early.close();
      await new Promise<void>((resolve) => closing.close(() => resolve()));
    }
  });

  it('hands a live connection out once', T, async () => {
    const stray = await recorder();
    const endpoint = { host: '127.0.0.1', port: stray.port };
    const early = new EarlyDials([endpoint]);
    try {
      const first = early.take(endpoint);
      assert.ok(first !== undefined);
      await first.ready;
      assert.equal(early.take(endpoint), undefined);
      assert.equal(early.take({ host: '127.0.0.1', port: stray.port + 1 }), undefined);
      first.socket.destroy();
    } finally {
      early.close();
      await stray.close();
    }
  });
});
