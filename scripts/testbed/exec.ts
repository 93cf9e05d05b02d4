/**
 * Running the system tools the test bed drives (`ip`, `tc`, `iptables`, `nft`). Setup and
 * teardown are short sequences of such commands; teardown must also work inside a process
 * `exit` handler, where only synchronous calls run, so every call here is synchronous and
 * bounded by a timeout.
 */
import { spawnSync } from 'node:child_process';

/** The outcome of one tool invocation; failures are data so callers can fall back. */
export type CommandResult =
  | { readonly ok: true; readonly stdout: string; readonly stderr: string }
  | {
      readonly ok: false;
      readonly reason: 'spawn-error' | 'exit-non-zero' | 'timeout';
      readonly command: string;
      /** One line saying what went wrong, with the tool's own stderr when it printed any. */
      readonly message: string;
    };

/** A tool invocation the test bed needed and could not do: setup cannot go on without it. */
export class TestbedError extends Error {
  override readonly name = 'TestbedError';
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** Runs `command args…` to completion (bounded by `timeoutMs`) and captures its output. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: { readonly timeoutMs?: number; readonly input?: string } = {},
): CommandResult {
  const shown = [command, ...args].join(' ');
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    input: options.input ?? '',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  if (result.error !== undefined) {
    const code = (result.error as NodeJS.ErrnoException).code;
    if (code === 'ETIMEDOUT') {
      return { ok: false, reason: 'timeout', command: shown, message: `${shown}: timed out` };
    }
    const why = code === 'ENOENT' ? `${command} not found` : result.error.message;
    return { ok: false, reason: 'spawn-error', command: shown, message: `${shown}: ${why}` };
  }
  if (result.status !== 0) {
    const stderr = result.stderr.trim().split('\n').slice(-3).join(' / ');
    const status = result.signal ?? `exit ${result.status}`;
    return {
      ok: false,
      reason: 'exit-non-zero',
      command: shown,
      message: `${shown}: ${stderr === '' ? status : stderr}`,
    };
  }
  return { ok: true, stdout: result.stdout, stderr: result.stderr };
}

/** Like {@link runCommand}, for steps setup cannot do without: a failure throws. */
export function mustRun(command: string, args: readonly string[]): string {
  const result = runCommand(command, args);
  if (!result.ok) throw new TestbedError(result.message);
  return result.stdout;
}

/**
 * Runs `ip` commands (one per line, without the leading `ip`) in one process: setup and
 * teardown are dozens of them and each spawn costs tens of milliseconds. With `force`, the
 * remaining lines still run after one fails (teardown removes whatever is there).
 */
export function runIpBatch(
  lines: readonly string[],
  options: { readonly ns?: string; readonly force?: boolean } = {},
): CommandResult {
  const args = [
    ...(options.ns === undefined ? [] : ['-n', options.ns]),
    ...(options.force === true ? ['-force'] : []),
    '-batch',
    '-',
  ];
  return runCommand('ip', args, { input: `${lines.join('\n')}\n` });
}

const toolPresence = new Map<string, boolean>();

/** True when `tool` can be started (it is on PATH and executable); asked once per process. */
export function hasTool(tool: string): boolean {
  let present = toolPresence.get(tool);
  if (present === undefined) {
    const result = runCommand(tool, ['--version'], { timeoutMs: 5_000 });
    present = result.ok || result.reason !== 'spawn-error';
    toolPresence.set(tool, present);
  }
  return present;
}

/** Prefixes a command so it runs inside network namespace `ns` (no prefix for the root one). */
export function inNamespace(ns: string | undefined, argv: readonly string[]): string[] {
  return ns === undefined ? [...argv] : ['ip', 'netns', 'exec', ns, ...argv];
}
