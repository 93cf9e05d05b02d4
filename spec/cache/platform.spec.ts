// The platform announcement (issue 21): a client asks with `platform?` in its hello, a server
// answers with `platform=k:v,...` in its ok. Peers that know neither word ignore them.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { type ServeArgs, serveOptionsFrom } from '../../src/cli/commands/serve.js';
import { encodeExtensionPayload, parseExtension } from '../../src/protocol/extensions.js';

const T = { timeout: 10_000 };

describe('platform announcement', () => {
  it('hello carries platform? only when asked', T, () => {
    const asked = encodeExtensionPayload({
      verb: 'hello',
      protocol: 'rake/1',
      extensions: ['stderr', 'mode'],
      wantsPlatform: true,
    }).toString();
    assert.equal(asked, 'hello rake/1 ext=stderr,mode platform?');
    assert.deepEqual(parseExtension(Buffer.from(asked)), {
      verb: 'hello',
      protocol: 'rake/1',
      extensions: ['stderr', 'mode'],
      wantsPlatform: true,
    });
    const plain = encodeExtensionPayload({
      verb: 'hello',
      protocol: 'rake/1',
      extensions: ['mode'],
    });
    assert.equal(plain.toString(), 'hello rake/1 ext=mode');
    assert.equal((parseExtension(plain) as { wantsPlatform?: boolean }).wantsPlatform, undefined);
  });

  it('ok carries the platform sorted by key; an ok without it has none', T, () => {
    const ok = encodeExtensionPayload({
      verb: 'ok',
      extensions: ['stderr'],
      platform: { os: 'linux', arch: 'x64', cc: 'gcc-12' },
    }).toString();
    assert.equal(ok, 'ok ext=stderr platform=arch:x64,cc:gcc-12,os:linux');
    assert.deepEqual(parseExtension(Buffer.from(ok)), {
      verb: 'ok',
      extensions: ['stderr'],
      platform: { arch: 'x64', cc: 'gcc-12', os: 'linux' },
    });
    assert.deepEqual(parseExtension(Buffer.from('ok ext=stderr')), {
      verb: 'ok',
      extensions: ['stderr'],
    });
  });

  it('a malformed platform word is no platform (never a guess)', T, () => {
    for (const word of [
      'platform=os',
      'platform=os:linux,os:darwin',
      'platform=os:li/nux',
      'platform=:x',
      'platform=',
    ]) {
      const got = parseExtension(Buffer.from(`ok ext=stderr ${word}`)) as { platform?: unknown };
      assert.equal(got.platform, undefined, word);
    }
  });

  it('rakeserver --platform KEY=VALUE: labels for the announcement; os and arch are refused', {
    timeout: 120_000,
  }, async () => {
    const opts = serveOptionsFrom(
      { 'cache-size': '1M', platform: ['cc=gcc-12', 'gpu=none'] } as unknown as ServeArgs,
      pino({ level: 'silent' }),
    );
    assert.deepEqual(opts.platform, { cc: 'gcc-12', gpu: 'none' });
    const root = new URL('../..', import.meta.url).pathname;
    for (const bad of ['os=plan9', 'cc', 'cc=gcc 12', 'a=b=c']) {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          '-e',
          "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })",
          '--',
          '--port',
          '0',
          '--platform',
          bad,
        ],
        { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const code = await new Promise<number | null>((ok) => child.once('exit', ok));
      assert.equal(code, 2, `${bad}: ${stderr}`);
      assert.match(
        stderr,
        /--platform ".*" is not KEY=VALUE of letters, digits and \._\+- \(os and arch are the machine's own\)/,
      );
    }
  });
});
