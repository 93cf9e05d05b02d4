/**
 * What both fuzzers share: the checks that run between sessions (leaked processes, files
 * written where they must not be), byte alphabets that keep a fuzzed stream harmless when a
 * peer runs part of it as a shell command, and the command line and report of the standalone
 * runners.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SPAWN_HELPER_SOURCE } from '../../src/server/spawn-helper.js';

/**
 * Bytes random data is drawn from inside a structured stream. A server runs whatever ends up
 * in a command payload with `/bin/sh -c`, and a length mutation can make it read the wrong
 * bytes as a command, so these contain no newline, no `/`, `-`, `.`, `>`, `<`, `|`, `;`, `&`,
 * `$`, backquote, quote or tab: such bytes form one word with no path in it, which can only
 * name a program that is not there (or act inside the job directory).
 */
export const SAFE_BYTES: readonly number[] = [
  ...range(0x30, 0x39),
  ...range(0x41, 0x5a),
  ...range(0x61, 0x7a),
  0x5f,
  0x21,
  0x00,
  0x0d,
  0x7f,
  ...range(0x80, 0xff),
];

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** Makes `bytes` safe in place: every byte outside {@link SAFE_BYTES} is mapped into it. */
export function makeSafe(bytes: Uint8Array): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    out[i] = SAFE_BYTES[(out[i] ?? 0) % SAFE_BYTES.length] ?? 0x5f;
  }
  return out;
}

/**
 * Processes whose environment holds `marker`, other than this one and the spawn helpers of
 * this process's servers (long-lived by design: children of this process that run the
 * helper's source): every process a server of this run started inherits it (the
 * fuzzers set it in `process.env` first), so whatever is found after a session ended is a
 * leak. Zombies have an empty environment.
 */
export function markedProcesses(marker: string): number[] {
  const found: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return found;
  }
  const needle = Buffer.from(`=${marker}`);
  const helperSource = Buffer.from(SPAWN_HELPER_SOURCE);
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${name}/environ`).includes(needle)) continue;
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === process.pid && readFileSync(`/proc/${name}/cmdline`).includes(helperSource)) {
        continue;
      }
      found.push(pid);
    } catch {
      // Gone, or not ours to read.
    }
  }
  return found;
}

/** One entry of a directory tree: type, size and mtime, by relative path. */
export type TreeSnapshot = Map<string, string>;

/**
 * Every entry under `root` (lstat, never following symlinks), except the subtrees named in
 * `skip` (absolute paths). Comparing two snapshots shows any file made or changed.
 */
export async function snapshotTree(
  root: string,
  skip: readonly string[] = [],
): Promise<TreeSnapshot> {
  const out: TreeSnapshot = new Map();
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(dir, name);
      if (skip.includes(path)) continue;
      const st = await lstat(path).catch(() => undefined);
      if (st === undefined) continue;
      const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
      // A directory's own stamp changes whenever an entry comes or goes: those are listed.
      out.set(path.slice(root.length + 1), type === 'd' ? 'd' : `${type} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) pending.push(path);
    }
  }
  return out;
}

/** What differs between two snapshots, as `+path`, `-path` and `~path` lines. */
export function diffTrees(before: TreeSnapshot, after: TreeSnapshot): string[] {
  const out: string[] = [];
  for (const [path, stamp] of after) {
    const old = before.get(path);
    if (old === undefined) out.push(`+${path}`);
    else if (old !== stamp) out.push(`~${path}`);
  }
  for (const path of before.keys()) if (!after.has(path)) out.push(`-${path}`);
  return out;
}

/** Polls `check` every 20 ms for up to `ms`; returns its last result. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms: number,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Up to 160 bytes of `bytes` as a JSON string (latin1), for reports. */
export function preview(bytes: Uint8Array, max = 160): string {
  const b = Buffer.from(bytes.subarray(0, max));
  return (
    JSON.stringify(b.toString('latin1')) + (bytes.length > max ? `…(+${bytes.length - max})` : '')
  );
}

/** A problem a fuzzer found: which session, what kind, and the details to reproduce it. */
export interface Finding {
  readonly session: number;
  readonly kind: string;
  readonly detail: string;
}

/** Adds one to `counts[key]`. */
export function count(counts: Record<string, number>, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}

/** `--sessions N --seed S --concurrency C --time-limit SECONDS --json` for the runners. */
export interface RunnerArgs {
  readonly sessions: number;
  readonly seed: number;
  readonly concurrency: number;
  readonly timeLimitMs: number;
  readonly json: boolean;
}

export function parseRunnerArgs(argv: readonly string[], defaults: RunnerArgs): RunnerArgs {
  const args = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`${flag} needs a non-negative number`);
      return v;
    };
    switch (flag) {
      case '--sessions':
        args.sessions = Math.floor(value());
        break;
      case '--seed':
        args.seed = Math.floor(value());
        break;
      case '--concurrency':
        args.concurrency = Math.max(1, Math.floor(value()));
        break;
      case '--time-limit':
        args.timeLimitMs = value() * 1000;
        break;
      case '--json':
        args.json = true;
        break;
      default:
        throw new Error(
          `unknown flag ${flag}; use --sessions N --seed S --concurrency C --time-limit SECONDS --json`,
        );
    }
  }
  return args;
}

/** The options both fuzzers take, as the standalone runners pass them. */
export interface FuzzRunOptions {
  readonly sessions: number;
  readonly seed: number;
  readonly concurrency?: number;
  readonly timeLimitMs?: number;
  readonly log?: (line: string) => void;
}

/** What both fuzzers' reports start with and end with. */
export interface FuzzRunReport {
  readonly seed: number;
  readonly sessions: number;
  readonly ms: number;
  readonly findings: readonly Finding[];
}

/** `counts` as `key n, key n, …`, the largest first. */
export function showCounts(counts: Record<string, number>): string {
  return Object.entries(counts)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

/**
 * A standalone runner: reads its command line ({@link parseRunnerArgs}), runs `fuzz` with
 * progress on stderr and prints the report on stdout, as JSON with `--json`, otherwise as
 * `NAME fuzz: …`, the lines `summary` makes of it, and the findings. The exit code is 1 if
 * anything was found.
 */
export async function runFuzzer<R extends FuzzRunReport>(
  name: string,
  fuzz: (options: FuzzRunOptions) => Promise<R>,
  summary: (report: R) => readonly string[],
): Promise<void> {
  const args = parseRunnerArgs(process.argv.slice(2), {
    sessions: 10_000,
    seed: Date.now() % 2 ** 31,
    concurrency: 4,
    timeLimitMs: Number.POSITIVE_INFINITY,
    json: false,
  });
  const report = await fuzz({
    sessions: args.sessions,
    seed: args.seed,
    concurrency: args.concurrency,
    ...(Number.isFinite(args.timeLimitMs) ? { timeLimitMs: args.timeLimitMs } : {}),
    log: (line) => console.error(`fuzz: ${line}`),
  });
  if (args.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    console.log(
      `${name} fuzz: seed ${report.seed}, ${report.sessions} sessions in ${(report.ms / 1000).toFixed(1)} s`,
    );
    for (const line of summary(report)) console.log(line);
    console.log(`  findings: ${report.findings.length}`);
    for (const f of report.findings) console.log(`    #${f.session} ${f.kind}: ${f.detail}`);
  }
  process.exitCode = report.findings.length > 0 ? 1 : 0;
}
