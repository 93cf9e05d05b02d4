// The progress renderers, fed scripted events: plain lines carry no escape codes; the live
// display, replayed through a tiny terminal model, leaves the output blocks whole and the
// status lines gone.
/* biome-ignore-all lint/suspicious/noControlCharactersInRegex: escape codes are what is tested. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { from, lastValueFrom } from 'rxjs';
import type { ActionRef, RakeEvent, RunSummary } from '../../src/client/events.js';
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
    { type: 'output', time: t0 + 10, action: A, host: 'h1:6238', stdout: 'a1\na2\n' },
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
    { type: 'output', time: t0 + 20, action: B, host: 'h2:6238', stdout: 'b1\nb2\nb3' },
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
function terminal() {
  let raw = '';
  const stream = () =>
    Object.assign(
      new Writable({
        write(chunk: Buffer | string, _enc, cb) {
          raw += chunk.toString();
          cb();
        },
      }),
      { columns: 60, rows: 20 },
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
      'rake-ts: [1/1] build: 3 actions',
      'a1',
      'a2',
      'rake-ts: ok build#0 on h1:6238 in 0.01 s: echo a',
      'b1',
      'b2',
      'b3',
      'rake-ts: ok build#1 on h2:6238 in 0.02 s: echo b',
      'rake-ts: Rakefile:6: action failed: false',
      '  exit-non-zero on h1:6238, exit status 1: exited with status 1 on h1:6238',
      '  | nope',
      'rake-ts: [1/1] build: 2 succeeded, 1 failed in 0.03 s',
      'rake-ts: FAILED: 2/3 actions succeeded, 1 failed in 0.04 s on 2 hosts (h1:6238=2 h2:6238=1), 2.0 KiB up, 4.0 KiB down',
      '',
    ]);
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

describe('live progress', () => {
  it('redraws status lines below the output and erases them at the end', async () => {
    const t = terminal();
    let now = 1_000;
    const display = new ProgressDisplay({
      mode: 'live',
      stdout: t.stdout,
      stderr: t.stderr,
      actionsets: 1,
      now: () => now,
      redrawMs: 5,
    });
    const events = script();
    const snapshots: string[][] = [];
    for (const e of events) {
      now = e.time;
      display.next(e);
      if (e.type === 'host-chosen' || e.type === 'output') {
        // Let the redraw timer fire, then look at the screen.
        await new Promise((r) => setTimeout(r, 20));
        snapshots.push(screen(t.raw()));
      }
    }
    display.end();
    const raw = t.raw();
    assert.match(raw, /\r(\x1b\[1A\x1b\[2K)+/, 'status lines were erased in place');

    const during = snapshots[2] ?? [];
    assert.match(during.at(-4) ?? '', /^\[1\/1\] build: 0 done, 3 running, 0 queued/);
    assert.match(during.at(-3) ?? '', /^ {2}build#0 {2}h1:6238 /);
    assert.match(during.at(-1) ?? '', /^ {2}build#2 {2}h1:6238 .* false$/);
    const later = snapshots[4] ?? [];
    assert.deepEqual(later.slice(0, 5), ['a1', 'a2', 'b1', 'b2', 'b3']);
    assert.match(later.at(-3) ?? '', /^\[1\/1\] build: 1 done, 2 running, 0 queued/);

    const final = screen(raw);
    assert.deepEqual(final.slice(0, 5), ['a1', 'a2', 'b1', 'b2', 'b3']);
    assert.equal(final[5], 'rake-ts: Rakefile:6: action failed: false');
    assert.equal(final.at(-2), 'rake-ts: [1/1] build: 2 succeeded, 1 failed in 0.03 s');
    assert.match(final.at(-1) ?? '', /^rake-ts: FAILED: 2\/3 actions succeeded/);
    assert.ok(!final.some((l) => /running/.test(l)), 'no status line is left behind');
  });

  it('cuts status lines to the terminal width, so they never wrap', async () => {
    const t = terminal();
    const display = new ProgressDisplay({
      mode: 'live',
      stdout: t.stdout,
      stderr: t.stderr,
      redrawMs: 5,
    });
    const long = ref('s', 0, `echo ${'x'.repeat(200)}`);
    display.next({
      type: 'actionset-started',
      time: Date.now(),
      actionset: 's',
      position: long.position,
      actions: 1,
    });
    display.next({
      type: 'host-chosen',
      time: Date.now(),
      action: long,
      host: 'h:1',
      reason: 'only-host',
      costs: [],
      attempt: 1,
    });
    await new Promise((r) => setTimeout(r, 20));
    const lines = screen(t.raw());
    display.dispose();
    assert.equal(lines.length, 2);
    for (const l of lines) assert.ok([...l].length < 60, l);
    assert.equal(screen(t.raw()).length, 0, 'dispose erases the status');
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
