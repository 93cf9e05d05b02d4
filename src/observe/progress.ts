/**
 * What a person watching a run sees. Two renderers over the same events:
 * - `live` (a terminal): a few status lines at the bottom of the screen — the actionset
 *   (n of m), actions done / running / queued, each running action with its host and
 *   elapsed time — redrawn at most ten times a second. Anything printed while they are up
 *   (an action's output, a failure, a log line) is printed above them: the status lines are
 *   erased, the text written, the lines drawn again, so no output block is ever torn.
 * - `plain` (a pipe, a CI log, `NO_COLOR`): one line per actionset start and end and per
 *   action end, no escape codes.
 * - `json` (`--log-format json`): the same lines as pino records, with the event's fields, so
 *   every stderr line is NDJSON.
 * All print action output to stdout and failures to stderr, and end with the summary line
 * (on stdout; a record in JSON mode) and a recap of the failed actions.
 */
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import {
  finalize,
  type MonoTypeOperatorFunction,
  type SchedulerLike,
  type Subscription,
  tap,
} from 'rxjs';
import { hostKey } from '../client/endpoint.js';
import type {
  ActionRef,
  FarmTimings,
  RakeEvent,
  RakeEventOf,
  RakeEventType,
  RunSummary,
} from '../client/events.js';
import type { ActionOutput } from '../client/output.js';
import { unreachable } from '../util/unreachable.js';
import { formatHostNotes } from './host-notes.js';
import { eventRecord, type RecordLevel, summaryFields } from './log-events.js';
import { formatSeconds, formatSummaryLine, plural } from './summary.js';
import { type Timeline, TimelineBuilder } from './timeline.js';

/**
 * `live`: status lines redrawn in place (needs a terminal); `plain`: one line per step;
 * `json`: one pino record per step (through `records`), nothing else on stderr.
 */
export type ProgressMode = 'live' | 'plain' | 'json';

/** Where and how {@link ProgressDisplay} writes. */
export interface ProgressOptions {
  readonly mode: ProgressMode;
  /** Action output and the summary line. */
  readonly stdout: Writable;
  /** Status lines, plain progress lines, failures. */
  readonly stderr: Writable;
  /** Only action output, failures, and the summary of a failed run; no status lines. */
  readonly quiet?: boolean;
  /** How many actionsets the run has: the `m` of "actionset n of m". */
  readonly actionsets?: number;
  /** Terminal width (default: `stderr.columns`, else 80). */
  readonly columns?: () => number;
  /** Terminal height (default: `stderr.rows`, else 24). */
  readonly rows?: () => number;
  /** Clock for elapsed times (default: `scheduler.now()`, else `Date.now`, the clock events carry). */
  readonly now?: () => number;
  /**
   * Clock and timer of the redraws (default: `Date.now` and an unref'd `setInterval`), so a
   * spec drives the live display with a TestScheduler instead of sleeping.
   */
  readonly scheduler?: SchedulerLike;
  /** Minimum time between two redraws of the status lines (default 100 ms). */
  readonly redrawMs?: number;
  /** How many actions the whole run has: the N of `[done/N]` (default: those seen so far). */
  readonly actions?: number;
  /** `json` mode: where the records go (the CLI's display logger). */
  readonly records?: Logger;
  /**
   * Keep the run's timeline for {@link ProgressDisplay.timeline} (default true). The CLI
   * keeps it only for `--trace` or `--report`: the summary line needs only the bytes moved,
   * and each action's spans cost its run CPU otherwise spent for nothing.
   */
  readonly timeline?: boolean;
}

/** Actions finished before the live display estimates the time left. */
export const ETA_AFTER = 3;

interface Running {
  readonly ref: ActionRef;
  readonly since: number;
  host: string | undefined;
  /** The host holds it until a job slot frees (extension `queue`): not running yet. */
  queued?: boolean;
}

interface Current {
  readonly name: string;
  readonly ordinal: number;
  readonly actions: number;
  readonly since: number;
  done: number;
}

const ESC = '\x1b[';

/**
 * Renders a run's events for a person. Feed it every event with {@link next}, then call
 * {@link end} (or {@link dispose} when the run was interrupted).
 */
export class ProgressDisplay {
  readonly #o: ProgressOptions;
  readonly #now: () => number;
  readonly #timeline = new TimelineBuilder();
  readonly #keepTimeline: boolean;
  /** The bytes the summary line says moved: every upload, every successful download. */
  #uploadBytes = 0;
  #downloadBytes = 0;
  readonly #running = new Map<string, Running>();
  #current: Current | undefined;
  #ordinal = 0;
  #summary: RunSummary | undefined;
  /** Status lines now on screen (live mode). */
  #drawn = 0;
  #dirty = false;
  #timer: { unsubscribe(): void } | undefined;
  #ended = false;
  /** The run so far: first event, actions finished, and the failures (for the recap). */
  #runStart: number | undefined;
  #finished = 0;
  #seen = 0;
  readonly #failures: RakeEventOf<'action-failed'>[] = [];
  /** With `--executor`: the farm's own timings of the successes so far (the `farm:` status line). */
  readonly #farm: FarmTally = { ran: 0, cached: 0, queuedMs: 0, executionMs: 0, worker: '' };

  constructor(options: ProgressOptions) {
    this.#o = options;
    const scheduler = options.scheduler;
    this.#now = options.now ?? (scheduler ? () => scheduler.now() : Date.now);
    this.#keepTimeline = options.timeline ?? true;
  }

  /**
   * The timeline of the events seen so far (for a trace or a report of the same run); empty
   * when the display was told to keep none (option `timeline`).
   */
  timeline(): Timeline {
    return this.#timeline.timeline();
  }

  next(e: RakeEvent): void {
    if (this.#ended) return;
    this.#runStart ??= e.time;
    if (this.#keepTimeline) this.#timeline.add(e);
    this.#track(e);
    this.#print(e);
    if (this.#o.mode === 'live' && this.#o.quiet !== true) this.#schedule();
  }

  /**
   * Writes `text` to `stream` without tearing the status lines: they are erased first and
   * drawn again after. Logs use this while the live display is up.
   */
  writeAbove(stream: Writable, text: string): void {
    if (text === '') return;
    if (this.#o.mode !== 'live' || this.#drawn === 0) {
      stream.write(text);
      return;
    }
    this.#o.stderr.write(this.#erase());
    this.#drawn = 0;
    stream.write(text.endsWith('\n') ? text : `${text}\n`);
    this.#draw();
  }

  /**
   * An action's stdout, as one block. An object-mode stdout (the CLI's `StdoutWriter`) takes
   * the output itself and streams it with backpressure; any other gets its bytes. Off a
   * terminal the bytes are exactly the action's; on one, a block that does not end its
   * line gets a newline, so the next output or the status lines start on a fresh line.
   */
  #writeOutput(output: ActionOutput): void {
    const out = this.#o.stdout;
    const live = this.#o.mode === 'live' && this.#drawn > 0;
    if (live) {
      this.#o.stderr.write(this.#erase());
      this.#drawn = 0;
    }
    if (out.writableObjectMode) {
      out.write(output);
    } else {
      const bytes = output.buffer();
      out.write(bytes);
      const terminal = (out as { isTTY?: boolean }).isTTY === true || this.#o.mode === 'live';
      if (terminal && bytes.length > 0 && bytes[bytes.length - 1] !== 0x0a) out.write('\n');
    }
    if (live) this.#draw();
  }

  /**
   * Erases the status lines and prints the summary line, then one line per failed action
   * (the run is over). In JSON mode both are one record: `done`, with `failures`.
   */
  end(): void {
    if (this.#ended) return;
    this.dispose();
    const s = this.#summary;
    if (s === undefined) return;
    const totals = { uploadBytes: this.#uploadBytes, downloadBytes: this.#downloadBytes };
    const line = formatSummaryLine(s, totals);
    if (this.#o.mode === 'json') {
      this.#o.records?.[s.exitStatus === 0 ? 'info' : 'error'](
        {
          event: 'done',
          ...summaryFields(s),
          uploadBytes: totals.uploadBytes,
          downloadBytes: totals.downloadBytes,
          failures: this.#failures.map(failureFields),
        },
        line.replace(/^rake-ts: /, '').trimEnd(),
      );
      return;
    }
    // The recap is part of the summary, on the same stream: stdout may queue (the CLI's
    // writer waits for a slow reader), and one stream keeps the order. Off a terminal,
    // stdout carries only what the actions printed (`rake-ts > out.bin`): stderr takes it.
    if (!this.#o.quiet || s.exitStatus !== 0) {
      const out = isTerminal(this.#o.stdout) ? this.#o.stdout : this.#o.stderr;
      out.write(line);
      out.write(formatHostNotes(s));
      if (this.#failures.length > 0) out.write(formatRecap(this.#failures));
    }
  }

  /**
   * The run was interrupted (SIGINT, SIGTERM): erases the status lines, prints nothing more,
   * and closes the timeline now, the actions still running marked as cancelled.
   */
  interrupt(signal: string, at: number = this.#now()): void {
    this.dispose();
    this.#timeline.interrupt(signal, at);
  }

  /** Stops redrawing and erases the status lines; prints nothing more. */
  dispose(): void {
    this.#ended = true;
    this.#timer?.unsubscribe();
    this.#timer = undefined;
    if (this.#drawn > 0) this.#o.stderr.write(this.#erase());
    this.#drawn = 0;
  }

  #track(e: RakeEvent): void {
    switch (e.type) {
      case 'actionset-started':
        this.#ordinal++;
        this.#current = {
          name: e.actionset,
          ordinal: this.#ordinal,
          actions: e.actions,
          since: e.time,
          done: 0,
        };
        this.#running.clear();
        this.#seen += e.actions;
        return;
      case 'cost-polled':
      case 'host-chosen':
      case 'upload-done':
      case 'output':
      case 'action-retried':
      case 'fallback-local':
      case 'action-queued':
      case 'action-started': {
        const id = e.action.actionId;
        let r = this.#running.get(id);
        if (r === undefined) {
          r = { ref: e.action, since: e.time, host: undefined };
          this.#running.set(id, r);
        }
        if (e.type === 'host-chosen') r.host = e.host;
        else if (e.type === 'upload-done') this.#uploadBytes += e.bytes;
        r.queued = e.type === 'action-queued';
        return;
      }
      case 'action-succeeded':
      case 'action-failed':
      case 'action-cancelled':
        this.#running.delete(e.action.actionId);
        if (this.#current !== undefined) this.#current.done++;
        this.#finished++;
        if (e.type === 'action-failed') this.#failures.push(e);
        else if (e.type === 'action-succeeded') this.#downloadBytes += e.downloadBytes;
        if (e.type === 'action-succeeded' && e.farm !== undefined) tally(this.#farm, e.farm);
        return;
      case 'done':
        this.#summary = e.summary;
        return;
      case 'actionset-done':
      case 'embedded-server-started':
        return;
      default:
        unreachable(e, 'event');
    }
  }

  /**
   * One step as a person reads it: a `rake-ts: ` line on stderr (above the status lines),
   * or in JSON mode a record with the event's fields and the line as its `msg`.
   */
  #say(e: RakeEvent, level: RecordLevel, text: string): void {
    if (this.#o.mode === 'json') {
      this.#o.records?.[level](eventRecord(e).fields, text);
      return;
    }
    this.writeAbove(this.#o.stderr, `rake-ts: ${text}\n`);
  }

  #print(e: RakeEvent): void {
    const json = this.#o.mode === 'json';
    // JSON records are filtered by the records logger's level (-q: warnings and errors).
    const quiet = this.#o.quiet === true && !json;
    const live = this.#o.mode === 'live';
    switch (e.type) {
      case 'output':
        this.#writeOutput(e.stdout);
        return;
      case 'action-failed':
        if (json) this.#say(e, 'error', failureHeadline(e));
        else this.writeAbove(this.#o.stderr, formatFailure(e));
        return;
      case 'action-retried':
        if (!quiet) {
          this.#say(
            e,
            'warn',
            `${e.action.actionId}: ${e.fromHost} did not run it (${e.reason}); trying another host`,
          );
        }
        return;
      case 'fallback-local':
        if (!quiet)
          this.#say(e, 'warn', `${e.action.actionId}: ${e.reason}; running it on ${e.host}`);
        return;
      case 'embedded-server-started':
        if (!quiet) {
          const at = hostKey({ host: e.host, port: e.port });
          this.#say(e, 'info', `started an embedded server at ${at} (${e.reason})`);
        }
        return;
      case 'actionset-started':
        if (!quiet && !live)
          this.#say(e, 'info', `${this.#setLabel()}: ${plural(e.actions, 'action')}`);
        return;
      case 'actionset-done':
        if (!quiet) this.#say(e, 'info', `${this.#setLabel()}: ${setOutcome(e)}`);
        return;
      case 'action-succeeded': {
        const farm = e.farm === undefined ? '' : ` (${formatFarm(e.farm)})`;
        const ok =
          e.cached !== undefined
            ? `ok ${e.action.actionId} from the cache in ${formatSeconds(e.ms)}: ${oneLine(e.action.command)}`
            : `ok ${e.action.actionId} on ${e.host} in ${formatSeconds(e.ms)}${farm}: ${oneLine(e.action.command)}`;
        const warned = e.stderr !== undefined && e.stderr !== '';
        if (json) {
          this.#say(e, warned ? 'warn' : 'info', warned ? `${ok} (it wrote to stderr)` : ok);
          return;
        }
        // Its stderr (compiler warnings, with the `stderr` extension) is the action's own
        // output: printed even with -q, after its stdout.
        if (warned) this.writeAbove(this.#o.stderr, formatWarnings(e));
        if (!quiet && !live) this.#say(e, 'info', ok);
        return;
      }
      case 'action-cancelled':
        if (!quiet) {
          this.#say(
            e,
            'info',
            `cancelled ${e.action.actionId}${e.host === undefined ? '' : ` on ${e.host}`}: ${oneLine(e.action.command)}`,
          );
        }
        return;
      case 'cost-polled':
      case 'host-chosen':
      case 'upload-done':
      case 'action-queued':
      case 'action-started':
      case 'done':
        return;
      default:
        unreachable(e, 'event');
    }
  }

  /** `build (1/2)`: the actionset, n of m (`[a/b]` is kept for the actions finished). */
  #setLabel(): string {
    const c = this.#current;
    if (c === undefined) return '';
    const m = this.#o.actionsets;
    return `${c.name} (${c.ordinal}${m === undefined ? '' : `/${m}`})`;
  }

  /** Marks the status dirty; the interval timer redraws at most every `redrawMs`. */
  #schedule(): void {
    this.#dirty = true;
    if (this.#timer !== undefined) return;
    const tick = () => {
      if (this.#dirty || this.#running.size > 0) this.#draw();
    };
    this.#timer = every(this.#o.redrawMs ?? 100, tick, this.#o.scheduler);
  }

  #draw(): void {
    if (this.#ended) return;
    // stdout still holds output (the CLI's writer waits for a slow reader): drawing now
    // would put the status lines above output not yet shown, and the next erase would take
    // that output's lines instead. The timer draws once it is out.
    if (this.#o.stdout.writableLength > 0) {
      this.#dirty = true;
      return;
    }
    this.#dirty = false;
    const lines = this.#statusLines();
    this.#o.stderr.write(`${this.#erase()}${lines.map((l) => `${l}\n`).join('')}`);
    this.#drawn = lines.length;
  }

  /**
   * Up and erase, one status line at a time. Not "erase below" (`ESC[J`): from the top row
   * that clears the whole screen, which tmux copies into its scrollback (`scroll-on-clear`).
   */
  #erase(): string {
    return `\r${`${ESC}1A${ESC}2K`.repeat(this.#drawn)}`;
  }

  /**
   * `[3/12] build (1/2): 2 running, 1 queued, 1 failed · 0.52 s · ~2 s left`: the actions
   * finished of the whole run, this actionset (n of m), the failures so far, the run's time,
   * and once {@link ETA_AFTER} actions have finished an estimate of the time left (the
   * run's pace so far over what remains: after a failure, only this actionset remains).
   */
  #headline(now: number, running: number, queued: number): string {
    const c = this.#current as Current;
    const total = this.#o.actions ?? this.#seen;
    const failed = this.#failures.length;
    const set = this.#setLabel();
    const elapsed = now - (this.#runStart ?? now);
    const left = failed > 0 ? c.actions - c.done : total - this.#finished;
    const eta =
      this.#finished >= ETA_AFTER && left > 0
        ? ` · ~${formatEta((elapsed * left) / this.#finished)} left`
        : '';
    const counts = [`${running} running`, `${queued} queued`];
    if (failed > 0) counts.push(`${failed} failed`);
    return `[${this.#finished}/${total}] ${set}: ${counts.join(', ')} · ${formatSeconds(elapsed)}${eta}`;
  }

  #statusLines(): string[] {
    const c = this.#current;
    if (c === undefined) return [];
    const width = Math.max(20, (this.#o.columns?.() ?? columnsOf(this.#o.stderr)) - 1);
    const height = this.#o.rows?.() ?? rowsOf(this.#o.stderr);
    const now = this.#now();
    // Only what runs counts as running: a job a host holds for a free slot is queued (a
    // base-protocol host cannot say, so its jobs count as running).
    const running = [...this.#running.values()].filter((r) => r.queued !== true);
    const queued = Math.max(c.actions - c.done - running.length, 0);
    const head = this.#headline(now, running.length, queued);
    const lines = [`${ESC}1m${fit(head, width)}${ESC}0m`];
    const farm = farmLine(this.#farm);
    if (farm !== undefined) lines.push(fit(farm, width));
    const room = Math.max(1, Math.min(10, height - 4 - (farm === undefined ? 0 : 1)));
    const shown = running.length > room ? running.slice(0, room - 1) : running;
    const idWidth = Math.max(...shown.map((r) => r.ref.actionId.length), 0);
    const hostWidth = Math.max(...shown.map((r) => (r.host ?? 'polling').length), 0);
    for (const r of shown) {
      const row = `  ${r.ref.actionId.padEnd(idWidth)}  ${(r.host ?? 'polling').padEnd(hostWidth)}  ${formatSeconds(now - r.since).padStart(8)}  ${oneLine(r.ref.command)}`;
      lines.push(fit(row, width));
    }
    if (shown.length < running.length) {
      lines.push(fit(`  … and ${running.length - shown.length} more running`, width));
    }
    return lines;
  }
}

/**
 * Renders the events that pass through, unchanged: the display ends (summary line) when
 * the run completes and is erased when it is unsubscribed.
 *
 * @example
 * run(rakefile).pipe(showProgress({ mode: 'plain', stdout: process.stdout, stderr: process.stderr }))
 */
export function showProgress(options: ProgressOptions): MonoTypeOperatorFunction<RakeEvent> {
  return (source) => {
    const display = new ProgressDisplay(options);
    return source.pipe(
      tap({ next: (e) => display.next(e), complete: () => display.end() }),
      finalize(() => display.dispose()),
    );
  };
}

/** The farm's timings of the actions finished so far (`--executor`), for the live display. */
interface FarmTally {
  /** Actions the farm ran (not answered from its ActionCache). */
  ran: number;
  /** Actions the farm answered from its ActionCache. */
  cached: number;
  queuedMs: number;
  executionMs: number;
  /** The worker of the latest action the farm ran. */
  worker: string;
}

function tally(t: FarmTally, f: FarmTimings): void {
  if (f.cached) {
    t.cached++;
    return;
  }
  t.ran++;
  t.queuedMs += f.queuedMs;
  t.executionMs += f.executionMs;
  if (f.worker !== '') t.worker = f.worker;
}

/**
 * The live display's second line with `--executor`, from the farm's ExecutedActionMetadata:
 * how long the farm held the actions in its queue and ran them, a mean over those it ran,
 * so a person sees whether time goes to the farm's queue or to the commands:
 *
 *   farm: 12 ran, mean queued 0.40 s, executing 2.10 s (last on worker-3) · 2 from its ActionCache
 */
function farmLine(t: FarmTally): string | undefined {
  if (t.ran === 0 && t.cached === 0) return undefined;
  const parts: string[] = [];
  if (t.ran > 0) {
    const worker = t.worker === '' ? '' : ` (last on ${t.worker})`;
    parts.push(
      `${t.ran} ran, mean queued ${formatSeconds(t.queuedMs / t.ran)}, executing ${formatSeconds(t.executionMs / t.ran)}${worker}`,
    );
  }
  if (t.cached > 0) parts.push(`${t.cached} from its ActionCache`);
  return `  farm: ${parts.join(' · ')}`;
}

/** One action's farm timings, for its `ok` line: `farm w1: queued 0.10 s, executing 1.20 s`. */
function formatFarm(f: FarmTimings): string {
  const who = f.worker === '' ? 'farm' : `farm ${f.worker}`;
  return f.cached
    ? `${who}: from its ActionCache`
    : `${who}: queued ${formatSeconds(f.queuedMs)}, executing ${formatSeconds(f.executionMs)}`;
}

/**
 * A failed action as the user reads it: where, what, why (once), and the command's stderr.
 *
 * rake-ts: Rakefile:5: action failed: cc -c a.c
 *   exited with status 1 on 10.0.0.2:6238
 *   | a.c:3: error: ...
 */
export function formatFailure(e: RakeEventOf<'action-failed'>): string {
  const where = `${e.position.file}:${e.position.line}`;
  const lines = [`rake-ts: ${where}: action failed: ${e.action.command}`, `  ${why(e)}`];
  const stderr = e.stderr.replace(/\n$/, '');
  if (stderr !== '') lines.push(...stderr.split('\n').map((l) => `  | ${l}`));
  return `${lines.join('\n')}\n`;
}

/** The message, with the host when the message does not name it. */
function why(e: RakeEventOf<'action-failed'>): string {
  return e.host === undefined || e.message.includes(e.host)
    ? e.message
    : `${e.message} (on ${e.host})`;
}

/** A failure in one line (a JSON record's `msg`): `Rakefile:5: action failed: cc -c a.c: exited with status 1 on h`. */
function failureHeadline(e: RakeEventOf<'action-failed'>): string {
  return `${e.position.file}:${e.position.line}: action failed: ${oneLine(e.action.command)}: ${why(e)}`;
}

/**
 * The failed actions once more, after the summary, one line each as ninja's `FAILED:`
 * lines: where, which host, the exit status (or why), the command; not their stderr again.
 *
 * rake-ts: FAILED Rakefile:5 build#0 on 10.0.0.2:6238 (exit status 1): cc -c a.c
 */
export function formatRecap(failures: readonly RakeEventOf<'action-failed'>[]): string {
  return failures
    .map((e) => {
      const host = e.host === undefined ? '' : ` on ${e.host}`;
      const status = e.exitStatus === undefined ? e.reason : `exit status ${e.exitStatus}`;
      return `rake-ts: FAILED ${e.position.file}:${e.position.line} ${e.action.actionId}${host} (${status}): ${oneLine(e.action.command)}\n`;
    })
    .join('');
}

/** A failure as a field of the JSON `done` record. */
function failureFields(e: RakeEventOf<'action-failed'>) {
  return {
    actionId: e.action.actionId,
    line: e.position.line,
    command: e.action.command,
    reason: e.reason,
    ...(e.host === undefined ? {} : { host: e.host }),
    ...(e.exitStatus === undefined ? {} : { exitStatus: e.exitStatus }),
  };
}

/**
 * What a successful action wrote to stderr, marked as its own:
 *
 * rake-ts: Rakefile:5: stderr of cc -c a.c (on 10.0.0.2:6238):
 *   | a.c:3: warning: unused variable 'x'
 */
export function formatWarnings(e: RakeEventOf<'action-succeeded'>): string {
  const lines = (e.stderr ?? '').replace(/\n$/, '').split('\n');
  const where = `${e.action.position.file}:${e.action.position.line}`;
  return `rake-ts: ${where}: stderr of ${e.action.command} (on ${e.host}):\n${lines.map((l) => `  | ${l}\n`).join('')}`;
}

/**
 * Whether to draw live: `always` → live; `never` → plain; `auto` → live only on a
 * terminal, with `NO_COLOR` and `CI` unset and `TERM` not `dumb`.
 */
export function progressMode(
  choice: 'auto' | 'always' | 'never',
  stream: object,
  env: NodeJS.ProcessEnv = process.env,
): ProgressMode {
  if (choice === 'always') return 'live';
  if (choice === 'never') return 'plain';
  const off = (v: string | undefined) => v !== undefined && v !== '';
  if (
    (stream as { isTTY?: boolean }).isTTY !== true ||
    off(env.NO_COLOR) ||
    off(env.CI) ||
    env.TERM === 'dumb'
  ) {
    return 'plain';
  }
  return 'live';
}

function setOutcome(e: RakeEventOf<'actionset-done'>): string {
  const parts = [`${e.succeeded} succeeded`];
  if (e.failed > 0) parts.push(`${e.failed} failed`);
  if (e.cancelled > 0) parts.push(`${e.cancelled} cancelled`);
  return `${parts.join(', ')} in ${formatSeconds(e.ms)}`;
}

/** A command on one line: control characters (newlines, escapes) shown as spaces. */
function oneLine(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing them is the point.
  return s.replace(/[\u0000-\u001f\u007f]+/g, ' ');
}

/** Cuts a line to `width` characters so the terminal never wraps it (wrapping breaks the erase). */
function fit(s: string, width: number): string {
  const chars = [...s];
  return chars.length <= width ? s : `${chars.slice(0, width - 1).join('')}…`;
}

function columnsOf(stream: Writable): number {
  const c = (stream as { columns?: number }).columns;
  return c !== undefined && c > 0 ? c : 80;
}

function rowsOf(stream: Writable): number {
  const r = (stream as { rows?: number }).rows;
  return r !== undefined && r > 0 ? r : 24;
}

/**
 * The events whose records would repeat, on stderr, what the display prints there itself:
 * the CLI leaves those records out of stderr (they stay in `--log-file`). In JSON mode the
 * display's own records carry them.
 */
export function eventsShownBy(mode: ProgressMode, quiet: boolean): ReadonlySet<RakeEventType> {
  if (mode === 'json') {
    return new Set<RakeEventType>([
      'embedded-server-started',
      'actionset-started',
      'actionset-done',
      'action-succeeded',
      'action-failed',
      'action-retried',
      'action-cancelled',
      'fallback-local',
      'done',
    ]);
  }
  if (quiet) return new Set<RakeEventType>(['action-failed']);
  const shown: RakeEventType[] = [
    'embedded-server-started',
    'actionset-done',
    'action-failed',
    'action-retried',
    'action-cancelled',
    'fallback-local',
    'done',
  ];
  if (mode === 'plain') shown.push('actionset-started');
  return new Set(shown);
}

/** Calls `fn` every `ms`: on `scheduler` when given, else on an unref'd interval. */
function every(ms: number, fn: () => void, scheduler?: SchedulerLike): { unsubscribe(): void } {
  if (scheduler === undefined) {
    const timer = setInterval(fn, ms);
    timer.unref();
    return { unsubscribe: () => clearInterval(timer) };
  }
  const sub: Subscription = scheduler.schedule(function (this: {
    schedule(s: undefined, d: number): void;
  }) {
    fn();
    this.schedule(undefined, ms);
  }, ms);
  return sub;
}

/** `~3 s`, `~2 min 5 s`: whole seconds, the estimate is no finer than that. */
function formatEta(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** Whether a stream is a terminal (the CLI's stdout writer says whether its stream is). */
function isTerminal(stream: Writable): boolean {
  return (stream as { isTTY?: boolean }).isTTY === true;
}
