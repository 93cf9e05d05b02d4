/**
 * Delay, jitter and loss on one host's link, in both directions: `tc netem` on both ends of
 * the veth pair when the kernel has sch_netem; otherwise the same packets go through NFQUEUE
 * to `nfqueue-netem.py` inside the host's namespace, which holds each one for the delay (so
 * SYNs, ACKs and data are all delayed, as with netem). Either way each direction gets the
 * configured delay, so a round trip takes at least twice `delayMs`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { hasTool, inNamespace, runCommand, TestbedError } from './exec.js';
import type { NetemOptions, Support } from './netns.js';

const WORKER = fileURLToPath(new URL('./nfqueue-netem.py', import.meta.url));
/** Queue numbers are per namespace; every host's worker can use the same one. */
const QUEUE = '0';
const WORKER_READY_TIMEOUT_MS = 10_000;

/** Which mechanism shapes links on this machine. */
export type ShapingKind = 'tc-netem' | 'nfqueue';

/** The two interfaces of one host's link: the bridge port in the root namespace and eth0 in the host's. */
export interface Link {
  readonly rootInterface: string;
  readonly ns: string;
  readonly nsInterface: string;
}

/** Finds out, on a freshly made link, which shaping mechanism works here. */
export function probeShaping(link: Link): { kind: ShapingKind; support: Support } | Support {
  const tc = ['tc', 'qdisc', 'add', 'dev', link.rootInterface, 'root', 'netem', 'delay', '0ms'];
  const probe = runCommand(tc[0] as string, tc.slice(1));
  if (probe.ok) {
    runCommand('tc', ['qdisc', 'del', 'dev', link.rootInterface, 'root']);
    return { kind: 'tc-netem', support: { supported: true, via: 'tc netem' } };
  }
  const noNetem = `tc netem unavailable (${probe.message})`;
  if (!hasTool('iptables')) {
    return {
      supported: false,
      reason: `${noNetem}; the NFQUEUE fallback needs iptables (scripts/testbed/install-tools.sh)`,
    };
  }
  if (!hasTool('python3')) {
    return { supported: false, reason: `${noNetem}; the NFQUEUE fallback needs python3` };
  }
  const rule = ['OUTPUT', '-o', link.nsInterface, '-p', 'udp', '--dport', '9', '-j', 'NFQUEUE'];
  const added = runIn(link.ns, ['iptables', '-w', '5', '-A', ...rule]);
  if (!added.ok) {
    return { supported: false, reason: `${noNetem}; iptables NFQUEUE refused: ${added.message}` };
  }
  runIn(link.ns, ['iptables', '-w', '5', '-D', ...rule]);
  return {
    kind: 'nfqueue',
    support: { supported: true, via: `nfqueue (${noNetem})` },
  };
}

/** The shaping of one link; `apply` replaces it, `apply(undefined)` removes it. */
export class LinkShaper {
  #worker: ChildProcess | undefined;
  #workerLines: LineWaiter | undefined;
  #active = false;

  constructor(
    readonly kind: ShapingKind,
    private readonly link: Link,
    private readonly cwd: string,
  ) {}

  async apply(netem: NetemOptions | undefined): Promise<void> {
    const active = netem !== undefined && isShaping(netem);
    if (!active && !this.#active) return;
    if (this.kind === 'tc-netem') this.#applyTc(active ? netem : undefined);
    else await this.#applyNfqueue(active ? netem : undefined);
    this.#active = active;
  }

  /** For teardown, also in `exit` handlers: the worker dies with its namespace anyway. */
  disposeSync(): void {
    this.#worker?.kill('SIGKILL');
    this.#worker = undefined;
  }

  #applyTc(netem: NetemOptions | undefined): void {
    const ends: [string | undefined, string][] = [
      [undefined, this.link.rootInterface],
      [this.link.ns, this.link.nsInterface],
    ];
    for (const [ns, dev] of ends) {
      const argv =
        netem === undefined
          ? ['tc', 'qdisc', 'del', 'dev', dev, 'root']
          : ['tc', 'qdisc', 'replace', 'dev', dev, 'root', ...netemArgs(netem)];
      const result = runIn(ns, argv);
      if (!result.ok) throw new TestbedError(`link shaping: ${result.message}`);
    }
  }

  async #applyNfqueue(netem: NetemOptions | undefined): Promise<void> {
    const rules = ['INPUT -i', 'OUTPUT -o'].map((chainAndFlag) => [
      ...chainAndFlag.split(' '),
      this.link.nsInterface,
      '-j',
      'NFQUEUE',
      '--queue-num',
      QUEUE,
    ]);
    if (netem === undefined) {
      for (const rule of rules) runIn(this.link.ns, ['iptables', '-w', '5', '-D', ...rule]);
      this.#worker?.stdin?.end();
      this.#worker = undefined;
      return;
    }
    const { delayMs = 0, jitterMs = 0, lossPercent = 0 } = netem;
    if (this.#worker !== undefined && this.#workerLines !== undefined) {
      this.#worker.stdin?.write(`set ${delayMs} ${jitterMs} ${lossPercent}\n`);
      await this.#workerLines.next('ok', WORKER_READY_TIMEOUT_MS);
      return;
    }
    const argv = [
      'python3',
      WORKER,
      '--queue',
      QUEUE,
      '--delay',
      String(delayMs),
      '--jitter',
      String(jitterMs),
      '--loss',
      String(lossPercent),
    ];
    const [command, ...args] = inNamespace(this.link.ns, argv) as [string, ...string[]];
    const worker = spawn(command, args, {
      cwd: this.cwd,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    worker.unref();
    (worker.stdin as { unref?: () => void } | null)?.unref?.();
    this.#worker = worker;
    this.#workerLines = new LineWaiter(worker);
    await this.#workerLines.next('ready', WORKER_READY_TIMEOUT_MS);
    for (const rule of rules) {
      const result = runIn(this.link.ns, ['iptables', '-w', '5', '-A', ...rule]);
      if (!result.ok) throw new TestbedError(`link shaping: ${result.message}`);
    }
  }
}

/** The `tc qdisc … netem` arguments for `netem`; the limit is raised so a delay does not drop. */
export function netemArgs(netem: NetemOptions): string[] {
  const { delayMs = 0, jitterMs = 0, lossPercent = 0 } = netem;
  const args = ['netem', 'limit', '100000', 'delay', `${delayMs}ms`];
  if (jitterMs > 0) args.push(`${jitterMs}ms`);
  if (lossPercent > 0) args.push('loss', `${lossPercent}%`);
  return args;
}

function isShaping(netem: NetemOptions): boolean {
  return (netem.delayMs ?? 0) > 0 || (netem.jitterMs ?? 0) > 0 || (netem.lossPercent ?? 0) > 0;
}

function runIn(ns: string | undefined, argv: readonly string[]) {
  const [command, ...args] = inNamespace(ns, argv) as [string, ...string[]];
  return runCommand(command, args);
}

/** Reads a worker's stdout line by line so `next(expected)` can wait, bounded, for a reply. */
class LineWaiter {
  #buffer = '';
  #lines: string[] = [];
  #stderr = '';
  #wake: (() => void) | undefined;
  #exited = false;

  constructor(child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      this.#buffer += chunk;
      const parts = this.#buffer.split('\n');
      this.#buffer = parts.pop() ?? '';
      this.#lines.push(...parts);
      this.#wake?.();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-4096);
    });
    child.on('exit', () => {
      this.#exited = true;
      this.#wake?.();
    });
    for (const stream of [child.stdout, child.stderr]) {
      (stream as { unref?: () => void } | null)?.unref?.();
    }
  }

  async next(expected: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.#lines.shift();
      if (line !== undefined) {
        if (line.trim() === expected) return;
        continue;
      }
      const left = deadline - Date.now();
      if (this.#exited || left <= 0) {
        const why = this.#exited ? 'exited' : `did not answer within ${timeoutMs} ms`;
        throw new TestbedError(
          `nfqueue-netem worker ${why} (waiting for "${expected}")${this.#stderr === '' ? '' : `: ${this.#stderr.trim()}`}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }
}
