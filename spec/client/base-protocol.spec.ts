// The client against a server that speaks only the base protocol, as the reference
// rakeserver does (spec/helpers/base-server.ts): no shell, idle cost 1, `!SSI` replies.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { whenSettled } from '../../src/client/cleanup.js';
import { run } from '../../src/client/run.js';
import { startBaseServer } from '../helpers/base-server.js';
import {
  closeAll,
  only,
  parse,
  project,
  removeDir,
  runAll,
  startServers,
  summary,
  waitFor,
} from './support.js';

const T = { timeout: 60_000 };

const SOURCES = {
  'allfunctions.h': 'int square(int x);\n',
  'square.c': '#include "allfunctions.h"\nint square(int x) { return x * x; }\n',
  'program.c':
    '#include <stdio.h>\n#include "allfunctions.h"\nint main(void) { printf("%d\\n", square(7)); return 0; }\n',
};

describe('base protocol: a reference-like server', () => {
  it('builds PROTOCOL.md example: uploads, `!SSI` replies, output filestreams', T, async () => {
    const base = await startBaseServer();
    const dir = await project(SOURCES);
    try {
      const text = [
        `PORT = ${base.port}`,
        `HOSTS = 127.0.0.1:${base.port}`,
        '',
        'compile:',
        '\tremote-cc -c square.c',
        '\t\trequires square.c allfunctions.h',
        '\tremote-cc -c program.c',
        '\t\trequires program.c allfunctions.h',
        'link:',
        '\tremote-cc -o program program.o square.o',
        '\t\trequires program.o square.o',
        '',
      ].join('\n');
      const events = await runAll(dir, text, { embedded: false });
      assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
      assert.deepEqual(base.commands.sort(), [
        'cc -c program.c',
        'cc -c square.c',
        'cc -o program program.o square.o',
      ]);
      assert.deepEqual(base.received.sort(), [
        'allfunctions.h',
        'allfunctions.h',
        'program.c',
        'program.o',
        'square.c',
        'square.o',
      ]);
      // An idle reference server reports cost 1 (its own thread): still chosen.
      assert.ok(only(events, 'cost-polled').every((e) => (e.cost.cost ?? 0) >= 1));
      await chmod(join(dir, 'program'), 0o755);
      assert.equal(execFileSync(join(dir, 'program'), { encoding: 'utf8' }), '49\n');
    } finally {
      await base.close();
      await removeDir(dir);
    }
  });

  it('reports `!F` with stderr and exit status', T, async () => {
    const base = await startBaseServer();
    const dir = await project({ 'bad.c': 'int x = ;\n' });
    try {
      const text = `PORT = ${base.port}\nHOSTS = 127.0.0.1:${base.port}\n\nset:\n\tremote-cc -c bad.c\n\t\trequires bad.c\n`;
      const events = await runAll(dir, text, { embedded: false });
      const [failed] = only(events, 'action-failed');
      assert.equal(failed?.reason, 'exit-non-zero');
      assert.equal(failed?.exitStatus, 1);
      assert.match(failed?.stderr ?? '', /bad\.c/);
      assert.equal(summary(events).exitStatus, 1);
    } finally {
      await base.close();
      await removeDir(dir);
    }
  });

  it('refuses an output file named outside the Rakefile directory', T, async () => {
    const base = await startBaseServer({ renameOutput: (name) => `../${name}` });
    const dir = await project();
    try {
      const text = `PORT = ${base.port}\nHOSTS = 127.0.0.1:${base.port}\n\nset:\n\tremote-touch escape-${base.port}.txt\n`;
      const events = await runAll(dir, text, { embedded: false });
      const [failed] = only(events, 'action-failed');
      assert.equal(failed?.reason, 'bad-output');
      assert.ok(!existsSync(join(dir, '..', `escape-${base.port}.txt`)));
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await base.close();
      await removeDir(dir);
    }
  });

  it('moves a job to another host when its host drops the connection', T, async () => {
    const dropper = await startBaseServer({ dropJobs: true });
    const [ours] = await startServers(1, { costOffset: () => 5 });
    const dir = await project();
    try {
      const port = ours?.port as number;
      const text = `PORT = ${port}\nHOSTS = 127.0.0.1:${dropper.port} 127.0.0.1:${port}\n\nset:\n\tremote-echo ok\n`;
      // The poll path: by cost, the dropper (1) before ours (offset 5). With load streams the
      // action would go to ours at once (a live host with a free slot beats a polled one).
      const events = await runAll(dir, text, { embedded: false, loadStreams: false });
      assert.equal(only(events, 'action-retried')[0]?.fromHost, `127.0.0.1:${dropper.port}`);
      assert.equal(only(events, 'action-succeeded')[0]?.host, `127.0.0.1:${port}`);
      assert.deepEqual(dropper.commands, ['echo ok']);
    } finally {
      await dropper.close();
      await closeAll(ours ? [ours] : []);
      await removeDir(dir);
    }
  });

  it('unsubscribing mid-download leaves no partial output file', T, async () => {
    const base = await startBaseServer({ stallDownloadAfter: 1000 });
    // Larger than SMALL_FILE_BYTES, so the download streams into a temporary file.
    const dir = await project({ 'big.bin': 'x'.repeat(1_000_000) });
    try {
      const text = `PORT = ${base.port}\nHOSTS = 127.0.0.1:${base.port}\n\nset:\n\tremote-cp big.bin out.bin\n\t\trequires big.bin\n`;
      let sawTemp = false;
      const subscription = run(parse(text), { directory: dir, embedded: false }).subscribe();
      await waitFor(
        async () => {
          sawTemp = (await readdir(dir)).some((n) => n.includes('.rake-tmp-'));
          return sawTemp;
        },
        10_000,
        'a partial output file',
      );
      subscription.unsubscribe();
      await whenSettled();
      const left = (await readdir(dir)).filter((n) => n !== 'big.bin');
      assert.deepEqual(left, []);
    } finally {
      await base.close();
      await removeDir(dir);
    }
  });
});
