/**
 * File names never escape their directory, on either side (docs/reliability.md): the
 * server's job directory for requirements and outputs, the client's Rakefile directory for
 * outputs. Hostile peers on both sides, and symlinks a job (or the user) planted, pointing
 * at a sentinel directory that must stay untouched. spec/server/hostile.spec.ts covers the
 * server's refusals of climbing, absolute and NUL names; this adds symlinked directories
 * with content, nested symlinked parents, names of directories, the client side, and the
 * two real programs together. Every path involved is under this spec's temporary directory.
 */
import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { firstValueFrom, timeout, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import type { RakeEvent } from '../../src/client/events.js';
import { type RunOptions, run } from '../../src/client/run.js';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';

let root: string;
let sentinel: string;
let server: ServerHandle;
let workdir: string;
let dirs = 0;
const SECRET = 'secret: must never travel\n';
const PRECIOUS = 'precious: must never change\n';

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'rake-names-'));
  sentinel = join(root, 'sentinel');
  mkdirSync(sentinel);
  writeFileSync(join(sentinel, 'secret.txt'), SECRET);
  writeFileSync(join(sentinel, 'precious.txt'), PRECIOUS);
  workdir = join(root, 'l1', 'l2', 'work');
  server = await serve({ port: 0, workdir, graceSeconds: 0 });
});
after(async () => {
  await server?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** The sentinel holds exactly what it held at the start. */
function assertSentinelIntact(): void {
  assert.equal(readFileSync(join(sentinel, 'secret.txt'), 'utf8'), SECRET);
  assert.equal(readFileSync(join(sentinel, 'precious.txt'), 'utf8'), PRECIOUS);
  assert.deepEqual(readdirSync(sentinel).sort(), ['precious.txt', 'secret.txt']);
  for (const stray of ['x', 'abs', 'escape']) {
    assert.equal(existsSync(join(root, stray)), false, `${stray} appeared in the root`);
    assert.equal(existsSync(join(root, 'l1', stray)), false, `${stray} appeared in l1`);
  }
}

/** Reads a refusal's two `!F` packets; returns the message. */
async function refusal(peer: RawPeer): Promise<string> {
  const first = await peer.packet();
  assert.match(first.head, /^!F\d+$/);
  const second = await peer.packet();
  assert.deepEqual([second.head, second.payload.toString()], ['!F1', '2']);
  return first.payload.toString('utf8');
}

describe('server side: names stay inside the job directory', () => {
  it('never follows a symlinked directory into the files outside it', async () => {
    const peer = await RawPeer.connect(server.port);
    try {
      await peer.send(pkt('!C', `ln -s ${sentinel} out && echo x > real.txt`));
      await peer.expect(Buffer.concat([hdr('!SSI 0'), hdr('!SSIF1')]));
      const files = await peer.pullFiles(1);
      assert.deepEqual(files, [{ name: 'real.txt', content: Buffer.from('x\n') }]);
      await peer.send(hdr('!D0'));
    } finally {
      peer.destroy();
    }
    assertSentinelIntact();
  });

  it('refuses an upload below a nested symlinked parent', async () => {
    const peer = await RawPeer.connect(server.port);
    try {
      await peer.send(pkt('!C', `mkdir a && ln -s ${sentinel} a/b`));
      await peer.expect(hdr('!SS  0'));
      await peer.send(hdr('!R0'), hdr('!SSIF1'));
      await peer.expect('!N');
      await peer.send(pkt('!S!NF', 'a/b/c/new.txt'));
      const message = await refusal(peer);
      assert.match(message, /bad-name: .*"b" is a symlink/);
    } finally {
      peer.destroy();
    }
    assert.equal(existsSync(join(sentinel, 'c')), false);
    assertSentinelIntact();
  });

  it('refuses an upload named like a directory (a clear bad-name, not EISDIR)', async () => {
    const peer = await RawPeer.connect(server.port);
    try {
      await peer.send(hdr('!R0'), hdr('!SSIF2'));
      await peer.serveFile('sub/a.txt', Buffer.from('a'));
      await peer.expect('!N');
      await peer.send(pkt('!S!NF', 'sub'));
      const message = await refusal(peer);
      assert.match(message, /^rakeserver: refused: bad-name: .*"sub", which is a directory/);
    } finally {
      peer.destroy();
    }
  });
});

/** A hostile server: answers cost queries with 0, and every job with `reply`. */
async function hostileServer(reply: Buffer): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.on('end', () => socket.end());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < 64) return;
      socket.off('data', onData);
      socket.on('data', () => {});
      if (/^!E0? /.test(head.toString('latin1', 0, 64))) socket.end(pkt('!E', '0'));
      else socket.write(reply);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const address = srv.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
}

/** A project with the traps a careless client would fall into, and its Rakefile text. */
function project(
  hostPort: number,
  action: string,
  requires: string[] = [],
): { dir: string; text: string } {
  const dir = join(root, 'projects', `p${++dirs}`, 'work');
  mkdirSync(join(dir, 'existingdir'), { recursive: true });
  symlinkSync(sentinel, join(dir, 'lnk'));
  symlinkSync(join(sentinel, 'precious.txt'), join(dir, 'plink'));
  const lines = [`HOSTS = 127.0.0.1:${hostPort}`, '', 'build:', `\tremote-${action}`];
  if (requires.length > 0) lines.push(`\t\trequires ${requires.join(' ')}`);
  return { dir, text: `${lines.join('\n')}\n` };
}

async function runIn(dir: string, text: string, options: RunOptions = {}): Promise<RakeEvent[]> {
  const parsed = parseRakefile(text, { file: join(dir, 'Rakefile') });
  assert.ok(parsed.ok);
  const events$ = run(parsed.rakefile, {
    directory: dir,
    embedded: false,
    fallback: false,
    jobTimeoutMs: 5000,
    ...options,
  });
  return firstValueFrom(events$.pipe(toArray(), timeout(20_000)));
}

const outputOf = (name: string, content = 'evil') =>
  Buffer.concat([
    hdr('!SSI 0'),
    hdr('!SSIF1'),
    pkt('!S!NF', name),
    pkt('!S!ZF', String(Buffer.byteLength(content))),
    Buffer.from(content),
  ]);

describe('client side: output names stay inside the Rakefile directory', () => {
  const hostile: Array<[string, string]> = [
    ['a name climbing out through a symlink', 'lnk/../x'],
    ['a name climbing one level', '../x'],
    ['a name climbing to an etc', '../../etc/x'],
    ['an absolute name', '/ABS/abs'],
    ['a name below a symlinked directory', 'lnk/x'],
    ['a name of an existing directory', 'existingdir'],
    ['a name with NUL', 'a\0b'],
  ];
  for (const [what, template] of hostile) {
    it(`refuses ${what} (${JSON.stringify(template)}) and writes nothing`, async () => {
      const name = template.replace('/ABS', sentinel);
      const fake = await hostileServer(outputOf(name));
      try {
        const { dir, text } = project(fake.port, 'cc -c x.c');
        const events = await runIn(dir, text);
        const failed = events.filter((e) => e.type === 'action-failed');
        assert.equal(failed.length, 1);
        assert.equal(failed[0]?.type === 'action-failed' && failed[0].reason, 'bad-output');
        assert.equal(existsSync(join(dir, 'x')), false);
        assert.ok(lstatSync(join(dir, 'existingdir')).isDirectory());
        assert.ok(lstatSync(join(dir, 'lnk')).isSymbolicLink());
      } finally {
        await fake.close();
      }
      assertSentinelIntact();
    });
  }

  it('replaces a symlink named like an output file instead of writing through it', async () => {
    const fake = await hostileServer(outputOf('plink', 'replaced'));
    try {
      const { dir, text } = project(fake.port, 'cc -c x.c');
      const events = await runIn(dir, text);
      const ok = events.find((e) => e.type === 'action-succeeded');
      assert.deepEqual(ok?.type === 'action-succeeded' && ok.files, ['plink']);
      assert.ok(lstatSync(join(dir, 'plink')).isFile());
      assert.equal(readFileSync(join(dir, 'plink'), 'utf8'), 'replaced');
    } finally {
      await fake.close();
    }
    assertSentinelIntact();
  });
});

describe('both sides: the real client and the real server', () => {
  it("a job's symlink to a directory outside never comes back, only its real output", async () => {
    const { dir, text } = project(server.port, `ln -s ${sentinel} out && cp in.txt real.txt`, [
      'in.txt',
    ]);
    writeFileSync(join(dir, 'in.txt'), 'input\n');
    const events = await runIn(dir, text);
    const ok = events.find((e) => e.type === 'action-succeeded');
    assert.deepEqual(ok?.type === 'action-succeeded' && ok.files, ['real.txt']);
    assert.equal(existsSync(join(dir, 'out')), false);
    assert.equal(readFileSync(join(dir, 'real.txt'), 'utf8'), 'input\n');
    assertSentinelIntact();
  });

  it('requirements outside the Rakefile directory keep their places, inside the job', async () => {
    // Our server carries relative places (extension cwd): `..` resolves inside the job
    // directory, never above it (issue 18 item 12; docs/protocol.md).
    const { dir, text } = project(server.port, 'cat ../shared/outside.h src/in.c > listing.txt', [
      '../shared/outside.h',
      './src/in.c',
      'src/../src/in.c',
    ]);
    mkdirSync(join(dir, '..', 'shared'), { recursive: true });
    writeFileSync(join(dir, '..', 'shared', 'outside.h'), '#define X 1\n');
    mkdirSync(join(dir, 'src'));
    writeFileSync(join(dir, 'src', 'in.c'), 'int x;\n');
    const events = await runIn(dir, text);
    const ok = events.find((e) => e.type === 'action-succeeded');
    assert.ok(ok, JSON.stringify(events.filter((e) => e.type === 'action-failed')));
    assert.equal(readFileSync(join(dir, 'listing.txt'), 'utf8'), '#define X 1\nint x;\n');
    assertSentinelIntact();
  });
});
