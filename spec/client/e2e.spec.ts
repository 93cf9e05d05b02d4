// End to end on loopback: real servers (serve() on port 0), real files in temp dirs.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServerHandle } from '../../src/server/index.js';
import {
  closeAll,
  exampleCopy,
  freePort,
  only,
  project,
  removeDir,
  runAll,
  startServers,
  summary,
  waitFor,
  withHosts,
} from './support.js';

const T = { timeout: 60_000 };
const PROGRAM_OUTPUT = 'hello from rake-ts: 8 numbers, sum 31, max 9, mean 3.87\n';

describe('e2e: the example C program (examples/hello-c)', () => {
  for (const n of [1, 2, 4]) {
    it(`builds, links and runs it with ${n} server(s)`, T, async () => {
      const servers = await startServers(n);
      const dir = await exampleCopy();
      try {
        const ports = servers.map((s) => s.port);
        const text = withHosts(
          await readFile(join(dir, 'Rakefile'), 'utf8'),
          ports,
          ports[0] as number,
        );
        const events = await runAll(dir, text);
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
        assert.deepEqual(
          only(events, 'output').map((e) => e.stdout.text()),
          [PROGRAM_OUTPUT],
        );
        for (const f of ['main.o', 'parse.o', 'stats.o', 'report.o', 'hello']) {
          assert.ok(existsSync(join(dir, f)), `${f} was written back`);
        }
        const compileHosts = new Set(
          only(events, 'action-succeeded')
            .filter((e) => e.action.actionset === 'compile')
            .map((e) => e.host),
        );
        assert.equal(compileHosts.size, Math.min(n, 4), 'the 4 compiles spread over the hosts');
        assert.deepEqual(
          only(events, 'actionset-started').map((e) => e.actionset),
          ['compile', 'link', 'run'],
        );
      } finally {
        await closeAll(servers);
        await removeDir(dir);
      }
    });
  }

  it(
    'a compile error stops before the next actionset, with stderr, status and line',
    T,
    async () => {
      const servers = await startServers(2);
      const dir = await exampleCopy();
      try {
        await writeFile(
          join(dir, 'src/stats.c'),
          '#include "stats.h"\nlong sum_of(const long *v, size_t n) {\n',
        );
        const ports = servers.map((s) => s.port);
        const text = withHosts(
          await readFile(join(dir, 'Rakefile'), 'utf8'),
          ports,
          ports[0] as number,
        );
        const events = await runAll(dir, text);
        const [failed, ...more] = only(events, 'action-failed');
        assert.equal(more.length, 0);
        assert.ok(failed);
        assert.equal(failed.reason, 'exit-non-zero');
        assert.equal(failed.exitStatus, 1);
        assert.equal(failed.position.line, 12);
        assert.match(failed.action.command, /src\/stats\.c/);
        assert.match(failed.stderr, /stats\.c/);
        assert.ok(failed.host && ports.some((p) => failed.host === `127.0.0.1:${p}`));
        // The other compiles finished and were reported; link and run never started.
        assert.equal(only(events, 'action-succeeded').length, 3);
        assert.deepEqual(
          only(events, 'actionset-started').map((e) => e.actionset),
          ['compile'],
        );
        const s = summary(events);
        assert.equal(s.exitStatus, 1);
        assert.equal(s.skipped, 2);
        assert.ok(!existsSync(join(dir, 'hello')));
      } finally {
        await closeAll(servers);
        await removeDir(dir);
      }
    },
  );
});

describe('e2e: local actions and the embedded server', () => {
  it('runs a local action on the server at localhost:PORT', T, async () => {
    const [server] = await startServers(1);
    const dir = await project();
    try {
      const port = (server as ServerHandle).port;
      const events = await runAll(
        dir,
        `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nset:\n\techo local $((1 + 2))\n`,
      );
      assert.deepEqual(
        only(events, 'output').map((e) => e.stdout.text()),
        ['local 3\n'],
      );
      const [chosen] = only(events, 'host-chosen');
      assert.equal(chosen?.reason, 'local');
      // localhost:PORT is the listed 127.0.0.1:PORT: one server, one name (docs/client.md).
      assert.equal(chosen?.host, `127.0.0.1:${port}`);
      assert.equal(only(events, 'embedded-server-started').length, 0);
    } finally {
      await closeAll([server as ServerHandle]);
      await removeDir(dir);
    }
  });

  it('starts an embedded server where nothing listens, and stops it at the end', T, async () => {
    const port = await freePort();
    const dir = await project({ 'in.txt': 'abc\n' });
    try {
      const text = `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nsets:\n\tremote-tr a-z A-Z < in.txt\n\t\trequires in.txt\n\techo here\n`;
      const events = await runAll(dir, text);
      assert.equal(summary(events).exitStatus, 0);
      const started = only(events, 'embedded-server-started');
      assert.equal(started.length, 1, 'one server for both spellings of the endpoint');
      assert.equal(started[0]?.port, port);
      assert.deepEqual(
        only(events, 'output')
          .map((e) => e.stdout.text())
          .sort(),
        ['ABC\n', 'here\n'],
      );
      // Closed at the end: nothing listens any more.
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect({ host: '127.0.0.1', port });
        s.on('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.on('error', () => resolve(true));
      });
      assert.ok(refused);
    } finally {
      await removeDir(dir);
    }
  });

  it(
    'with --no-embedded, a local action with no server fails with no-host (exit 3)',
    T,
    async () => {
      const port = await freePort();
      const dir = await project();
      try {
        const events = await runAll(
          dir,
          `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nset:\n\techo x\n`,
          {
            embedded: false,
          },
        );
        const [failed] = only(events, 'action-failed');
        assert.equal(failed?.reason, 'no-host');
        assert.match(failed?.message ?? '', new RegExp(`127\\.0\\.0\\.1:${port}`));
        assert.equal(summary(events).exitStatus, 3);
      } finally {
        await removeDir(dir);
      }
    },
  );
});

describe('e2e: hosts that fail', () => {
  let servers: ServerHandle[] = [];
  before(async () => {
    servers = await startServers(2, { costOffset: (i) => i * 3 });
  });
  after(async () => {
    await closeAll(servers);
  });

  it('skips an unreachable host in the cost poll', T, async () => {
    const dead = await freePort();
    const live = (servers[0] as ServerHandle).port;
    const dir = await project();
    try {
      const text = `PORT = ${live}\nHOSTS = 127.0.0.1:${dead} 127.0.0.1:${live}\n\nset:\n\tremote-echo 1\n\tremote-echo 2\n`;
      // The poll path (with load streams the dead host is lost and nothing is polled: below).
      const events = await runAll(dir, text, { embedded: false, loadStreams: false });
      assert.equal(summary(events).exitStatus, 0);
      assert.ok(
        only(events, 'cost-polled').some(
          (e) => e.cost.host === `127.0.0.1:${dead}` && e.cost.error,
        ),
      );
      assert.deepEqual(
        only(events, 'action-succeeded').map((e) => e.host),
        [`127.0.0.1:${live}`, `127.0.0.1:${live}`],
      );
    } finally {
      await removeDir(dir);
    }
  });

  it(
    'with load streams (the default): an unreachable host is lost, no poll, all on the live one',
    T,
    async () => {
      const dead = await freePort();
      const live = (servers[0] as ServerHandle).port;
      const dir = await project();
      try {
        const text = `PORT = ${live}\nHOSTS = 127.0.0.1:${dead} 127.0.0.1:${live}\n\nset:\n\tremote-echo 1\n\tremote-echo 2\n`;
        const events = await runAll(dir, text, { embedded: false });
        assert.equal(summary(events).exitStatus, 0);
        // Placed from the live host's load (reason only-host: the dead one is lost), not polled.
        assert.equal(only(events, 'cost-polled').length, 0);
        assert.deepEqual(
          only(events, 'host-chosen').map((e) => [e.host, e.reason]),
          [
            [`127.0.0.1:${live}`, 'only-host'],
            [`127.0.0.1:${live}`, 'only-host'],
          ],
        );
      } finally {
        await removeDir(dir);
      }
    },
  );

  it('retries an action on the next-cheapest host when its host is killed mid-job', T, async () => {
    const victim = (await startServers(1))[0] as ServerHandle;
    const spare = servers[1] as ServerHandle; // cost offset 3: chosen only after the victim
    const dir = await project();
    try {
      const text = `PORT = ${spare.port}\nHOSTS = 127.0.0.1:${victim.port} 127.0.0.1:${spare.port}\n\nset:\n\tremote-sleep 1; echo finished\n`;
      const running = runAll(dir, text, { embedded: false });
      await waitFor(() => victim.cost() > 0, 10_000, 'the job to reach the victim');
      await victim.close({ graceSeconds: 0 });
      const events = await running;
      const [retried] = only(events, 'action-retried');
      assert.equal(retried?.fromHost, `127.0.0.1:${victim.port}`);
      const [ok] = only(events, 'action-succeeded');
      assert.equal(ok?.host, `127.0.0.1:${spare.port}`);
      assert.equal(ok?.attempts, 2);
      assert.deepEqual(
        only(events, 'output').map((e) => e.stdout.text()),
        ['finished\n'],
      );
      assert.equal(summary(events).exitStatus, 0);
    } finally {
      await victim.close();
      await removeDir(dir);
    }
  });

  it('falls back to the local server when no remote host answers', T, async () => {
    const dead = await freePort();
    const local = (servers[0] as ServerHandle).port;
    const dir = await project();
    try {
      const text = `PORT = ${local}\nHOSTS = 127.0.0.1:${dead}\n\nset:\n\tremote-echo fell back\n`;
      // Embedded servers off: the dead host is loopback, and one would be started there.
      const events = await runAll(dir, text, { embedded: false });
      assert.equal(only(events, 'fallback-local').length, 1);
      assert.equal(only(events, 'action-succeeded')[0]?.host, `localhost:${local}`);
      assert.equal(summary(events).exitStatus, 0);

      const strict = await runAll(dir, text, { embedded: false, fallback: false });
      assert.equal(only(strict, 'action-failed')[0]?.reason, 'no-host');
      assert.equal(summary(strict).exitStatus, 3);
    } finally {
      await removeDir(dir);
    }
  });
});

describe('e2e: files', () => {
  let servers: ServerHandle[] = [];
  before(async () => {
    servers = await startServers(1);
  });
  after(async () => {
    await closeAll(servers);
  });
  const header = () => {
    const p = (servers[0] as ServerHandle).port;
    return `PORT = ${p}\nHOSTS = 127.0.0.1:${p}\n\n`;
  };

  it(
    'sends requirements under their relative path and writes outputs into subdirectories',
    T,
    async () => {
      const dir = await project({ 'data/in.txt': 'shout\n' });
      try {
        const text = `${header()}set:\n\tremote-mkdir -p out/deep && tr a-z A-Z < data/in.txt > out/deep/up.txt\n\t\trequires ./data/in.txt\n`;
        const events = await runAll(dir, text);
        assert.equal(summary(events).exitStatus, 0);
        assert.equal(await readFile(join(dir, 'out/deep/up.txt'), 'utf8'), 'SHOUT\n');
        assert.deepEqual(only(events, 'action-succeeded')[0]?.files, ['out/deep/up.txt']);
        assert.equal(only(events, 'upload-done')[0]?.files, 1);
      } finally {
        await removeDir(dir);
      }
    },
  );

  it(
    'fails an action whose required file is missing, naming its line, before sending anything',
    T,
    async () => {
      const dir = await project({ 'a.c': 'int a;\n' });
      try {
        const text = `${header()}set:\n\tremote-cc -c a.c\n\t\trequires a.c\n\tremote-cc -c b.c\n\t\trequires b.c\n`;
        const events = await runAll(dir, text);
        const failed = only(events, 'action-failed');
        assert.equal(failed.length, 1);
        assert.equal(failed[0]?.reason, 'missing-requirement');
        assert.equal(failed[0]?.position.line, 7);
        assert.match(failed[0]?.message ?? '', /b\.c \(line 8: no such file\)/);
        assert.equal(only(events, 'host-chosen').length, 0, 'nothing was sent');
        assert.equal(only(events, 'cost-polled').length, 0, 'no server was asked');
        assert.equal(summary(events).exitStatus, 1);
      } finally {
        await removeDir(dir);
      }
    },
  );
});

describe('e2e: spreading parallel actions', () => {
  let servers: ServerHandle[] = [];
  before(async () => {
    servers = await startServers(4, { maxJobs: 64 });
  });
  after(async () => {
    await closeAll(servers);
  });

  for (const [actions, low, high] of [
    [8, 2, 2],
    [64, 15, 17],
  ] as const) {
    it(
      `${actions} equal actions over 4 idle hosts land ${low === high ? low : `${low}-${high}`} on each`,
      T,
      async () => {
        const dir = await project();
        try {
          const ports = servers.map((s) => s.port);
          const lines = Array.from({ length: actions }, () => '\tremote-sleep 0.5\n').join('');
          const text = `PORT = ${ports[0]}\nHOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}\n\nset:\n${lines}`;
          const events = await runAll(dir, text);
          const s = summary(events);
          assert.equal(s.exitStatus, 0);
          const counts = Object.values(s.perHost);
          assert.equal(counts.length, 4, JSON.stringify(s.perHost));
          for (const c of counts) assert.ok(c >= low && c <= high, JSON.stringify(s.perHost));
        } finally {
          await removeDir(dir);
        }
      },
    );
  }
});

describe('e2e: --fail-fast', () => {
  it(
    'cancels the other actions of the actionset; their remote processes are killed',
    T,
    async () => {
      const [server] = await startServers(1);
      const dir = await project();
      try {
        const p = (server as ServerHandle).port;
        const text = `PORT = ${p}\nHOSTS = 127.0.0.1:${p}\n\nset:\n\tremote-sleep 30\n\tremote-sleep 0.3; exit 5\nnext:\n\tremote-true\n`;
        const events = await runAll(dir, text, { failFast: true });
        assert.equal(only(events, 'action-failed')[0]?.exitStatus, 5);
        assert.deepEqual(
          only(events, 'action-cancelled').map((e) => e.action.actionId),
          ['set#0'],
        );
        assert.equal(summary(events).exitStatus, 1);
        assert.equal(summary(events).skipped, 1);
        await waitFor(
          () => (server as ServerHandle).cost() === 0,
          10_000,
          'the sleep to be killed',
        );
      } finally {
        await closeAll(server ? [server] : []);
        await removeDir(dir);
      }
    },
  );
});
