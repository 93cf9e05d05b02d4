// Issue 17, defect 10: any local user could run commands as the client's user through its
// embedded server (loopback, no token). The embedded server now requires a secret of the
// run, which only this client holds; a rakeserver without a token says in its `listening`
// line, and `--help` says, who can reach it. Real sockets on loopback, real processes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { firstValueFrom, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import type { RakeEvent } from '../../src/client/events.js';
import { run } from '../../src/client/run.js';
import { serve } from '../../src/server/index.js';
import { pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { freePort } from './support.js';

const root = new URL('../../', import.meta.url).pathname;
const built = existsSync(join(root, 'dist/rakeserver.mjs'));

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'rake-secret-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('an embedded server', { timeout: 60_000 }, () => {
  it('runs this client’s actions and refuses another client’s command', async () => {
    const port = await freePort();
    const gate = join(dir, 'go');
    const pwned = join(dir, 'pwned');
    // The local action waits (bounded) for the gate, so the embedded server is up meanwhile.
    const text = `PORT = ${port}\n\nall:\n\ti=0; while [ ! -e ${gate} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo mine\n`;
    const parsed = parseRakefile(text, { file: join(dir, 'Rakefile') });
    assert.ok(parsed.ok);
    const events: RakeEvent[] = [];
    const done = firstValueFrom(run(parsed.rakefile, { directory: dir }).pipe(toArray())).then(
      (all) => events.push(...all),
    );

    // Another client of the same machine: the base protocol, as the reference client speaks it.
    let peer: RawPeer | undefined;
    await waitUntil(
      async () => {
        peer = await RawPeer.connect(port).catch(() => undefined);
        return peer !== undefined;
      },
      { ms: 20_000, what: 'the embedded server' },
    );
    try {
      await peer?.send(pkt('!C', `touch ${pwned}`));
      const refusal = await peer?.packet(10_000);
      assert.equal(refusal?.head.slice(0, 2), '!F');
      assert.match(refusal?.payload.toString() ?? '', /token/);
    } finally {
      peer?.destroy();
    }
    writeFileSync(gate, '');
    await done;
    const failed = events.filter((e) => e.type === 'action-failed');
    assert.deepEqual(failed, []);
    const started = events.find((e) => e.type === 'embedded-server-started');
    assert.ok(started, 'the run started an embedded server');
    const output = events.find((e) => e.type === 'output');
    assert.equal(output?.type === 'output' && output.stdout.text(), 'mine\n');
    assert.equal(existsSync(pwned), false, 'the other client’s command never ran');
  });
});

describe('a rakeserver without a token', { timeout: 60_000 }, () => {
  it('says in its listening line who can reach it', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l));
        cb();
      },
    });
    const logger = pino({ level: 'info' }, sink);
    const open = await serve({ port: 0, logger, graceSeconds: 0 });
    const guarded = await serve({ port: 0, logger, graceSeconds: 0, token: 'a secret' });
    await open.close();
    await guarded.close();
    const listening = lines.filter((l) => l.msg === 'listening');
    assert.equal(listening.length, 2);
    assert.match(
      String(listening[0]?.access),
      /^every user of this machine, as this user: no token/,
    );
    assert.equal(listening[1]?.access, 'only clients that prove they know the token');
  });

  it('is explained by --help', { skip: built ? false : 'run `npm run build` first' }, () => {
    const r = spawnSync(process.execPath, [join(root, 'bin/rakeserver.js'), '--help'], {
      encoding: 'utf8',
      cwd: root,
    });
    assert.match(
      r.stdout.replace(/\s+/g, ' '),
      /Without a token, every user of this machine \(and beyond loopback, anyone who can connect\) runs commands as you/,
    );
  });
});
