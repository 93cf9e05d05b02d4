// A host whose load stream goes quiet is left (issue 20): two real rakeserver programs, the
// client's real engine with load streams; one server is frozen (SIGSTOP) mid-run. Its stream
// falls silent, the dispatcher stops placing actions there within 3 beats, its job in flight
// is retried elsewhere (heartbeat), and every action succeeds on the other host.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lastValueFrom, tap, toArray } from 'rxjs';
import type { RakeEvent } from '../../src/client/events.js';
import { run } from '../../src/client/run.js';
import { type RakeserverProgram, rakeserverProgram } from '../helpers/rakeserver-program.js';
import { waitUntil } from '../helpers/wait.js';
import { only, parse, summary } from './support.js';

describe('load streams: a host that goes quiet', () => {
  let scratch = '';
  let servers: RakeserverProgram[] = [];
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'rake-quiet-'));
    servers = await Promise.all(
      [1, 2].map((i) =>
        rakeserverProgram(join(scratch, `work${i}`), [
          '--heartbeat-interval',
          '0.2',
          '--max-jobs',
          '1',
        ]),
      ),
    );
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await rm(scratch, { recursive: true, force: true });
  });

  it('is left: its actions go to the other host, and all succeed', {
    timeout: 120_000,
  }, async () => {
    const [frozen, other] = servers as [RakeserverProgram, RakeserverProgram];
    const dir = join(scratch, 'project');
    await mkdir(dir);
    const started = join(scratch, 'started');
    const hosts = `127.0.0.1:${frozen.port} 127.0.0.1:${other.port}`;
    await writeFile(
      join(dir, 'Rakefile'),
      [
        `PORT = ${frozen.port}`,
        `HOSTS = ${hosts}`,
        '',
        'all:',
        ...Array.from(
          { length: 8 },
          (_, i) => `\tremote-sh -c "touch ${started}; sleep 0.4; echo ${i}"`,
        ),
        '',
      ].join('\n'),
    );
    const events: Array<{ at: number; event: RakeEvent }> = [];
    let frozenAt = Number.POSITIVE_INFINITY;
    const rakefile = parse(readFileSync(join(dir, 'Rakefile'), 'utf8'), join(dir, 'Rakefile'));
    const running = lastValueFrom(
      run(rakefile, {
        directory: dir,
        embedded: false,
        fallback: false,
        loadStreams: true,
        retries: 2,
      }).pipe(
        tap((event) => events.push({ at: performance.now(), event })),
        toArray(),
      ),
    );
    try {
      await waitUntil(() => existsSync(started), { ms: 30_000, what: 'a first job' });
      frozen.child.kill('SIGSTOP');
      frozenAt = performance.now();
      const all = await running;
      assert.equal(summary(all).exitStatus, 0, JSON.stringify(only(all, 'action-failed')));
      assert.equal(summary(all).succeeded, 8);
    } finally {
      frozen.child.kill('SIGCONT');
    }
    const frozenHost = `127.0.0.1:${frozen.port}`;
    // 3 beats of 0.2 s after the last load heard; a second of slack for a loaded machine.
    const late = events.filter(
      (e) =>
        e.event.type === 'host-chosen' && e.event.host === frozenHost && e.at > frozenAt + 1600,
    );
    assert.deepEqual(late, [], 'no action was placed on the frozen host once it was quiet');
    assert.ok(
      (summary(all_(events)).perHost[`127.0.0.1:${other.port}`] ?? 0) >= 6,
      JSON.stringify(summary(all_(events)).perHost),
    );
  });
});

function all_(events: ReadonlyArray<{ event: RakeEvent }>): RakeEvent[] {
  return events.map((e) => e.event);
}
