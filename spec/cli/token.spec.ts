// `rake-ts --token-file F` (or RAKE_TOKEN) against a rakeserver that requires a token; the
// program run in-process with captured streams.
import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { project, removeDir } from '../client/support.js';
import { rake } from './support.js';

const SECRET = 'cli-spec-token-5c1e';

describe('rake-ts --token-file', { timeout: 60_000 }, () => {
  let server: ServerHandle;
  let dir = '';
  const saved = process.env.RAKE_TOKEN;
  before(async () => {
    delete process.env.RAKE_TOKEN;
    server = await serve({ port: 0, token: SECRET, graceSeconds: 0 });
    dir = await project({ token: `${SECRET}\n`, wrong: 'not it\n' });
    await chmod(join(dir, 'token'), 0o600);
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nset:\n\tremote-echo let in\n`,
    );
  });
  after(async () => {
    if (saved === undefined) delete process.env.RAKE_TOKEN;
    else process.env.RAKE_TOKEN = saved;
    await server.close();
    await removeDir(dir);
  });

  it('runs with the right token, from the file or from RAKE_TOKEN', async () => {
    const r = await rake(dir, ['--token-file', 'token', '--no-embedded']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^let in$/m);
    process.env.RAKE_TOKEN = SECRET;
    try {
      const env = await rake(dir, ['--no-embedded']);
      assert.equal(env.code, 0, env.stderr);
    } finally {
      delete process.env.RAKE_TOKEN;
    }
    assert.equal((r.stdout + r.stderr).includes(SECRET), false);
  });

  it('says what to do without a token or with a wrong one', async () => {
    const none = await rake(dir, ['--no-embedded']);
    assert.equal(none.code, 1);
    assert.ok(
      none.stderr.includes(
        `rakeserver at 127.0.0.1:${server.port} requires a token: pass --token-file or set RAKE_TOKEN`,
      ),
      none.stderr,
    );
    const wrong = await rake(dir, ['--token-file', 'wrong', '--no-embedded']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /refused the token/);
  });

  it('exits 2 for a token file it cannot read', async () => {
    const r = await rake(dir, ['--token-file', 'missing', '--no-embedded']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot read the token file .*missing/);
  });
});
