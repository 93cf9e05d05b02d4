/**
 * How output files land in the project (issue 17, defects 6 and 9): a hostile server cannot
 * plant files under `.git/`, `.hg/`, `.svn/` (hooks and `core.fsmonitor` run code on the
 * next `git status`) or replace the Rakefile; an action's outputs land all together or not
 * at all (a broken download leaves nothing); two actions of one actionset writing the same
 * file is reported. Scripted servers on loopback, real files.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { firstValueFrom, timeout, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import type { RakeEvent, RakeEventOf } from '../../src/client/events.js';
import { run } from '../../src/client/run.js';
import { serve } from '../../src/server/index.js';
import { hdr, pkt } from '../helpers/raw-peer.js';

let root: string;
let projects = 0;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'rake-landing-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

/**
 * A server that answers cost queries with 0 and every job with `reply(n)` (n: the job's
 * number, from 0), then closes if `close` says so (a download cut short).
 */
async function scriptedServer(
  reply: (n: number) => Buffer,
  close = false,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let jobs = 0;
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
      else if (close) socket.end(reply(jobs++));
      else socket.write(reply(jobs++));
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

/** A success reply with these output files, in order (base mode: the client asks, we send). */
function outputs(files: ReadonlyArray<readonly [string, string]>, cut?: number): Buffer {
  const parts = [hdr('!SSI 0'), hdr(`!SSIF${files.length}`)];
  for (const [name, content] of files) {
    parts.push(pkt('!S!NF', name), pkt('!S!ZF', String(Buffer.byteLength(content))));
    parts.push(Buffer.from(content));
  }
  const all = Buffer.concat(parts);
  return cut === undefined ? all : all.subarray(0, all.length - cut);
}

/** A project directory with its Rakefile written: `actions` remote actions on `port`. */
function project(port: number, actions: string[]): { dir: string; text: string } {
  const dir = join(root, `p${++projects}`);
  const text = `HOSTS = 127.0.0.1:${port}\n\nbuild:\n${actions.map((a) => `\tremote-${a}\n`).join('')}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Rakefile'), text);
  return { dir, text };
}

async function runIn(dir: string, text: string): Promise<RakeEvent[]> {
  const parsed = parseRakefile(text, { file: join(dir, 'Rakefile') });
  assert.ok(parsed.ok);
  const events$ = run(parsed.rakefile, {
    directory: dir,
    embedded: false,
    fallback: false,
    retries: 0,
    jobTimeoutMs: 10_000,
  });
  return firstValueFrom(events$.pipe(toArray(), timeout(30_000)));
}

function failures(events: RakeEvent[]): RakeEventOf<'action-failed'>[] {
  return events.filter((e): e is RakeEventOf<'action-failed'> => e.type === 'action-failed');
}

/** Everything under `dir` but the Rakefile: what the run left in the project. */
function left(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((n) => n !== 'Rakefile').sort();
}

describe('outputs a hostile server may not write', { timeout: 120_000 }, () => {
  const refused: Array<[string, RegExp]> = [
    ['.git/hooks/pre-commit', /inside \.git\//],
    ['.git/config', /inside \.git\//],
    ['.GIT/config', /inside \.GIT\//],
    ['sub/.hg/hgrc', /inside \.hg\//],
    ['.svn/entries', /inside \.svn\//],
    ['Rakefile', /would replace the Rakefile/],
  ];
  for (const [name, why] of refused) {
    it(`refuses ${name}, naming host and path, and lands none of the action's outputs`, async () => {
      const server = await scriptedServer(() =>
        outputs([
          ['first.o', 'a good output before the bad one'],
          [name, '#!/bin/sh\necho pwned\n'],
        ]),
      );
      try {
        const { dir, text } = project(server.port, ['cc -c a.c']);
        const events = await runIn(dir, text);
        const [failed] = failures(events);
        assert.equal(failed?.reason, 'bad-output', JSON.stringify(failed));
        assert.match(
          failed?.message ?? '',
          new RegExp(
            `refused output file "${name.replaceAll('.', '\\.')}" from 127\\.0\\.0\\.1:${server.port}: `,
          ),
        );
        assert.match(failed?.message ?? '', why);
        assert.deepEqual(left(dir), [], 'nothing landed, no directory made');
        assert.equal(readFileSync(join(dir, 'Rakefile'), 'utf8'), text, 'the Rakefile is intact');
      } finally {
        await server.close();
      }
    });
  }

  it('lets a name that only looks alike through (.github/, .gitignore, x.git/)', async () => {
    const server = await scriptedServer(() =>
      outputs([
        ['.github/workflows/ci.yml', 'on: push\n'],
        ['.gitignore', '*.o\n'],
        ['x.git/y', 'y'],
      ]),
    );
    try {
      const { dir, text } = project(server.port, ['gen']);
      const events = await runIn(dir, text);
      assert.deepEqual(failures(events), []);
      assert.equal(readFileSync(join(dir, '.github/workflows/ci.yml'), 'utf8'), 'on: push\n');
      assert.equal(readFileSync(join(dir, 'x.git/y'), 'utf8'), 'y');
    } finally {
      await server.close();
    }
  });
});

describe('an action’s outputs land all together or not at all', { timeout: 60_000 }, () => {
  it('leaves nothing when the download breaks after the first file', async () => {
    const server = await scriptedServer(
      () =>
        outputs(
          [
            ['one.o', 'the first file, whole'],
            ['two.o', 'the second file, cut short by the server'],
          ],
          10,
        ),
      true,
    );
    try {
      const { dir, text } = project(server.port, ['cc -c one.c two.c']);
      const events = await runIn(dir, text);
      const [failed] = failures(events);
      assert.ok(failed, 'the action fails');
      assert.deepEqual(left(dir), [], 'no file, not even a temporary one');
    } finally {
      await server.close();
    }
  });
});

describe('a broken download into new directories', { timeout: 60_000 }, () => {
  it('removes the directories it made, and keeps one that was there', async () => {
    const server = await scriptedServer(
      () =>
        outputs(
          [
            ['kept/x.o', 'into a directory the project had'],
            ['gen/one.o', 'into a new one'],
            ['gen/deep/two.o', 'cut short by the server'],
          ],
          5,
        ),
      true,
    );
    try {
      const { dir, text } = project(server.port, ['gen']);
      mkdirSync(join(dir, 'kept'));
      const events = await runIn(dir, text);
      assert.ok(failures(events)[0], 'the action fails');
      assert.deepEqual(left(dir), ['kept'], 'gen/ and gen/deep/ are gone, kept/ stays empty');
    } finally {
      await server.close();
    }
  });
});

describe('two actions of one actionset writing the same output', { timeout: 60_000 }, () => {
  it('fails the second, naming the first; the first one’s file stays', async () => {
    const server = await scriptedServer((n) => outputs([['same.o', `written by job ${n}\n`]]));
    try {
      const { dir, text } = project(server.port, ['cc -c a.c -o same.o', 'cc -c b.c -o same.o']);
      const events = await runIn(dir, text);
      const failed = failures(events);
      assert.equal(failed.length, 1, JSON.stringify(failed));
      const ok = events.find(
        (e): e is RakeEventOf<'action-succeeded'> => e.type === 'action-succeeded',
      );
      assert.ok(ok);
      assert.equal(failed[0]?.reason, 'bad-output');
      assert.match(
        failed[0]?.message ?? '',
        new RegExp(
          `output file "same\\.o" was already written by ${ok.action.actionId} \\(line \\d+: .*\\) in this actionset`,
        ),
      );
      const summary = events.find((e) => e.type === 'done');
      assert.equal(summary?.type === 'done' && summary.summary.exitStatus, 1);
      // The file holds the output of the action that succeeded, whichever job that was.
      assert.match(readFileSync(join(dir, 'same.o'), 'utf8'), /^written by job [01]\n$/);
    } finally {
      await server.close();
    }
  });
});

describe('an output file whose name is not UTF-8', { timeout: 60_000 }, () => {
  it('fails the action with a message naming it, instead of vanishing', async () => {
    const server = await serve({ port: 0, graceSeconds: 0 });
    try {
      const { dir, text } = project(server.port, [`sh -c 'touch good.o "$(printf "bad\\377.o")"'`]);
      const events = await runIn(dir, text);
      const [failed] = failures(events);
      assert.ok(failed, 'the action fails');
      assert.equal(failed.reason, 'exit-non-zero');
      assert.match(
        failed.stderr,
        /rakeserver: refused: the command wrote 1 file name\(s\) that are not UTF-8, which the protocol cannot carry: bad\\xff\.o; give them UTF-8 names/,
      );
      assert.deepEqual(left(dir), [], 'and nothing lands');
    } finally {
      await server.close();
    }
  });
});
