// Time queued on a server is not running time (issue 18, item 6): a rake-ts server says when
// a job that waited for a slot starts (extension `queue`); the events, the live display, the
// report's figures and the trace keep queued and running apart. A base-protocol host cannot
// say: its run is one span, labelled so. Real servers on loopback, real processes; the
// display is driven in virtual time with the recorded events.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Subject } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import type { RakeEvent } from '../../src/client/events.js';
import { run } from '../../src/client/run.js';
import { ProgressDisplay } from '../../src/observe/progress.js';
import { hostStats } from '../../src/observe/summary.js';
import { buildTimeline, RUN_WITH_QUEUE } from '../../src/observe/timeline.js';
import { chromeTrace } from '../../src/observe/trace.js';
import type { ServerHandle } from '../../src/server/index.js';
import { type BaseServer, startBaseServer } from '../helpers/base-server.js';
import { waitUntil } from '../helpers/wait.js';
import { closeAll, only, parse, project, removeDir, runAll, startServers } from './support.js';

describe('queued is not running', { timeout: 60_000 }, () => {
  let server: ServerHandle;
  let base: BaseServer;
  let dir = '';
  before(async () => {
    [server] = (await startServers(1, { maxJobs: 1 })) as [ServerHandle];
    base = await startBaseServer();
    dir = await project();
  });
  after(async () => {
    await closeAll([server, base]);
    await removeDir(dir);
  });

  it('a one-slot server: two of three jobs are queued, and their queue time is not run time', async () => {
    const go = join(dir, 'go');
    // Each job holds the slot until the test opens the gate: the other two must queue.
    const job = `while [ ! -e ${go} ]; do sleep 0.01; done`;
    const text = `HOSTS = 127.0.0.1:${server.port}\n\nall:\n${`\tremote-${job}\n`.repeat(3)}`;
    const events: RakeEvent[] = [];
    const live = new Subject<RakeEvent>();
    const done = new Promise<void>((resolve, reject) => {
      // A queue of 2 beyond its one slot: the load-stream dispatch gives the host all three
      // (with the default 1 the third would wait at the client, not on the server).
      run(parse(text, join(dir, 'Rakefile')), {
        directory: dir,
        embedded: false,
        dispatchQueue: 2,
      }).subscribe({
        next: (e) => {
          events.push(e);
          live.next(e);
        },
        complete: resolve,
        error: reject,
      });
    });
    await waitUntil(() => only(events, 'action-queued').length === 2, {
      ms: 20_000,
      every: 10,
      what: 'two jobs queued',
    });
    const gateOpened = Date.now();
    const beforeGate = [...events];
    await writeFile(go, '');
    await done;
    assert.ok(existsSync(go));

    const queued = only(events, 'action-queued');
    const started = only(events, 'action-started');
    const ok = only(events, 'action-succeeded');
    assert.equal(ok.length, 3);
    assert.deepEqual(
      started.map((e) => e.action.actionId).sort(),
      queued.map((e) => e.action.actionId).sort(),
    );
    for (const e of ok) {
      assert.notEqual(e.phases.queued, undefined, 'a rake-ts server says when a job starts');
      const wasQueued = queued.some((q) => q.action.actionId === e.action.actionId);
      if (!wasQueued) assert.equal(e.phases.queued, 0);
      else {
        // It was queued at least until the gate opened: the first job could not end before.
        const q = queued.find((x) => x.action.actionId === e.action.actionId) as RakeEvent;
        assert.ok((e.phases.queued ?? 0) >= gateOpened - q.time, JSON.stringify(e.phases));
      }
    }

    // The live display, fed the events up to the gate: 1 running, 2 queued.
    const head = headlineAfter(beforeGate);
    assert.match(head, /^\[0\/3\] all \(1\/1\): 1 running, 2 queued · /);

    // The report's host figures count running time only; the trace has queued spans.
    const timeline = buildTimeline(events);
    const [stats] = hostStats(timeline);
    const runs = ok.map((e) => e.phases.run);
    assert.equal(stats?.meanRunMs, runs.reduce((a, b) => a + b, 0) / runs.length);
    const waited = ok.reduce((n, e) => n + (e.phases.queued ?? 0), 0);
    assert.ok(
      waited > 0 && (stats?.meanRunMs ?? 0) < (waited + runs.reduce((a, b) => a + b, 0)) / 3,
    );
    const names = chromeTrace(timeline)
      .traceEvents.filter((t) => 'cat' in t && t.cat === 'phase')
      .map((t) => t.name);
    assert.equal(names.filter((n) => n === 'queued').length, 2);
    assert.ok(!names.includes(RUN_WITH_QUEUE));
  });

  it('a base-protocol host: run is one span, labelled as including any queueing', async () => {
    const events = await runAll(dir, `HOSTS = 127.0.0.1:${base.port}\n\nall:\n\tremote-echo hi\n`, {
      embedded: false,
    });
    const [ok] = only(events, 'action-succeeded');
    assert.equal(ok?.phases.queued, undefined);
    assert.equal(only(events, 'action-queued').length, 0);
    const names = chromeTrace(buildTimeline(events))
      .traceEvents.filter((t) => 'cat' in t && t.cat === 'phase')
      .map((t) => t.name);
    assert.ok(names.includes(RUN_WITH_QUEUE), names.join(', '));
    assert.ok(!names.includes('run') && !names.includes('queued'), names.join(', '));
  });
});

/** The live display's headline once it has drawn `events` (virtual time, a fake terminal). */
function headlineAfter(events: readonly RakeEvent[]): string {
  let raw = '';
  const term = () =>
    Object.assign(
      new Writable({
        write(chunk: Buffer | string, _enc, cb) {
          raw += chunk.toString();
          cb();
        },
      }),
      { columns: 200, rows: 20, isTTY: true },
    );
  const t0 = events[0]?.time ?? 0;
  let head = '';
  const ts = new TestScheduler(assert.deepEqual);
  ts.run(({ flush }) => {
    const display = new ProgressDisplay({
      mode: 'live',
      stdout: term(),
      stderr: term(),
      scheduler: ts,
      redrawMs: 100,
      actionsets: 1,
      now: () => t0 + ts.now(),
    });
    for (const e of events) display.next(e);
    ts.schedule(() => {
      const heads =
        raw.match(new RegExp(`\\[\\d+/\\d+\\] [^${String.fromCharCode(27)}\\n]*`, 'g')) ?? [];
      head = heads.at(-1) ?? '';
      display.dispose();
    }, 500);
    flush();
  });
  return head;
}
