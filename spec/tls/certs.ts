// Certificates for the TLS specs, made with `openssl` (scripts/ensure-test-tools.sh installs it)
// into a scratch directory: a team CA, a second CA nobody trusts, server certificates for
// loopback (valid, expired, for another name, expiring in 5 days) and client certificates.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A certificate's PEM files, and their paths. */
export interface Pem {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Everything the TLS specs present or trust. */
export interface TestCerts {
  readonly dir: string;
  /** The team CA: signs the good server certificates and the good client certificate. */
  readonly ca: Pem;
  /** Another CA, trusted by nobody here. */
  readonly otherCa: Pem;
  /** For `localhost` and `127.0.0.1`, signed by the team CA, valid 60 days. */
  readonly server: Pem;
  /** Expired last year. */
  readonly expired: Pem;
  /** For `build.example.org` only. */
  readonly wrongName: Pem;
  /** For loopback, but signed by the other CA. */
  readonly untrusted: Pem;
  /** For loopback, valid 5 more days: `rake-ts hosts` warns. */
  readonly expiring: Pem;
  /** A client certificate signed by the team CA. */
  readonly client: Pem;
  /** A client certificate signed by the other CA. */
  readonly strangerClient: Pem;
  remove(): Promise<void>;
}

const LOOPBACK = 'subjectAltName=DNS:localhost,IP:127.0.0.1';

/** `YYYYMMDDHHMMSSZ` for `openssl ca -startdate/-enddate`, `days` from now. */
function stamp(days: number): string {
  const d = new Date(Date.now() + days * 86_400_000);
  return `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir, timeout: 30_000 });
}

/** Makes every certificate of {@link TestCerts}: a few hundred ms of openssl. */
export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'rake-tls-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const load = async (name: string): Promise<Pem> => ({
    certPath: join(dir, `${name}.pem`),
    keyPath: join(dir, `${name}.key`),
    cert: await readFile(join(dir, `${name}.pem`)),
    key: await readFile(join(dir, `${name}.key`)),
  });
  const makeCa = async (name: string, cn: string) => {
    await openssl(dir, [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-days',
      '365',
      '-subj',
      `/CN=${cn}`,
    ]);
    await writeFile(join(dir, `${name}.index`), '');
    await writeFile(join(dir, `${name}.serial`), '1000\n');
    await writeFile(
      join(dir, `${name}.cnf`),
      [
        '[ca]',
        'default_ca = this',
        '[this]',
        `dir = ${dir}`,
        `database = ${dir}/${name}.index`,
        `serial = ${dir}/${name}.serial`,
        `new_certs_dir = ${dir}`,
        'default_md = sha256',
        'policy = any',
        'unique_subject = no',
        '[any]',
        'commonName = supplied',
        '',
      ].join('\n'),
    );
  };
  const issue = async (
    ca: string,
    name: string,
    cn: string,
    ext: string,
    from: number,
    to: number,
  ) => {
    await openssl(dir, [
      'req',
      ...ec,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    ]);
    await writeFile(join(dir, `${name}.ext`), `${ext}\n`);
    await openssl(dir, [
      'ca',
      '-batch',
      '-notext',
      '-config',
      `${ca}.cnf`,
      '-cert',
      `${ca}.pem`,
      '-keyfile',
      `${ca}.key`,
      '-in',
      `${name}.csr`,
      '-out',
      `${name}.pem`,
      '-extfile',
      `${name}.ext`,
      '-startdate',
      stamp(from),
      '-enddate',
      stamp(to),
    ]);
  };
  await Promise.all([makeCa('ca', 'Rake Test Team CA'), makeCa('other', 'Someone Else CA')]);
  const client = 'extendedKeyUsage=clientAuth';
  // One CA's database at a time: `openssl ca` rewrites its index and serial files.
  await issue('ca', 'server', 'localhost', LOOPBACK, -1, 60);
  await issue('ca', 'expired', 'localhost', LOOPBACK, -400, -35);
  await issue(
    'ca',
    'wrong-name',
    'build.example.org',
    'subjectAltName=DNS:build.example.org',
    -1,
    60,
  );
  await issue('ca', 'expiring', 'localhost', LOOPBACK, -1, 5.5);
  await issue('ca', 'client', 'ci-runner', client, -1, 60);
  await issue('other', 'untrusted', 'localhost', LOOPBACK, -1, 60);
  await issue('other', 'stranger', 'intruder', client, -1, 60);
  return {
    dir,
    ca: await load('ca'),
    otherCa: await load('other'),
    server: await load('server'),
    expired: await load('expired'),
    wrongName: await load('wrong-name'),
    untrusted: await load('untrusted'),
    expiring: await load('expiring'),
    client: await load('client'),
    strangerClient: await load('stranger'),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
