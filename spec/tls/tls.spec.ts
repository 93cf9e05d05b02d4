// TLS between our client and our server (issue 23): real servers on loopback, certificates
// made by openssl in before(), builds through the real transport.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { first, firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { JobError } from '../../src/client/errors.js';
import { hostLoad } from '../../src/client/load-stream.js';
import type { Transport } from '../../src/client/transport.js';
import { tcpTransport } from '../../src/client/transport.js';
import { Token } from '../../src/protocol/token.js';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { type ClientTls, TlsError, type TlsFailure } from '../../src/tls/index.js';
import { freePort, only, project, removeDir, runAll, summary } from '../client/support.js';
import { startBaseServer } from '../helpers/base-server.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { startRecordingProxy } from '../helpers/recording-proxy.js';
import { makeTestCerts, type Pem, type TestCerts } from './certs.js';

const T = { timeout: 60_000 };

type WatchOf = NonNullable<Transport['watchLoad']>;

let certs: TestCerts;
const servers: ServerHandle[] = [];

async function tlsServer(pem: Pem, clientCa?: Buffer): Promise<ServerHandle> {
  const s = await serve({
    port: 0,
    maxJobs: 4,
    graceSeconds: 0,
    tls: { cert: pem.cert, key: pem.key, port: 0, ...(clientCa ? { clientCa } : {}) },
  });
  servers.push(s);
  return s;
}

/** The error a cost query to `host:port` over TLS ends with (it must end: no hang). */
async function costFailure(
  port: number,
  tls: ClientTls,
  options: { host?: string; plain?: boolean } = {},
): Promise<unknown> {
  const transport = tcpTransport({ tls });
  const endpoint = {
    host: options.host ?? '127.0.0.1',
    port,
    ...(options.plain ? {} : { tls: true }),
  };
  return lastValueFrom(transport.queryCost(endpoint).pipe(toArray())).then(
    (probes) => assert.fail(`expected a failure, got ${JSON.stringify(probes)}`),
    (err: unknown) => err,
  );
}

function assertTlsError(err: unknown, reason: TlsFailure, ...words: RegExp[]): void {
  assert.ok(err instanceof TlsError, `not a TlsError: ${String(err)}`);
  assert.equal(err.reason, reason, err.message);
  for (const w of words) assert.match(err.message, w);
}

before(async () => {
  certs = await makeTestCerts();
});
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await certs.remove();
});

describe('TLS: a build', () => {
  it(
    'runs over TLS to a rakes:// host, resuming the session after the first handshake',
    T,
    async () => {
      const server = await tlsServer(certs.server);
      assert.notEqual(server.tlsPort, undefined);
      assert.notEqual(server.tlsPort, server.port);
      const dir = await project({ 'a.txt': 'alpha\n', 'b.txt': 'beta\n' });
      const transport = tcpTransport({ tls: { ca: certs.ca.cert } });
      try {
        const text = [
          `HOSTS = rakes://localhost:${server.tlsPort}`,
          '',
          'one:',
          '\tremote-tr a-z A-Z < a.txt > A.txt',
          '\t\trequires a.txt',
          '\tremote-tr a-z A-Z < b.txt > B.txt',
          '\t\trequires b.txt',
          'two:',
          '\tremote-cat A.txt B.txt > AB.txt',
          '\t\trequires A.txt B.txt',
          '',
        ].join('\n');
        const events = await runAll(dir, text, { embedded: false, fallback: false, transport });
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
        assert.equal(await readFile(join(dir, 'AB.txt'), 'utf8'), 'ALPHA\nBETA\n');
        // Every connection (polls and jobs) went over TLS; after the first, sessions resume.
        const stats = transport.tlsStats;
        assert.ok(stats.handshakes >= 4, JSON.stringify(stats));
        assert.ok(stats.resumed >= 1, `no session resumed: ${JSON.stringify(stats)}`);
        const cert = transport.certificate({ host: 'localhost', port: server.tlsPort ?? 0 });
        assert.equal(cert?.subject, 'CN=localhost');
        assert.ok((cert?.daysLeft ?? 0) >= 58, JSON.stringify(cert));
      } finally {
        await removeDir(dir);
      }
    },
  );

  it(
    'hides commands and file contents from the wire (a recording proxy sees only ciphertext)',
    T,
    async () => {
      const server = await tlsServer(certs.server);
      const secretCommand = 'SECRETCOMMAND';
      const secretInput = 'SECRETINPUTCONTENT';
      const text = (port: number, scheme: string) =>
        [
          `HOSTS = ${scheme}127.0.0.1:${port}`,
          '',
          'leak:',
          `\tremote-echo ${secretCommand} > out.txt; cat in.txt >> out.txt`,
          '\t\trequires in.txt',
          '',
        ].join('\n');
      const record = async (target: number, scheme: string) => {
        const proxy = await startRecordingProxy(target);
        const dir = await project({ 'in.txt': `${secretInput}\n` });
        try {
          const events = await runAll(dir, text(proxy.port, scheme), {
            embedded: false,
            fallback: false,
            tls: { ca: certs.ca.cert },
          });
          assert.equal(
            summary(events).exitStatus,
            0,
            JSON.stringify(only(events, 'action-failed')),
          );
          assert.equal(
            await readFile(join(dir, 'out.txt'), 'utf8'),
            `${secretCommand}\n${secretInput}\n`,
          );
          await proxy.settled();
          const all = Buffer.concat(proxy.connections.flatMap((c) => [c.toServer, c.toClient]));
          return all.toString('latin1');
        } finally {
          await proxy.close();
          await removeDir(dir);
        }
      };
      // The same build through the plain port shows both in clear: the check can fail.
      const clear = await record(server.port, '');
      assert.ok(clear.includes(secretCommand) && clear.includes(secretInput));
      const wire = await record(server.tlsPort ?? 0, 'rakes://');
      assert.ok(wire.length > 1000, `only ${wire.length} bytes recorded`);
      assert.ok(!wire.includes(secretCommand), 'the command crossed in clear');
      assert.ok(!wire.includes(secretInput), 'the file content crossed in clear');
      assert.doesNotMatch(
        wire,
        /![CERS][0-9 SIF]{3,}\s{40}/,
        'a base-protocol header crossed in clear',
      );
    },
  );
});

describe('TLS: load streams', () => {
  it(
    'a rakes:// host streams its load over TLS: live, and its actions are placed with no poll',
    T,
    async () => {
      const server = await tlsServer(certs.server);
      const transport = tcpTransport({ tls: { ca: certs.ca.cert } });
      const endpoint = { host: 'localhost', port: server.tlsPort ?? 0, tls: true };
      // The stream itself: over the jobs' TLS set-up, the server's first load arrives.
      const live = await firstValueFrom(
        hostLoad(endpoint, (e) => (transport.watchLoad as WatchOf)(e, 5000), {
          reconnectMs: 200,
        }).pipe(first((s) => s.state !== 'waiting')),
      );
      assert.equal(live.state, 'live', JSON.stringify(live));
      assert.equal(live.state === 'live' ? live.load.slots : 0, 4);
      assert.ok(transport.tlsStats.handshakes >= 1, JSON.stringify(transport.tlsStats));
      // A run: every action placed from the pushed load (no cost-polled), all over TLS.
      const dir = await project({ 'a.txt': 'alpha\n' });
      try {
        const text = [
          `HOSTS = rakes://localhost:${server.tlsPort}`,
          '',
          'set:',
          '\tremote-tr a-z A-Z < a.txt > A.txt',
          '\t\trequires a.txt',
          '\tremote-echo two > two.txt',
          '',
        ].join('\n');
        const run = tcpTransport({ tls: { ca: certs.ca.cert } });
        const events = await runAll(dir, text, {
          embedded: false,
          fallback: false,
          transport: run,
        });
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
        assert.equal(await readFile(join(dir, 'A.txt'), 'utf8'), 'ALPHA\n');
        assert.equal(only(events, 'cost-polled').length, 0, 'a TLS host was polled');
        assert.deepEqual(
          only(events, 'host-chosen').map((e) => e.reason),
          ['only-host', 'only-host'],
        );
        assert.ok(run.tlsStats.handshakes >= 2, JSON.stringify(run.tlsStats));
      } finally {
        await removeDir(dir);
      }
    },
  );
});

describe('TLS: mutual TLS', () => {
  let server: ServerHandle;
  before(async () => {
    server = await tlsServer(certs.server, certs.ca.cert);
  });

  it('accepts a client certificate signed by --tls-client-ca', T, async () => {
    const transport = tcpTransport({
      tls: { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key },
    });
    const probes = await lastValueFrom(
      transport
        .queryCost({ host: 'localhost', port: server.tlsPort ?? 0, tls: true })
        .pipe(toArray()),
    );
    assert.deepEqual(
      probes.map((p) => p.type),
      ['connected', 'cost'],
    );
  });

  it('refuses a client without a certificate, saying to pass --tls-cert/--tls-key', T, async () => {
    const err = await costFailure(server.tlsPort ?? 0, { ca: certs.ca.cert });
    assertTlsError(err, 'client-cert-refused', /127\.0\.0\.1:\d+ refused/, /--tls-cert/);
  });

  it(
    "refuses a certificate of another CA, and a job fails with the host's refusal",
    T,
    async () => {
      const tls = {
        ca: certs.ca.cert,
        cert: certs.strangerClient.cert,
        key: certs.strangerClient.key,
      };
      assertTlsError(await costFailure(server.tlsPort ?? 0, tls), 'client-cert-refused');
      const transport = tcpTransport({ tls });
      const dir = await project();
      try {
        // The job fails before anything runs, with the reason.
        const err = await lastValueFrom(
          transport.sendJob(
            { host: '127.0.0.1', port: server.tlsPort ?? 0, tls: true },
            { command: 'touch ran.txt', files: [], outputDir: dir },
          ),
        ).then(
          () => assert.fail('the job ran'),
          (e: unknown) => e,
        );
        assert.ok(err instanceof JobError, String(err));
        assert.match(err.message, /refused this client's certificate: .*--tls-client-ca/);
        assert.ok(err.cause instanceof TlsError);
        assert.deepEqual(await readdir(dir), []);
      } finally {
        await removeDir(dir);
      }
    },
  );
});

describe('TLS: no embedded server for a rakes:// loopback host', () => {
  it(
    'where nothing listens, the run says so instead of starting a plain server there',
    T,
    async () => {
      const port = await freePort();
      const dir = await project();
      try {
        const events = await runAll(
          dir,
          `PORT = ${port}\nHOSTS = rakes://127.0.0.1:${port}\n\nset:\n\tremote-echo hi\n`,
          { fallback: false, tls: { ca: certs.ca.cert } },
        );
        assert.equal(only(events, 'embedded-server-started').length, 0);
        assert.notEqual(summary(events).exitStatus, 0);
      } finally {
        await removeDir(dir);
      }
    },
  );
});

describe('TLS: mutual TLS and a token together', () => {
  it('a job needs both the client certificate and the token', T, async () => {
    const token = 'tls-spec-token-51c2';
    const server = await serve({
      port: 0,
      maxJobs: 2,
      graceSeconds: 0,
      token,
      tls: { cert: certs.server.cert, key: certs.server.key, clientCa: certs.ca.cert, port: 0 },
    });
    servers.push(server);
    const text = `HOSTS = rakes://localhost:${server.tlsPort}\n\nset:\n\tremote-echo both > both.txt\n`;
    const tls = { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key };
    const dir = await project();
    try {
      const ok = await runAll(dir, text, {
        embedded: false,
        fallback: false,
        tls,
        token: new Token(token),
      });
      assert.equal(summary(ok).exitStatus, 0, JSON.stringify(only(ok, 'action-failed')));
      assert.equal(await readFile(join(dir, 'both.txt'), 'utf8'), 'both\n');
      // The certificate without the token: the server still wants the token.
      const noToken = await runAll(dir, text, { embedded: false, fallback: false, tls });
      assert.notEqual(summary(noToken).exitStatus, 0);
    } finally {
      await removeDir(dir);
    }
  });
});

describe('TLS: certificates the client refuses', () => {
  it('an expired certificate', T, async () => {
    const server = await tlsServer(certs.expired);
    const err = await costFailure(server.tlsPort ?? 0, { ca: certs.ca.cert });
    assertTlsError(err, 'expired', /127\.0\.0\.1:\d+ expired/, /renew/);
    // The refused handshake left nothing open on the server: it closes at once.
    await server.close();
  });

  it('a certificate for another name', T, async () => {
    const server = await tlsServer(certs.wrongName);
    const err = await costFailure(
      server.tlsPort ?? 0,
      { ca: certs.ca.cert },
      { host: 'localhost' },
    );
    assertTlsError(err, 'wrong-name', /localhost:\d+ is not for that name/, /build\.example\.org/);
  });

  it(
    'a certificate of a CA the client does not trust (and the system store by default)',
    T,
    async () => {
      const server = await tlsServer(certs.untrusted);
      const err = await costFailure(server.tlsPort ?? 0, { ca: certs.ca.cert });
      assertTlsError(err, 'unknown-ca', /does not trust/, /--tls-ca/);
      // No --tls-ca: the system's CAs, which know nothing of a test CA.
      const good = await tlsServer(certs.server);
      assertTlsError(await costFailure(good.tlsPort ?? 0, {}), 'unknown-ca');
    },
  );
});

describe('TLS: plain and TLS crossed', () => {
  it('a TLS client at a plain port is told it is a plain port', T, async () => {
    const server = await tlsServer(certs.server);
    const err = await costFailure(server.port, { ca: certs.ca.cert });
    assertTlsError(err, 'plain-server', /plain text, not TLS/, /without rakes:\/\//);
  });

  it('a plain client at the TLS port is told to write rakes://', T, async () => {
    const server = await tlsServer(certs.server);
    const err = await costFailure(server.tlsPort ?? 0, {}, { plain: true });
    assertTlsError(err, 'tls-required', new RegExp(`rakes://127\\.0\\.0\\.1:${server.tlsPort}`));
  });

  it('a base-protocol client at the TLS port gets a base-protocol !F it can print', T, async () => {
    const server = await tlsServer(certs.server);
    const peer = await RawPeer.connect(server.tlsPort ?? 0);
    try {
      await peer.send(pkt('!C', 'echo hi'));
      const message = await peer.packet();
      assert.match(message.head, /^!F\d+ *$/);
      assert.match(
        message.payload.toString(),
        /^TLS required: port \d+ of this rakeserver speaks TLS/,
      );
      const status = await peer.packet();
      assert.match(status.head, /^!F\d/);
      assert.ok(await peer.waitClosed());
    } finally {
      peer.destroy();
    }
  });

  it(
    'a reference-like base client builds on the plain port of a server that also serves TLS',
    T,
    async () => {
      const server = await tlsServer(certs.server);
      const peer = await RawPeer.connect(server.port);
      try {
        await peer.send(hdr('!E0'));
        assert.match((await peer.packet()).head, /^!E\d/);
        // !R, a filestream of one file pulled by the server, then the command.
        await peer.send(hdr('!R0'), hdr('!SSIF1'));
        await peer.serveFile('in.txt', Buffer.from('plain still works\n'));
        await peer.send(pkt('!C', 'cp in.txt out.txt'));
        const reply = await peer.header();
        assert.match(reply, /^!SSI 0 *$/);
        assert.match(await peer.header(), /^!SSIF1 *$/);
        await peer.send('!N');
        assert.equal((await peer.packet()).payload.toString(), 'out.txt');
        await peer.send('!Z');
        assert.equal((await peer.packet()).payload.toString(), '18');
        await peer.send('!T');
        assert.equal((await peer.read(18)).toString(), 'plain still works\n');
        await peer.send(hdr('!D0'));
      } finally {
        peer.destroy();
      }
    },
  );

  it('a TLS client at a reference-like base server gives up instead of hanging', {
    timeout: 60_000,
  }, async () => {
    const base = await startBaseServer();
    try {
      const err = await costFailure(base.port, { ca: certs.ca.cert });
      assert.ok(err instanceof TlsError, String(err));
      assert.ok(['plain-server', 'handshake-timeout'].includes(err.reason), err.message);
      assert.match(err.message, /plain port/);
    } finally {
      await base.close();
    }
  });
});
