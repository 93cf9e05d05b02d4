// The Chrome trace: valid JSON in the trace-event format, one lane per host, each phase
// nested inside its action's span, overlapping actions on separate threads of a lane.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { RakeEvent } from '../../src/client/events.js';
import { assignSlots, phaseSpans, RUN_WITH_QUEUE } from '../../src/observe/timeline.js';
import { ACTIONSET_PID, chromeTrace, type TraceEvent } from '../../src/observe/trace.js';
import { RECORDED, recordRun } from './support.js';

type Span = Extract<TraceEvent, { ph: 'X' }>;
type Meta = Extract<TraceEvent, { ph: 'M' }>;

describe('chromeTrace', { timeout: 60_000 }, () => {
  let events: RakeEvent[] = [];
  let spans: Span[] = [];
  let meta: Meta[] = [];
  before(async () => {
    events = await recordRun();
    const parsed = JSON.parse(JSON.stringify(chromeTrace(events))) as {
      traceEvents: TraceEvent[];
      displayTimeUnit: string;
    };
    assert.equal(parsed.displayTimeUnit, 'ms');
    spans = parsed.traceEvents.filter((e): e is Span => e.ph === 'X');
    meta = parsed.traceEvents.filter((e): e is Meta => e.ph === 'M');
  });

  it('has a span per action and per actionset', () => {
    assert.equal(spans.filter((s) => s.cat === 'action').length, RECORDED.actions);
    assert.equal(spans.filter((s) => s.cat === 'actionset').length, RECORDED.actionsets);
    for (const s of spans) {
      assert.ok(Number.isInteger(s.ts) && s.ts >= 0, `ts of ${s.name}`);
      assert.ok(Number.isInteger(s.dur) && s.dur >= 0, `dur of ${s.name}`);
    }
  });

  it('gives each host its own lane, named after it', () => {
    const hosts = new Set(
      events.flatMap((e) =>
        e.type === 'action-succeeded' || e.type === 'action-failed' ? [e.host] : [],
      ),
    );
    const names = meta.filter((m) => m.name === 'process_name');
    const hostLanes = names.filter((m) => m.pid !== ACTIONSET_PID);
    assert.deepEqual(new Set(hostLanes.map((m) => m.args.name)), hosts);
    assert.equal(new Set(hostLanes.map((m) => m.pid)).size, hostLanes.length, 'one pid per host');
    for (const s of spans.filter((x) => x.cat === 'action')) {
      const lane = hostLanes.find((m) => m.pid === s.pid);
      const host = events.find(
        (e) =>
          (e.type === 'action-succeeded' || e.type === 'action-failed') &&
          e.action.actionId === s.args?.actionId,
      ) as { host?: string } | undefined;
      assert.equal(lane?.args.name, host?.host, `${s.name} is in its host's lane`);
    }
  });

  it('nests every phase inside its action, on the same thread', () => {
    const actions = spans.filter((s) => s.cat === 'action');
    const phases = spans.filter((s) => s.cat === 'phase');
    assert.ok(phases.length >= actions.length, 'phases were drawn');
    for (const p of phases) {
      const parents = actions.filter(
        (a) => a.pid === p.pid && a.tid === p.tid && a.ts <= p.ts && p.ts + p.dur <= a.ts + a.dur,
      );
      assert.equal(parents.length, 1, `${p.name} at ${p.ts} has exactly one parent`);
    }
    const names = new Set(phases.map((p) => p.name));
    for (const n of ['poll', 'upload', 'run']) assert.ok(names.has(n), `a ${n} phase is drawn`);
  });

  it('never overlaps two actions on one thread, and names each thread', () => {
    const threads = meta.filter((m) => m.name === 'thread_name');
    assert.ok(
      threads.some((t) => t.tid === 1),
      'four actions started at once on two hosts: some host runs two at a time',
    );
    const actions = spans.filter((s) => s.cat === 'action');
    for (const a of actions) {
      for (const b of actions) {
        if (a === b || a.pid !== b.pid || a.tid !== b.tid) continue;
        assert.ok(a.ts + a.dur <= b.ts || b.ts + b.dur <= a.ts, `${a.name} / ${b.name}`);
      }
    }
  });

  it('marks the failed action', () => {
    const failed = spans.filter((s) => s.cat === 'action' && s.args?.outcome === 'failed');
    assert.equal(failed.length, RECORDED.failed);
    assert.equal(failed[0]?.args?.exitStatus, 3);
  });
});

describe('phaseSpans', () => {
  it('lays the poll from the start and the attempt back from the end, clamped', () => {
    const t = { poll: 10, connect: 1, upload: 4, queued: 20, run: 30, download: 5 };
    assert.deepEqual(phaseSpans(100, 200, t), [
      { name: 'poll', start: 100, end: 110 },
      { name: 'connect', start: 140, end: 141 },
      { name: 'upload', start: 141, end: 145 },
      { name: 'queued', start: 145, end: 165 },
      { name: 'run', start: 165, end: 195 },
      { name: 'download', start: 195, end: 200 },
    ]);
    const squeezed = phaseSpans(0, 20, t);
    for (const s of squeezed) assert.ok(s.start >= 0 && s.end <= 20 && s.start < s.end);
  });

  it('labels the run of a host that cannot say when a job started (no queued phase)', () => {
    const t = { poll: 10, connect: 1, upload: 4, run: 50, download: 5 };
    assert.deepEqual(phaseSpans(100, 200, t)[3], {
      name: 'run',
      start: 145,
      end: 195,
      label: RUN_WITH_QUEUE,
    });
  });
});

describe('assignSlots', () => {
  it('gives overlapping spans different slots and reuses freed ones', () => {
    const a = { start: 0, end: 10 };
    const b = { start: 5, end: 15 };
    const c = { start: 10, end: 20 };
    const slots = assignSlots([a, b, c]);
    assert.deepEqual([slots.get(a), slots.get(b), slots.get(c)], [0, 1, 0]);
  });
});
