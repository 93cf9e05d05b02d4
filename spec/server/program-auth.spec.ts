// The rakeserver program's extension flags: --token-file / RAKE_TOKEN, --cache-size, and
// the loud warning for a server beyond loopback without a token.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitFor } from './support.js';

const root = new URL('../..', import.meta.url).pathname;
const entry =
  "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })";
const TOKEN = 'program-spec-token-7f3a';

/** Runs `rakeserver` from source; keeps stderr as text and as NDJSON lines. */
function rakeserver(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', entry, '--', ...args], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RAKE_TOKEN: '', ...env },
  });
  let text = '';
  child.stderr?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const lines = () =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { child, text: () => text, lines };
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((ok) => {
    if (child.exitCode !== null) ok(child.exitCode);
    else child.once('exit', (code) => ok(code));
  });

describe('rakeserver program: extensions', () => {
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'rake-prog-auth-'));
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('warns loudly on stderr when it listens beyond loopback without a token', async () => {
    const p = rakeserver(['--host', '0.0.0.0', '--port', '0', '--log-level', 'silent']);
    assert.ok(
      await waitFor(
        () => p.text().includes('WARNING: listening on 0.0.0.0 without a token'),
        15_000,
      ),
      p.text(),
    );
    // The warning comes before the server listens; a SIGTERM may stop it either side of that.
    p.child.kill('SIGTERM');
    await exited(p.child);
  });

  for (const via of ['--token-file', 'RAKE_TOKEN'] as const) {
    it(`requires the token given by ${via}, and never logs it`, async () => {
      const file = join(scratch, 'token');
      await writeFile(file, `${TOKEN}\n`);
      await chmod(file, 0o600);
      const args = ['--port', '0', '--log-level', 'debug', '--cache-size', '1M'];
      const p =
        via === '--token-file'
          ? rakeserver([...args, '--token-file', file])
          : rakeserver(args, { RAKE_TOKEN: TOKEN });
      assert.ok(await waitFor(() => p.lines().some((l) => l.msg === 'listening'), 15_000));
      const listening = p.lines().find((l) => l.msg === 'listening');
      assert.equal(listening?.auth, true);
      assert.equal(listening?.cacheSize, 1024 * 1024);
      assert.match(String(listening?.description), /ext=stderr,mode,cache,push,cwd,queue,auth$/);
      const peer = await RawPeer.connect(listening?.port as number);
      await peer.send(pkt('!C', 'echo hi'));
      assert.match((await peer.packet()).payload.toString(), /unauthenticated/);
      peer.destroy();
      p.child.kill('SIGTERM');
      assert.equal(await exited(p.child), 0);
      assert.equal(p.text().includes(TOKEN), false);
      assert.equal(p.text().includes('WARNING'), false);
    });
  }

  it('exits 2 for a token file it cannot read, and for a bad --cache-size', async () => {
    const missing = rakeserver(['--port', '0', '--token-file', join(scratch, 'nope')]);
    assert.equal(await exited(missing.child), 2);
    assert.match(missing.text(), /cannot read the token file/);
    const bad = rakeserver(['--port', '0', '--cache-size', 'lots']);
    assert.equal(await exited(bad.child), 2);
    assert.match(bad.text(), /--cache-size/);
  });
});
