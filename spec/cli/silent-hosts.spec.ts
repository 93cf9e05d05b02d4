// Dead and refusing hosts are named in the summary (issue 18, item 9): a port nobody listens
// on, a server that accepts and never answers, a name that does not resolve, and a server
// that wants a token this client does not have; the last gets no more work, and its actions
// go to the live host instead of failing. Real servers and sockets on loopback; the program
// runs in-process with captured streams.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { freePort, project, removeDir } from '../client/support.js';
import { rake } from './support.js';

/**
 * A name the C library refuses before sending any query (a 64-byte label is longer than DNS
 * allows): "no such name" without asking a resolver off this machine.
 */
const NO_SUCH_NAME = `${'n'.repeat(64)}.invalid`;

describe('rake-ts: hosts that never answered', { timeout: 60_000 }, () => {
  let live: ServerHandle;
  let locked: ServerHandle;
  let mute: Server;
  const held: Socket[] = [];
  let dead = 0;
  let dir = '';
  const saved = process.env.RAKE_TOKEN;
  before(async () => {
    delete process.env.RAKE_TOKEN;
    live = await serve({ port: 0, graceSeconds: 0 });
    locked = await serve({ port: 0, token: 'silent-hosts-spec-token', graceSeconds: 0 });
    // Accepts, reads, never answers: a cost query times out once connected.
    mute = createServer((s) => {
      held.push(s);
      s.resume();
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    dead = await freePort();
    dir = await project();
  });
  after(async () => {
    if (saved === undefined) delete process.env.RAKE_TOKEN;
    else process.env.RAKE_TOKEN = saved;
    for (const s of held) s.destroy();
    await new Promise<void>((resolve) => mute.close(() => resolve()));
    await Promise.all([live.close(), locked.close()]);
    await removeDir(dir);
  });

  it('names each in the summary with why, and runs every action on the live host', async () => {
    const mutePort = (mute.address() as { port: number }).port;
    const hosts = [
      `127.0.0.1:${live.port}`,
      `127.0.0.1:${locked.port}`,
      `127.0.0.1:${mutePort}`,
      `127.0.0.1:${dead}`,
      `${NO_SUCH_NAME}:${live.port}`,
    ];
    const actions = Array.from({ length: 6 }, (_, i) => `\tremote-echo out ${i}\n`).join('');
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${live.port}\nHOSTS = ${hosts.join(' ')}\n\nall:\n${actions}`,
    );
    const r = await rake(dir, [
      '--no-embedded',
      '--no-fallback',
      '--progress=never',
      '--cost-timeout',
      '0.5',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (let i = 0; i < 6; i++) assert.match(r.stdout, new RegExp(`^out ${i}$`, 'm'));
    // Every action ran on the live host.
    assert.match(r.stderr, new RegExp(`on 1 host \\(127\\.0\\.0\\.1:${live.port}=6\\)`));
    const notes = r.stderr.split('\n').filter((l) => /^rake-ts: (never answered|no work):/.test(l));
    const esc = (s: string) => s.replace(/[.[\]]/g, '\\$&');
    const expected = [
      new RegExp(
        `^rake-ts: no work: ${esc(hosts[1] as string)} wanted a token: it got no more work in this run: rakeserver at ${esc(hosts[1] as string)} requires a token`,
      ),
      new RegExp(
        `^rake-ts: never answered: ${esc(hosts[2] as string)} timed out \\(no answer within 500 ms\\)$`,
      ),
      new RegExp(
        `^rake-ts: never answered: ${esc(hosts[3] as string)} refused the connection: nothing listens there \\(ECONNREFUSED\\)$`,
      ),
      new RegExp(
        `^rake-ts: never answered: ${esc(hosts[4] as string)} no such name \\(ENOTFOUND\\)$`,
      ),
    ];
    assert.equal(notes.length, expected.length, notes.join('\n'));
    for (const [i, re] of expected.entries()) assert.match(notes[i] ?? '', re);
  });

  it('a loopback port where nothing listened: the embedded server that ran there is named', async () => {
    const free = await freePort();
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${live.port}\nHOSTS = 127.0.0.1:${free}\n\nall:\n\tremote-echo served\n`,
    );
    const r = await rake(dir, ['--progress=never']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^served$/m);
    assert.match(
      r.stderr,
      new RegExp(
        `^rake-ts: nothing listened at 127\\.0\\.0\\.1:${free}: an embedded server ran there \\(loopback-host\\)$`,
        'm',
      ),
    );
  });

  it('with -v, says so as soon as a host fails to answer', async () => {
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${live.port}\nHOSTS = 127.0.0.1:${live.port} 127.0.0.1:${dead}\n\nall:\n\tremote-true\n`,
    );
    const r = await rake(dir, ['--no-embedded', '--progress=never', '-v']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`127\\.0\\.0\\.1:${dead} did not answer a cost query \\(refused: ECONNREFUSED\\)`),
    );
  });
});
