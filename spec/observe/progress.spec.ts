// The progress renderers, fed scripted events: plain lines carry no escape codes; the live
// display, replayed through a tiny terminal model, leaves the output blocks whole and the
// status lines gone.
/* biome-ignore-all lint/suspicious/noControlCharactersInRegex: escape codes are what is tested. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { from, lastValueFrom, map, merge, type SchedulerLike, timer } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import type { ActionRef, RakeEvent, RunSummary } from '../../src/client/events.js';
import { ActionOutput } from '../../src/client/output.js';
import { ProgressDisplay, progressMode, showProgress } from '../../src/observe/progress.js';

function ref(actionset: string, index: number, command: string): ActionRef {
  return {
    actionId: `${actionset}#${index}`,
    actionset,
    index,
    position: { file: 'Rakefile', line: 4 + index, column: 2 },
    command,
    remote: true,
  };
}

const PH = { poll: 1, connect: 1, upload: 1, run: 5, download: 1 };
const A = ref('build', 0, 'echo a');
const B = ref('build', 1, 'echo b');
const C = ref('build', 2, 'false');
const SUMMARY: RunSummary = {
  actionsets: 1,
  actionsetsRun: 1,
  actions: 3,
  succeeded: 2,
  failed: 1,
  cancelled: 0,
  skipped: 0,
  retries: 0,
  fallbacks: 0,
  perHost: { 'h1:6238': 2, 'h2:6238': 1 },
  ms: 40,
  exitStatus: 1,
};

/** A run of three actions on two hosts; `b` prints three lines, `c` fails. */
function script(t0 = 1_000): RakeEvent[] {
  const chosen = (action: ActionRef, host: string, time: number): RakeEvent => ({
    type: 'host-chosen',
    time,
    action,
    host,
    reason: 'cheapest',
    costs: [{ host, cost: 0, effectiveCost: 0, rttMs: 1 }],
    attempt: 1,
  });
  return [
    { type: 'actionset-started', time: t0, actionset: 'build', position: A.position, actions: 3 },
    chosen(A, 'h1:6238', t0 + 1),
    chosen(B, 'h2:6238', t0 + 1),
    chosen(C, 'h1:6238', t0 + 2),
    {
      type: 'upload-done',
      time: t0 + 3,
      action: A,
      host: 'h1:6238',
      files: 1,
      bytes: 2048,
      ms: 1,
    },
    {
      type: 'output',
      time: t0 + 10,
      action: A,
      host: 'h1:6238',
      stdout: ActionOutput.of('a1\na2\n'),
    },
    {
      type: 'action-succeeded',
      time: t0 + 10,
      action: A,
      host: 'h1:6238',
      exitStatus: 0,
      files: ['a.o'],
      downloadBytes: 4096,
      phases: PH,
      attempts: 1,
      ms: 10,
    },
    {
      type: 'output',
      time: t0 + 20,
      action: B,
      host: 'h2:6238',
      stdout: ActionOutput.of('b1\nb2\nb3'),
    },
    {
      type: 'action-succeeded',
      time: t0 + 20,
      action: B,
      host: 'h2:6238',
      exitStatus: 0,
      files: [],
      downloadBytes: 0,
      phases: PH,
      attempts: 1,
      ms: 19,
    },
    {
      type: 'action-failed',
      time: t0 + 30,
      action: C,
      reason: 'exit-non-zero',
      host: 'h1:6238',
      position: C.position,
      message: 'exited with status 1 on h1:6238',
      stderr: 'nope\n',
      exitStatus: 1,
      phases: PH,
      attempts: 1,
      ms: 28,
    },
    {
      type: 'actionset-done',
      time: t0 + 31,
      actionset: 'build',
      succeeded: 2,
      failed: 1,
      cancelled: 0,
      ms: 31,
    },
    { type: 'done', time: t0 + 40, summary: SUMMARY },
  ];
}

/** A stream that appends what is written to one shared transcript (one terminal). */
function terminal(columns = 60) {
  let raw = '';
  const stream = () =>
    Object.assign(
      new Writable({
        write(chunk: Buffer | string, _enc, cb) {
          raw += chunk.toString();
          cb();
        },
      }),
      { columns, rows: 20, isTTY: true },
    );
  return { stdout: stream(), stderr: stream(), raw: () => raw };
}

/**
 * Replays a transcript on a model terminal that knows what the live display uses: text,
 * `\n`, `\r`, cursor up (`ESC[nA`), erase line (`ESC[2K`) and SGR (ignored).
 */
function screen(raw: string): string[] {
  const lines: string[] = [''];
  let row = 0;
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string;
    if (ch === '\x1b') {
      const m = /^\x1b\[(\d*)([A-Za-z])/.exec(raw.slice(i));
      if (m === null)
        throw new Error(`unknown escape at ${i}: ${JSON.stringify(raw.slice(i, i + 8))}`);
      const n = Number(m[1] || '1');
      if (m[2] === 'A') row = Math.max(0, row - n);
      else if (m[2] === 'K' && n === 2) lines[row] = '';
      else if (m[2] !== 'm') throw new Error(`unexpected escape ${m[0]}`);
      i += m[0].length - 1;
    } else if (ch === '\n') {
      row++;
      col = 0;
      if (lines.length <= row) lines.push('');
    } else if (ch === '\r') {
      col = 0;
    } else {
      const line = (lines[row] ?? '').padEnd(col);
      lines[row] = line.slice(0, col) + ch + line.slice(col + 1);
      col++;
    }
  }
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

describe('plain progress', () => {
  it('prints a line per actionset and per action end, no escape codes', async () => {
    const t = terminal();
    await lastValueFrom(
      from(script()).pipe(
        showProgress({ mode: 'plain', stdout: t.stdout, stderr: t.stderr, actionsets: 1 }),
      ),
    );
    const text = t.raw();
    assert.doesNotMatch(text, /\x1b/);
    assert.deepEqual(text.split('\n'), [
      'rake-ts: build (1/1): 3 actions',
      'a1',
      'a2',
      'rake-ts: ok build#0 on h1:6238 in 0.01 s: echo a',
      'b1',
      'b2',
      'b3',
      'rake-ts: ok build#1 on h2:6238 in 0.02 s: echo b',
      'rake-ts: Rakefile:6: action failed: false',
      '  exited with status 1 on h1:6238',
      '  | nope',
      'rake-ts: build (1/1): 2 succeeded, 1 failed in 0.03 s',
      'rake-ts: FAILED: 2/3 actions succeeded, 1 failed in 0.04 s on 2 hosts (h1:6238=2 h2:6238=1), 2.0 KiB up, 4.0 KiB down',
      // The recap: each failed action once more, without its stderr.
      'rake-ts: FAILED Rakefile:6 build#2 on h1:6238 (exit status 1): false',
      '',
    ]);
  });

  it('keeps no timeline when told not to, and its summary line says the same bytes', () => {
    const summaryLine = (timeline: boolean) => {
      const t = terminal();
      const display = new ProgressDisplay({
        mode: 'plain',
        stdout: t.stdout,
        stderr: t.stderr,
        quiet: true,
        timeline,
      });
      for (const e of script()) display.next(e);
      const kept = display.timeline();
      display.end();
      return { line: t.raw().match(/^rake-ts: FAILED: .*$/m)?.[0], kept };
    };
    const kept = summaryLine(true);
    const none = summaryLine(false);
    assert.match(kept.line ?? '', /, 2\.0 KiB up, 4\.0 KiB down$/);
    assert.equal(none.line, kept.line);
    assert.equal(kept.kept.actions.length, 3);
    assert.equal(none.kept.actions.length, 0);
  });

  it('with quiet, prints only output, failures and a failed run’s summary', async () => {
    const t = terminal();
    const display = new ProgressDisplay({
      mode: 'plain',
      stdout: t.stdout,
      stderr: t.stderr,
      quiet: true,
    });
    for (const e of script()) display.next(e);
    display.end();
    assert.doesNotMatch(t.raw(), /rake-ts: ok |\[1\]/);
    assert.match(t.raw(), /^a1\na2\nb1\nb2\nb3\nrake-ts: Rakefile:6: action failed/);
    assert.match(t.raw(), /rake-ts: FAILED: /);
  });
});

describe('a successful action’s stderr', () => {
  it('is printed on stderr, marked with the action, even with quiet', () => {
    const t = terminal();
    const display = new ProgressDisplay({
      mode: 'plain',
      stdout: t.stdout,
      stderr: t.stderr,
      quiet: true,
    });
    display.next({
      type: 'action-succeeded',
      time: 1,
      action: A,
      host: 'h1:6238',
      exitStatus: 0,
      files: [],
      downloadBytes: 0,
      stderr: "a.c:3: warning: unused variable 'x'\n",
      phases: PH,
      attempts: 1,
      ms: 1,
    });
    assert.equal(
      t.raw(),
      "rake-ts: Rakefile:4: stderr of echo a (on h1:6238):\n  | a.c:3: warning: unused variable 'x'\n",
    );
  });
});

/** Emits each event at its own `time`, on the scheduler of `TestScheduler.run`. */
function timed(events: readonly RakeEvent[], scheduler: SchedulerLike) {
  return merge(...events.map((e) => timer(e.time, scheduler).pipe(map(() => e))));
}

describe('live progress (virtual time: no sleeping)', () => {
  it('redraws status lines below the output and erases them at the end', () => {
    const t = terminal();
    const snapshots = new Map<number, string[]>();
    const ts = new TestScheduler(assert.deepEqual);
    ts.run(({ flush }) => {
      timed(script(0), ts)
        .pipe(
          showProgress({
            mode: 'live',
            stdout: t.stdout,
            stderr: t.stderr,
            actionsets: 1,
            actions: 3,
            scheduler: ts,
            redrawMs: 5,
          }),
        )
        .subscribe();
      for (const at of [7, 12, 22]) ts.schedule(() => snapshots.set(at, screen(t.raw())), at);
      flush();
    });
    const raw = t.raw();
    assert.match(raw, /\r(\x1b\[1A\x1b\[2K)+/, 'status lines were erased in place');

    const during = snapshots.get(7) ?? [];
    assert.match(
      during.at(-4) ?? '',
      /^\[0\/3\] build \(1\/1\): 3 running, 0 queued · \d+\.\d\d s$/,
    );
    assert.match(during.at(-3) ?? '', /^ {2}build#0 {2}h1:6238 /);
    assert.match(during.at(-1) ?? '', /^ {2}build#2 {2}h1:6238 .* false$/);
    const later = snapshots.get(22) ?? [];
    assert.deepEqual(later.slice(0, 5), ['a1', 'a2', 'b1', 'b2', 'b3']);
    assert.match(later.at(-2) ?? '', /^\[2\/3\] build \(1\/1\): 1 running, 0 queued · /);

    const final = screen(raw);
    assert.deepEqual(final.slice(0, 5), ['a1', 'a2', 'b1', 'b2', 'b3']);
    assert.equal(final[5], 'rake-ts: Rakefile:6: action failed: false');
    assert.equal(final.at(-3), 'rake-ts: build (1/1): 2 succeeded, 1 failed in 0.03 s');
    assert.match(final.at(-2) ?? '', /^rake-ts: FAILED: 2\/3 actions succeeded/);
    assert.equal(
      final.at(-1),
      'rake-ts: FAILED Rakefile:6 build#2 on h1:6238 (exit status 1): false',
    );
    assert.ok(!final.some((l) => /running/.test(l)), 'no status line is left behind');
  });

  it("counts the run's actions and failures, and estimates the time left once 3 have ended", () => {
    const t = terminal(100);
    const refs = [0, 1, 2, 3, 4, 5].map((i) => ref('build', i, `step ${i}`));
    const end = (i: number, time: number, failed = false): RakeEvent =>
      failed
        ? {
            type: 'action-failed',
            time,
            action: refs[i] as ActionRef,
            reason: 'exit-non-zero',
            host: 'h:1',
            position: (refs[i] as ActionRef).position,
            message: 'exited with status 1 on h:1',
            stderr: '',
            exitStatus: 1,
            phases: PH,
            attempts: 1,
            ms: time,
          }
        : {
            type: 'action-succeeded',
            time,
            action: refs[i] as ActionRef,
            host: 'h:1',
            exitStatus: 0,
            files: [],
            downloadBytes: 0,
            phases: PH,
            attempts: 1,
            ms: time,
          };
    const events: RakeEvent[] = [
      { type: 'actionset-started', time: 0, actionset: 'build', position: A.position, actions: 6 },
      ...refs.map(
        (action): RakeEvent => ({
          type: 'host-chosen',
          time: 0,
          action,
          host: 'h:1',
          reason: 'only-host',
          costs: [],
          attempt: 1,
        }),
      ),
      end(0, 1000),
      end(1, 2000, true),
      end(2, 3000),
    ];
    const heads = new Map<number, string>();
    const ts = new TestScheduler(assert.deepEqual);
    ts.run(({ flush }) => {
      const display = new ProgressDisplay({
        mode: 'live',
        stdout: t.stdout,
        stderr: t.stderr,
        actionsets: 2,
        actions: 9,
        scheduler: ts,
        redrawMs: 100,
      });
      timed(events, ts).subscribe((e) => display.next(e));
      for (const at of [1550, 2550, 3050]) {
        ts.schedule(() => {
          const lines = screen(t.raw());
          heads.set(at, lines.find((l) => l.startsWith('[')) ?? '');
        }, at);
      }
      ts.schedule(() => display.dispose(), 4000);
      flush();
    });
    assert.equal(heads.get(1550), '[1/9] build (1/2): 5 running, 0 queued · 1.50 s');
    assert.equal(heads.get(2550), '[2/9] build (1/2): 4 running, 0 queued, 1 failed · 2.50 s');
    // 3 ended in 3.0 s; after a failure only this actionset's 3 remain: ~3 s.
    assert.equal(
      heads.get(3050),
      '[3/9] build (1/2): 3 running, 0 queued, 1 failed · 3.00 s · ~3 s left',
    );
  });

  it('draws no status line while stdout still holds output (a slow reader), so none lands above it', () => {
    let raw = '';
    const held: (() => void)[] = [];
    const stderr = Object.assign(
      new Writable({
        write(chunk: Buffer | string, _enc, cb) {
          raw += chunk.toString();
          cb();
        },
      }),
      { columns: 60, rows: 20 },
    );
    // Object mode, as the CLI's StdoutWriter: an output reaches the screen only when released.
    const stdout = new Writable({
      objectMode: true,
      write(item: ActionOutput | string, _enc, cb) {
        held.push(() => {
          raw += typeof item === 'string' ? item : item.buffer().toString();
          cb();
        });
      },
    });
    const snapshots = new Map<number, string[]>();
    const ts = new TestScheduler(assert.deepEqual);
    ts.run(({ flush }) => {
      const display = new ProgressDisplay({
        mode: 'live',
        stdout,
        stderr,
        actionsets: 1,
        actions: 3,
        scheduler: ts,
        redrawMs: 5,
      });
      const events = script(0).filter((e) => e.time <= 10);
      timed(events, ts).subscribe((e) => display.next(e));
      ts.schedule(() => held.shift()?.(), 17);
      for (const at of [8, 16, 18, 22]) ts.schedule(() => snapshots.set(at, screen(raw)), at);
      ts.schedule(() => display.dispose(), 30);
      flush();
    });
    assert.match(snapshots.get(8)?.[0] ?? '', /^\[0\/3\] build/, 'the status before the output');
    assert.deepEqual(snapshots.get(16), [], 'erased, and not drawn while the output waits');
    assert.deepEqual(snapshots.get(18), ['a1', 'a2'], 'the output, nothing above it');
    const after = snapshots.get(22) ?? [];
    assert.deepEqual(after.slice(0, 2), ['a1', 'a2']);
    assert.match(after[2] ?? '', /^\[1\/3\] build \(1\/1\): 2 running/, 'the status below it');
  });

  it('cuts status lines to the terminal width, so they never wrap', () => {
    const t = terminal();
    const long = ref('s', 0, `echo ${'x'.repeat(200)}`);
    let lines: string[] = [];
    const ts = new TestScheduler(assert.deepEqual);
    ts.run(({ flush }) => {
      const display = new ProgressDisplay({
        mode: 'live',
        stdout: t.stdout,
        stderr: t.stderr,
        scheduler: ts,
        redrawMs: 5,
      });
      display.next({
        type: 'actionset-started',
        time: 0,
        actionset: 's',
        position: long.position,
        actions: 1,
      });
      display.next({
        type: 'host-chosen',
        time: 0,
        action: long,
        host: 'h:1',
        reason: 'only-host',
        costs: [],
        attempt: 1,
      });
      ts.schedule(() => {
        lines = screen(t.raw());
        display.dispose();
      }, 20);
      flush();
    });
    assert.equal(lines.length, 2);
    for (const l of lines) assert.ok([...l].length < 60, l);
    assert.equal(screen(t.raw()).length, 0, 'dispose erases the status');
  });

  it("shows the farm's own timings (--executor): a status line while running, each ok line when plain", async () => {
    const farmHost = 'grpc://127.0.0.1:8980';
    const refs = [0, 1, 2, 3].map((i) => ref('build', i, `step ${i}`));
    const farm = (worker: string, queuedMs: number, executionMs: number, cached = false) => ({
      worker,
      queuedMs,
      inputFetchMs: 7,
      executionMs,
      outputUploadMs: 3,
      cached,
    });
    const ok = (i: number, time: number, f: ReturnType<typeof farm>): RakeEvent => ({
      type: 'action-succeeded',
      time,
      action: refs[i] as ActionRef,
      host: farmHost,
      exitStatus: 0,
      files: [],
      downloadBytes: 0,
      phases: PH,
      attempts: 1,
      ms: time,
      farm: f,
    });
    const events: RakeEvent[] = [
      { type: 'actionset-started', time: 0, actionset: 'build', position: A.position, actions: 4 },
      ...refs.map(
        (action): RakeEvent => ({
          type: 'host-chosen',
          time: 0,
          action,
          host: farmHost,
          reason: 'only-host',
          costs: [],
          attempt: 1,
        }),
      ),
      ok(0, 1000, farm('w1', 200, 600)),
      ok(1, 2000, farm('w2', 400, 1000)),
      ok(2, 3000, farm('', 0, 0, true)),
    ];
    const t = terminal(120);
    const seen = new Map<number, string[]>();
    const ts = new TestScheduler(assert.deepEqual);
    ts.run(({ flush }) => {
      const display = new ProgressDisplay({
        mode: 'live',
        stdout: t.stdout,
        stderr: t.stderr,
        scheduler: ts,
        redrawMs: 100,
      });
      timed(events, ts).subscribe((e) => display.next(e));
      for (const at of [550, 1550, 2550, 3550])
        ts.schedule(() => seen.set(at, screen(t.raw())), at);
      ts.schedule(() => display.dispose(), 4000);
      flush();
    });
    // Before the farm has answered, no farm line; then the means of what it ran.
    assert.equal(seen.get(550)?.[1], `  build#0  ${farmHost}    0.50 s  step 0`);
    assert.equal(
      seen.get(1550)?.[1],
      '  farm: 1 ran, mean queued 0.20 s, executing 0.60 s (last on w1)',
    );
    assert.equal(
      seen.get(2550)?.[1],
      '  farm: 2 ran, mean queued 0.30 s, executing 0.80 s (last on w2)',
    );
    assert.equal(
      seen.get(3550)?.[1],
      '  farm: 2 ran, mean queued 0.30 s, executing 0.80 s (last on w2) · 1 from its ActionCache',
    );
    assert.match(seen.get(3550)?.[2] ?? '', /^ {2}build#3 {2}/, 'the running actions follow');

    const p = terminal();
    await lastValueFrom(
      from(events).pipe(showProgress({ mode: 'plain', stdout: p.stdout, stderr: p.stderr })),
    );
    assert.deepEqual(p.raw().split('\n').slice(1, 4), [
      `rake-ts: ok build#0 on ${farmHost} in 1.00 s (farm w1: queued 0.20 s, executing 0.60 s): step 0`,
      `rake-ts: ok build#1 on ${farmHost} in 2.00 s (farm w2: queued 0.40 s, executing 1.00 s): step 1`,
      `rake-ts: ok build#2 on ${farmHost} in 3.00 s (farm: from its ActionCache): step 2`,
    ]);
  });
});

describe('JSON progress', () => {
  it("writes every line as a pino record with the event's fields, and nothing else on stderr", async () => {
    const t = terminal();
    const out: string[] = [];
    const records = pino({ level: 'info' }, { write: (l: string) => out.push(l) });
    await lastValueFrom(
      from(script()).pipe(
        showProgress({
          mode: 'json',
          stdout: t.stdout,
          stderr: t.stderr,
          actionsets: 1,
          records,
        }),
      ),
    );
    // stdout carries the actions' output; no summary line, no escape codes.
    assert.equal(t.raw(), 'a1\na2\nb1\nb2\nb3\n');
    const recs = out.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      recs.map((r) => [r.level, r.event, r.msg]),
      [
        [30, 'actionset-started', 'build (1/1): 3 actions'],
        [30, 'action-succeeded', 'ok build#0 on h1:6238 in 0.01 s: echo a'],
        [30, 'action-succeeded', 'ok build#1 on h2:6238 in 0.02 s: echo b'],
        [50, 'action-failed', 'Rakefile:6: action failed: false: exited with status 1 on h1:6238'],
        [30, 'actionset-done', 'build (1/1): 2 succeeded, 1 failed in 0.03 s'],
        [
          50,
          'done',
          'FAILED: 2/3 actions succeeded, 1 failed in 0.04 s on 2 hosts (h1:6238=2 h2:6238=1), 2.0 KiB up, 4.0 KiB down',
        ],
      ],
    );
    assert.equal(recs[3]?.stderr, 'nope\n');
    assert.equal(recs[5]?.durationMs, 40);
    assert.deepEqual(recs[5]?.failures, [
      {
        actionId: 'build#2',
        line: 6,
        command: 'false',
        reason: 'exit-non-zero',
        host: 'h1:6238',
        exitStatus: 1,
      },
    ]);
  });
});

describe('progressMode', () => {
  it('is live only on a terminal without NO_COLOR, CI or TERM=dumb', () => {
    const tty = { isTTY: true };
    assert.equal(progressMode('auto', tty, {}), 'live');
    assert.equal(progressMode('auto', {}, {}), 'plain');
    assert.equal(progressMode('auto', tty, { NO_COLOR: '1' }), 'plain');
    assert.equal(progressMode('auto', tty, { CI: 'true' }), 'plain');
    assert.equal(progressMode('auto', tty, { TERM: 'dumb' }), 'plain');
    assert.equal(progressMode('never', tty, {}), 'plain');
    assert.equal(progressMode('always', {}, { CI: '1' }), 'live');
  });
});
