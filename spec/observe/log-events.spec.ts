// Log records: every event of a real run becomes exactly one record with stable fields,
// through the logEvents operator, which whoever subscribes to run() wires (the CLI does).
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { pino } from 'pino';
import { from, lastValueFrom, toArray } from 'rxjs';
import type { RakeEvent } from '../../src/client/events.js';
import { run } from '../../src/client/run.js';
import { eventRecord, logEvents } from '../../src/observe/log-events.js';
import { freePort, parse, project, removeDir, runAll } from '../client/support.js';
import { recordRun } from './support.js';

type Rec = Record<string, unknown> & { level: number; msg: string; event: string };

/** A pino logger at `level` whose NDJSON lines are kept, parsed. */
function capturing(level: string) {
  const records: Rec[] = [];
  const logger = pino(
    { level },
    {
      write(line: string) {
        records.push(JSON.parse(line) as Rec);
      },
    },
  );
  return { logger, records };
}

const ACTION_FIELDS = ['actionId', 'actionset', 'line', 'command', 'remote'];

describe('log records of a run', { timeout: 60_000 }, () => {
  let events: RakeEvent[] = [];
  let records: Rec[] = [];
  /** The same run with every host polled per action (`loadStreams: false`). */
  let polledRecords: Rec[] = [];
  before(async () => {
    const c = capturing('trace');
    // recordRun has no logger option; log the same events as the engine would.
    events = await recordRun();
    await lastValueFrom(from(events).pipe(logEvents(c.logger)));
    records = c.records;
    const p = capturing('trace');
    await lastValueFrom(from(await recordRun({ loadStreams: false })).pipe(logEvents(p.logger)));
    polledRecords = p.records;
  });

  it('writes one record per event, tagged with its type', () => {
    assert.deepEqual(
      records.map((r) => r.event),
      events.map((e) => e.type),
    );
  });

  it('names the action in every per-action record', () => {
    for (const r of records.filter((x) => 'actionId' in x)) {
      for (const f of ACTION_FIELDS) assert.ok(f in r, `${r.event} has ${f}`);
    }
  });

  it('polled: carries the costs, the choice and its reason', () => {
    const records = polledRecords;
    const polled = records.filter((r) => r.event === 'cost-polled');
    assert.ok(polled.length > 0);
    for (const r of polled) {
      assert.equal(typeof r.host, 'string');
      assert.equal(typeof r.rttMs, 'number');
      assert.ok(typeof r.cost === 'number' || typeof r.error === 'string');
      assert.equal(r.level, 10, 'trace');
    }
    const chosen = records.filter((r) => r.event === 'host-chosen');
    assert.equal(chosen.length, 6);
    for (const r of chosen) {
      assert.equal(typeof r.host, 'string');
      assert.match(
        String(r.reason),
        /^(local|only-host|cheapest|tie-first-answer|first-idle|retry)$/,
      );
      assert.ok(Array.isArray(r.costs) && r.costs.length > 0, 'the costs it chose from');
      assert.equal(r.attempt, 1);
    }
  });

  it('from load streams: the choice and its reason, no costs (nothing was polled)', () => {
    assert.equal(records.filter((r) => r.event === 'cost-polled').length, 0);
    const chosen = records.filter((r) => r.event === 'host-chosen');
    assert.equal(chosen.length, 6);
    for (const r of chosen) {
      assert.equal(typeof r.host, 'string');
      assert.match(String(r.reason), /^(most-free|tie-first-listed|only-host)$/);
      assert.deepEqual(r.costs, []);
      assert.equal(r.attempt, 1);
    }
  });

  it('carries bytes and times of upload, run and download', () => {
    const up = records.filter((r) => r.event === 'upload-done');
    assert.equal(up.length, 2, 'two actions have requirements');
    for (const r of up) {
      assert.equal(r.files, 1);
      assert.equal(r.bytes, 3000);
      assert.equal(typeof r.durationMs, 'number');
    }
    const ok = records.filter((r) => r.event === 'action-succeeded');
    assert.equal(ok.length, 5);
    const phases = ok[0]?.phases as Record<string, number>;
    for (const p of ['poll', 'connect', 'upload', 'run', 'download']) {
      assert.equal(typeof phases[p], 'number', p);
    }
    const down = ok.map((r) => r.downloadBytes as number).sort((a, b) => a - b);
    assert.deepEqual(down.slice(-2), [3000, 6000]);
  });

  it('logs a failure at error with its status and stderr', () => {
    const [failed] = records.filter((r) => r.event === 'action-failed');
    assert.equal(failed?.level, 50);
    assert.equal(failed?.reason, 'exit-non-zero');
    assert.equal(failed?.exitStatus, 3);
    assert.equal(failed?.stderr, 'broken\n');
    assert.equal(failed?.line, 13);
  });

  it('never uses the names pino keeps for itself', () => {
    for (const e of events) {
      const { fields } = eventRecord(e);
      for (const k of ['time', 'msg', 'level', 'pid', 'hostname']) assert.ok(!(k in fields), k);
    }
  });
});

describe('run() with a logger', { timeout: 60_000 }, () => {
  it('logs each step once, the embedded server included; at warn only what went wrong', async () => {
    const dir = await project();
    try {
      const port = await freePort();
      const text = `PORT = ${port}\n\nset:\n\techo here\n\techo gone >&2; exit 2\n`;
      const all = capturing('debug');
      const events = await runAll(dir, text, { logger: all.logger });
      const embedded = all.records.filter((r) => /embedded server/.test(r.msg));
      assert.equal(embedded.length, 1, JSON.stringify(embedded));
      assert.equal(embedded[0]?.event, 'embedded-server-started');
      const chosen = all.records.filter((r) => r.event === 'host-chosen');
      assert.equal(chosen.length, events.filter((e) => e.type === 'host-chosen').length);

      const quiet = capturing('warn');
      await runAll(dir, text, { logger: quiet.logger });
      const kinds = new Set(
        quiet.records.filter((r) => r.component === 'client').map((r) => r.event),
      );
      assert.deepEqual([...kinds], ['action-failed']);
    } finally {
      await removeDir(dir);
    }
  });
});

describe('run() alone', { timeout: 60_000 }, () => {
  it('emits its events and logs none of them: the subscriber does', async () => {
    const dir = await project();
    try {
      const port = await freePort();
      const text = `PORT = ${port}\n\nset:\n\techo here\n\techo gone >&2; exit 2\n`;
      const all = capturing('trace');
      const events = await lastValueFrom(
        run(parse(text, `${dir}/Rakefile`), { directory: dir, logger: all.logger }).pipe(toArray()),
      );
      assert.ok(events.some((e) => e.type === 'action-failed'));
      assert.deepEqual(
        all.records.filter((r) => r.component === 'client' && 'event' in r).map((r) => r.event),
        [],
      );
      // The engine's own records are still there (the run's plan, at debug).
      assert.ok(all.records.length > 0);
    } finally {
      await removeDir(dir);
    }
  });
});
