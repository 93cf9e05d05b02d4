/**
 * What a person watching a run sees. Two renderers over the same events:
 * - `live` (a terminal): a few status lines at the bottom of the screen — the actionset
 *   (n of m), actions done / running / queued, each running action with its host and
 *   elapsed time — redrawn at most ten times a second. Anything printed while they are up
 *   (an action's output, a failure, a log line) is printed above them: the status lines are
 *   erased, the text written, the lines drawn again, so no output block is ever torn.
 * - `plain` (a pipe, a CI log, `NO_COLOR`): one line per actionset start and end and per
 *   action end, no escape codes.
 * Both print action output to stdout and failures to stderr, and end with the summary line
 * on stdout.
 */
import type { Writable } from 'node:stream';
import { finalize, type MonoTypeOperatorFunction, tap } from 'rxjs';
import { hostKey } from '../client/endpoint.js';
import type { ActionRef, RakeEvent, RakeEventOf, RunSummary } from '../client/events.js';
import { unreachable } from '../util/unreachable.js';
import { formatHostNotes } from './host-notes.js';
import { formatSeconds, formatSummaryLine, runTotals } from './summary.js';
import { type Timeline, TimelineBuilder } from './timeline.js';

/** `live`: status lines redrawn in place (needs a terminal); `plain`: one line per step. */
export type ProgressMode = 'live' | 'plain';

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
  /** Clock for elapsed times (default `Date.now`, the clock events carry). */
  readonly now?: () => number;
  /** Minimum time between two redraws of the status lines (default 100 ms). */
  readonly redrawMs?: number;
}

interface Running {
  readonly ref: ActionRef;
  readonly since: number;
  host: string | undefined;
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
  readonly #running = new Map<string, Running>();
  #current: Current | undefined;
  #ordinal = 0;
  #summary: RunSummary | undefined;
  /** Status lines now on screen (live mode). */
  #drawn = 0;
  #dirty = false;
  #timer: NodeJS.Timeout | undefined;
  #ended = false;

  constructor(options: ProgressOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** The timeline of the events seen so far (for a trace or a report of the same run). */
  timeline(): Timeline {
    return this.#timeline.timeline();
  }

  next(e: RakeEvent): void {
    if (this.#ended) return;
    this.#timeline.add(e);
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

  /** Erases the status lines and prints the summary line (the run is over). */
  end(): void {
    if (this.#ended) return;
    this.dispose();
    const s = this.#summary;
    if (s !== undefined && (!this.#o.quiet || s.exitStatus !== 0)) {
      this.#o.stdout.write(formatSummaryLine(s, runTotals(this.#timeline.timeline())));
      this.#o.stdout.write(formatHostNotes(s));
    }
  }

  /** Stops redrawing and erases the status lines; prints nothing more. */
  dispose(): void {
    this.#ended = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
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
        return;
      case 'cost-polled':
      case 'host-chosen':
      case 'upload-done':
      case 'output':
      case 'action-retried':
      case 'fallback-local': {
        const id = e.action.actionId;
        let r = this.#running.get(id);
        if (r === undefined) {
          r = { ref: e.action, since: e.time, host: undefined };
          this.#running.set(id, r);
        }
        if (e.type === 'host-chosen') r.host = e.host;
        return;
      }
      case 'action-succeeded':
      case 'action-failed':
      case 'action-cancelled':
        this.#running.delete(e.action.actionId);
        if (this.#current !== undefined) this.#current.done++;
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

  #print(e: RakeEvent): void {
    const { quiet } = this.#o;
    const live = this.#o.mode === 'live';
    const err = (line: string) => this.writeAbove(this.#o.stderr, `${line}\n`);
    switch (e.type) {
      case 'output':
        this.writeAbove(this.#o.stdout, e.stdout.endsWith('\n') ? e.stdout : `${e.stdout}\n`);
        return;
      case 'action-failed':
        this.writeAbove(this.#o.stderr, formatFailure(e));
        return;
      case 'action-retried':
        if (!quiet) {
          err(
            `rake-ts: ${e.action.actionId}: ${e.fromHost} did not run it (${e.reason}); trying another host`,
          );
        }
        return;
      case 'fallback-local':
        if (!quiet) err(`rake-ts: ${e.action.actionId}: ${e.reason}; running it on ${e.host}`);
        return;
      case 'embedded-server-started':
        if (!quiet) {
          err(
            `rake-ts: started an embedded server at ${hostKey({ host: e.host, port: e.port })} (${e.reason})`,
          );
        }
        return;
      case 'actionset-started':
        if (!quiet && !live) err(`rake-ts: ${this.#setLabel()}: ${plural(e.actions, 'action')}`);
        return;
      case 'actionset-done':
        if (!quiet) err(`rake-ts: ${this.#setLabel()}: ${setOutcome(e)}`);
        return;
      case 'action-succeeded':
        // Its stderr (compiler warnings, with the `stderr` extension) is the action's own
        // output: printed even with -q, after its stdout.
        if (e.stderr !== undefined && e.stderr !== '')
          this.writeAbove(this.#o.stderr, formatWarnings(e));
        if (!quiet && !live) {
          err(
            `rake-ts: ok ${e.action.actionId} on ${e.host} in ${formatSeconds(e.ms)}: ${oneLine(e.action.command)}`,
          );
        }
        return;
      case 'action-cancelled':
        if (!quiet) {
          err(
            `rake-ts: cancelled ${e.action.actionId}${e.host === undefined ? '' : ` on ${e.host}`}: ${oneLine(e.action.command)}`,
          );
        }
        return;
      case 'cost-polled':
      case 'host-chosen':
      case 'upload-done':
      case 'done':
        return;
      default:
        unreachable(e, 'event');
    }
  }

  #setLabel(): string {
    const c = this.#current;
    if (c === undefined) return '';
    const m = this.#o.actionsets;
    return `[${c.ordinal}${m === undefined ? '' : `/${m}`}] ${c.name}`;
  }

  /** Marks the status dirty; the interval timer redraws at most every `redrawMs`. */
  #schedule(): void {
    this.#dirty = true;
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      if (this.#dirty || this.#running.size > 0) this.#draw();
    }, this.#o.redrawMs ?? 100);
    this.#timer.unref();
  }

  #draw(): void {
    if (this.#ended) return;
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

  #statusLines(): string[] {
    const c = this.#current;
    if (c === undefined) return [];
    const width = Math.max(20, (this.#o.columns?.() ?? columnsOf(this.#o.stderr)) - 1);
    const height = this.#o.rows?.() ?? rowsOf(this.#o.stderr);
    const now = this.#now();
    const running = [...this.#running.values()];
    const queued = Math.max(c.actions - c.done - running.length, 0);
    const head = `${this.#setLabel()}: ${c.done} done, ${running.length} running, ${queued} queued · ${formatSeconds(now - c.since)}`;
    const lines = [`${ESC}1m${fit(head, width)}${ESC}0m`];
    const room = Math.max(1, Math.min(10, height - 4));
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

/**
 * A failed action as the user reads it: where, what, why, and the command's stderr.
 *
 * rake-ts: Rakefile:5: action failed: cc -c a.c
 *   exit-non-zero on 10.0.0.2:6238, exit status 1: exited with status 1 on 10.0.0.2:6238
 *   | a.c:3: error: ...
 */
export function formatFailure(e: RakeEventOf<'action-failed'>): string {
  const where = `${e.position.file}:${e.position.line}`;
  const status = e.exitStatus === undefined ? '' : `, exit status ${e.exitStatus}`;
  const lines = [
    `rake-ts: ${where}: action failed: ${e.action.command}`,
    `  ${e.reason}${e.host ? ` on ${e.host}` : ''}${status}: ${e.message}`,
  ];
  const stderr = e.stderr.replace(/\n$/, '');
  if (stderr !== '') lines.push(...stderr.split('\n').map((l) => `  | ${l}`));
  return `${lines.join('\n')}\n`;
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

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
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
