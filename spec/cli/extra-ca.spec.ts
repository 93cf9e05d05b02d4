// bin/rake-ts.js run as a program starts node without NODE_EXTRA_CA_CERTS (Node 20 parses
// that bundle at every start, TLS or not) and hands the file over: local actions still see the
// variable as the user set it, and a TLS host signed by a CA in that file is still trusted.
// The built program, a real TLS server on loopback, real certificates (openssl).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { project, removeDir } from '../client/support.js';
import { makeTestCerts, type TestCerts } from '../tls/certs.js';

const root = new URL('../../', import.meta.url).pathname;
const program = join(root, 'bin/rake-ts.js');
const built = existsSync(join(root, 'dist/rake-ts.cjs'));
const T = { timeout: 60_000 };

/**
 * Preloaded through NODE_OPTIONS (which the shell line passes on): writes what the node
 * process found in its environment as it started, before bin/rake-ts.js ran.
 */
const PRELOAD = (report: string) =>
  `data:text/javascript,${encodeURIComponent(
    `import { writeFileSync } from 'node:fs'; writeFileSync(${JSON.stringify(report)}, JSON.stringify({ extra: process.env.NODE_EXTRA_CA_CERTS ?? null }));`,
  )}`;

/** Runs the program as a user does (executed, not `node bin/rake-ts.js`), without a shell. */
function run(
  cwd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString('utf8');
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString('utf8');
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('NODE_EXTRA_CA_CERTS and the program', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  let certs: TestCerts;
  let server: ServerHandle;
  let dir = '';
  before(async () => {
    certs = await makeTestCerts();
    server = await serve({
      port: 0,
      graceSeconds: 0,
      tls: { cert: certs.server.cert, key: certs.server.key, port: 0 },
    });
    dir = await project();
    await writeFile(
      join(dir, 'Rakefile'),
      [
        `HOSTS = rakes://127.0.0.1:${server.tlsPort}`,
        '',
        'env:',
        '\techo "extra=[$NODE_EXTRA_CA_CERTS] handed=[$RAKE_TS_EXTRA_CA_CERTS]"',
        'remote:',
        '\tremote-echo over tls',
        '',
      ].join('\n'),
    );
  });
  after(async () => {
    await server.close();
    await removeDir(dir);
    await certs.remove();
  });

  const env = (extra: string | undefined, report: string): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: `--import ${PRELOAD(report)}` };
    delete e.NODE_EXTRA_CA_CERTS;
    delete e.RAKE_TS_EXTRA_CA_CERTS;
    if (extra !== undefined) e.NODE_EXTRA_CA_CERTS = extra;
    return e;
  };
  const flags = ['--local-here', '--no-embedded', '--no-fallback', '-q', '--progress=never'];

  it(
    'starts node without it, gives it back to local actions, and trusts its CAs over TLS',
    T,
    async () => {
      const report = join(dir, 'start.json');
      const r = await run(dir, flags, env(certs.ca.certPath, report));
      assert.equal(r.code, 0, r.stderr);
      // Node itself started without the variable: it did not parse the bundle at start.
      assert.deepEqual(JSON.parse(readFileSync(report, 'utf8')), { extra: null });
      // A local action sees the variable as the user set it, and nothing of the hand-over.
      assert.match(r.stdout, new RegExp(`^extra=\\[${certs.ca.certPath}\\] handed=\\[\\]$`, 'm'));
      // The TLS host's certificate is signed by the CA in that file, and no --tls-ca was given.
      assert.match(r.stdout, /^over tls$/m);
    },
  );

  it(
    'without the variable, the same TLS host is refused as signed by an unknown CA',
    T,
    async () => {
      const report = join(dir, 'none.json');
      const r = await run(dir, flags, env(undefined, report));
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /signed by a CA this client does not trust/);
      assert.match(r.stdout, /^extra=\[\] handed=\[\]$/m);
    },
  );
});
