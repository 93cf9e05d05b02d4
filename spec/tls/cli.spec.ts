// The TLS flags and syntax through the programs: `rake-ts check` and `hosts` with rakes://
// hosts, `rakeserver` refusing TLS files it cannot use. In-process, real servers on loopback.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { main as rakeserver } from '../../src/cli/rakeserver.js';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { capture, rake } from '../cli/support.js';
import { project, removeDir } from '../client/support.js';
import { startBaseServer } from '../helpers/base-server.js';
import { makeTestCerts, type TestCerts } from './certs.js';

const T = { timeout: 60_000 };

describe('TLS through the CLI', () => {
  let certs: TestCerts;
  let good: ServerHandle;
  let expiring: ServerHandle;
  let dir = '';
  before(async () => {
    certs = await makeTestCerts();
    const tls = (pem: { cert: Buffer; key: Buffer }) => ({ cert: pem.cert, key: pem.key, port: 0 });
    good = await serve({ port: 0, graceSeconds: 0, tls: tls(certs.server) });
    expiring = await serve({ port: 0, graceSeconds: 0, tls: tls(certs.expiring) });
    dir = await project();
  });
  after(async () => {
    await Promise.all([good.close(), expiring.close()]);
    await removeDir(dir);
    await certs.remove();
  });

  it(
    'check accepts rakes:// hosts, keeps them in --print and --json, and warns about base tools',
    T,
    async () => {
      await writeFile(
        join(dir, 'Rakefile'),
        'PORT = 6238\nHOSTS = rakes://build1:6239 build2 RAKES://[::1]\n\nset:\n\tremote-echo hi\n',
      );
      const r = await rake(dir, ['check']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /rakes:\/\/build1:6239/);
      assert.match(r.stdout, /base-protocol tools .* cannot read/);
      const printed = await rake(dir, ['check', '--print']);
      assert.match(printed.stdout, /^HOSTS = rakes:\/\/build1:6239 build2 rakes:\/\/\[::1\]$/m);
      const json = JSON.parse((await rake(dir, ['check', '--json'])).stdout) as {
        hosts: { host: string; port: number; tls?: boolean }[];
      };
      assert.deepEqual(
        json.hosts.map((h) => [h.host, h.port, h.tls ?? false]),
        [
          ['build1', 6239, true],
          ['build2', 6238, false],
          ['::1', 6238, true],
        ],
      );
    },
  );

  it('check points at a scheme it does not know', T, async () => {
    await writeFile(join(dir, 'Rakefile'), 'HOSTS = https://build1\n\nset:\n\tremote-echo hi\n');
    const r = await rake(dir, ['check']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Rakefile:1:9: .*unknown scheme `https:\/\/`/);
    assert.match(r.stderr, /rakes:\/\/host:port/);
  });

  it('check says a rakes:// with no host names none, and points inside the entry', T, async () => {
    await writeFile(
      join(dir, 'Rakefile'),
      'HOSTS = rakes://h:99999 rakes://\n\nset:\n\tremote-echo hi\n',
    );
    const r = await rake(dir, ['check']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Rakefile:1:19: error: port `99999` of host `h`/);
    assert.match(r.stderr, /Rakefile:1:25: error: `rakes:\/\/` names no host/);
  });

  it(
    'a TLS host that never answers the handshake is named as such (a silent base server)',
    T,
    async () => {
      const base = await startBaseServer();
      try {
        await writeFile(
          join(dir, 'Rakefile'),
          `HOSTS = rakes://127.0.0.1:${base.port}\n\nset:\n\tremote-echo hi\n`,
        );
        const r = await rake(dir, ['hosts', '--connect-timeout', '1']);
        assert.equal(r.code, 3, r.stdout);
        assert.match(
          r.stdout,
          /unreachable: no TLS connection within 1000 ms .*without rakes:\/\//,
        );
      } finally {
        await base.close();
      }
    },
  );

  it('hosts shows tls, the subject and the expiry, with a warning within 14 days', T, async () => {
    await writeFile(
      join(dir, 'Rakefile'),
      `HOSTS = rakes://localhost:${good.tlsPort} rakes://localhost:${expiring.tlsPort} 127.0.0.1:${good.port}\n\nset:\n\tremote-echo hi\n`,
    );
    const r = await rake(dir, ['hosts', '--tls-ca', certs.ca.certPath]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const [head, ...rows] = r.stdout.trimEnd().split('\n');
    assert.match(head ?? '', /^HOST +ROLE +COST +RTT +SERVER +TLS +STATUS$/);
    assert.match(rows[0] ?? '', /tls CN=localhost until \d{4}-\d\d-\d\d +reachable$/);
    assert.match(
      rows[1] ?? '',
      /tls CN=localhost until \d{4}-\d\d-\d\d \(WARNING: expires in 5 days: renew it\) +reachable$/,
    );
    assert.match(rows[2] ?? '', / plain +reachable$/);
    const json = JSON.parse(
      (await rake(dir, ['hosts', '--json', '--tls-ca', certs.ca.certPath])).stdout,
    );
    assert.equal(json.hosts[1].tls.certificate.daysLeft, 5);
    assert.equal(json.hosts[1].tls.certificate.subject, 'CN=localhost');
  });

  it('hosts without the CA says which host and what to pass', T, async () => {
    await writeFile(
      join(dir, 'Rakefile'),
      `HOSTS = rakes://localhost:${good.tlsPort}\n\nset:\n\tremote-echo hi\n`,
    );
    const r = await rake(dir, ['hosts', '--connect-timeout', '30']);
    assert.equal(r.code, 3, r.stdout);
    assert.match(
      r.stdout,
      /unreachable: the TLS certificate of localhost:\d+ is signed by a CA this client does not trust .*--tls-ca FILE/,
    );
  });

  it(
    '--tls makes every host TLS; a missing --tls-ca file is a usage error naming it',
    T,
    async () => {
      await writeFile(
        join(dir, 'Rakefile'),
        `HOSTS = localhost:${good.tlsPort}\n\nset:\n\tremote-echo hi\n`,
      );
      const ok = await rake(dir, ['hosts', '--tls', '--tls-ca', certs.ca.certPath]);
      assert.equal(ok.code, 0, ok.stdout);
      const missing = await rake(dir, ['hosts', '--tls-ca', 'nope.pem']);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /--tls-ca nope\.pem: cannot read it \(ENOENT\)/);
      const half = await rake(dir, ['-n', '--tls-cert', certs.client.certPath]);
      assert.equal(half.code, 2);
      assert.match(half.stderr, /--tls-cert and --tls-key go together/);
    },
  );

  it('a run names the host that failed TLS and why in its summary', T, async () => {
    await writeFile(
      join(dir, 'Rakefile'),
      `HOSTS = rakes://localhost:${good.tlsPort}\n\nset:\n\tremote-echo hi\n`,
    );
    const r = await rake(dir, ['--no-fallback', '--progress=never', '--connect-timeout', '30']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stderr,
      /never answered: localhost:\d+ could not be reached over TLS \(the TLS certificate of localhost:\d+ is signed by a CA this client does not trust .*--tls-ca FILE\)/,
    );
  });

  it('rakeserver refuses TLS files it cannot use, naming the flag', T, async () => {
    const err = capture();
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = err.stream.write.bind(err.stream) as typeof process.stderr.write;
    try {
      const notPem = join(dir, 'Rakefile');
      const code = await rakeserver([
        '--port',
        '0',
        '--tls-cert',
        notPem,
        '--tls-key',
        certs.server.keyPath,
        '--log-level',
        'silent',
      ]);
      assert.equal(code, 2);
      const wrongKey = await rakeserver([
        '--port',
        '0',
        '--tls-cert',
        certs.server.certPath,
        '--tls-key',
        certs.client.keyPath,
        '--log-level',
        'silent',
      ]);
      assert.equal(wrongKey, 2);
      const noKey = await rakeserver(['--tls-cert', certs.server.certPath]);
      assert.equal(noKey, 2);
    } finally {
      process.stderr.write = write;
    }
    assert.match(err.text(), /--tls-cert .*Rakefile: not a PEM file/);
    assert.match(err.text(), /--tls-cert .* --tls-key .*: .*key .*belongs to the certificate/);
    assert.match(err.text(), /--tls-cert and --tls-key go together/);
  });
});
