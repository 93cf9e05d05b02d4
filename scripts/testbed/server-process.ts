/**
 * One server process of the test bed: started (inside a namespace when there is one) as the
 * leader of its own process group, so a whole host can be frozen or killed with its children,
 * and watched until it exits. Its output is kept (the tail only) for failure messages.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { inNamespace } from './exec.js';

/** How a server process ended: exactly one of `code` and `signal` is set. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const OUTPUT_TAIL_BYTES = 64 * 1024;

/** A running (or exited) server process; a restart makes a new one. */
export class HostProcess {
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  #exit: ExitStatus | undefined;
  #output = '';

  private constructor(
    readonly argv: readonly string[],
    child: ChildProcess,
  ) {
    if (child.pid === undefined) throw new Error(`could not start ${argv.join(' ')}`);
    this.pid = child.pid;
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
    });
  }

  /** Starts `argv` inside network namespace `ns` (the root one when undefined). */
  static start(argv: readonly string[], options: { ns: string | undefined; cwd: string }) {
    const [command, ...args] = inNamespace(options.ns, argv);
    if (command === undefined) throw new Error('empty server command');
    const child = spawn(command, args, {
      cwd: options.cwd,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new HostProcess(argv, child);
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  /** The last 64 KiB the server wrote to stdout and stderr, interleaved. */
  output(): string {
    return this.#output;
  }

  /** Sends `sig` to the server, or to its whole process group (its children too). */
  signal(sig: NodeJS.Signals, group = false): void {
    if (!this.running) return;
    try {
      process.kill(group ? -this.pid : this.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** SIGTERM, then SIGKILL to the group after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 3_000): Promise<ExitStatus> {
    if (this.running) {
      this.signal('SIGCONT', true); // a frozen server cannot act on SIGTERM
      this.signal('SIGTERM');
      const timer = delay(graceMs);
      const first = await Promise.race([this.exited, timer.promise]);
      timer.cancel();
      if (first === undefined) this.signal('SIGKILL', true);
    }
    const status = await this.exited;
    this.signal('SIGKILL', true); // children the server left behind
    return status;
  }

  /** For `exit` handlers, where nothing asynchronous runs: SIGKILL to the whole group. */
  killSync(): void {
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Resolves once `address:port` accepts TCP connections; rejects when the process exits first
 * or `timeoutMs` passes, with the server's output in the message.
 */
export async function waitUntilListening(
  server: HostProcess,
  address: string,
  port: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = 'no attempt';
  let gone = false;
  void server.exited.then(() => {
    gone = true;
  });
  while (Date.now() < deadline) {
    if (gone) break;
    const attempt = await tryConnect(address, port, Math.min(1_000, deadline - Date.now()));
    if (attempt === 'ok') return;
    lastError = attempt;
    const pause = delay(50);
    await Promise.race([pause.promise, server.exited]);
    pause.cancel();
  }
  const why = gone
    ? `exited (${JSON.stringify(await server.exited)})`
    : `not listening after ${timeoutMs} ms (${lastError})`;
  const output = server.output().trim();
  throw new Error(
    `server ${server.argv.join(' ')} on ${address}:${port} ${why}${output === '' ? '' : `\n--- its output ---\n${output}`}`,
  );
}

/** One bounded TCP connection attempt: `'ok'` or the error message. */
export function tryConnect(address: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`timeout after ${timeoutMs} ms`);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('ok');
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(err.message);
    });
  });
}

/** A cancellable pause: `promise` resolves to undefined after `ms` unless cancelled first. */
export function delay(ms: number): { promise: Promise<undefined>; cancel(): void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}
