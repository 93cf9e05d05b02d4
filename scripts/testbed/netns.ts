/**
 * The multi-host test bed: N servers, each on its own "host" — a network namespace with its
 * own address on a bridge in the root namespace — so the client (the calling process, in the
 * root namespace) reaches each by its own address, through a link that can be shaped (delay,
 * jitter, loss) and cut (SYN drops). Where namespaces are not allowed it falls back to
 * loopback addresses and ports, and says so.
 *
 *   const bed = await startTestbed({ hosts: 3, netem: { delayMs: 20 } });
 *   try { … bed.hosts[0].address … } finally { await bed.teardown(); }
 *
 * Layout (k is a per-bed subnet, 0 for the first bed on a machine):
 *
 *   root ns: bridge rk-<prefix>-br 10.77.k.1/24
 *     └ veth rk-<prefix>-<i>h ⇄ eth0 10.77.k.(10+i)/24 in namespace rk-<prefix>-<i>
 *
 * See docs/testbed.md.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PORT } from '../../grammar/model.js';
import {
  claimSubnet,
  cleanupAbandoned,
  findArtifacts,
  releaseSubnet,
  removeArtifacts,
  stem,
  tearDownOnExit,
  workrootStem,
} from './cleanup.js';
import { type CommandResult, inNamespace, runCommand, runIpBatch, TestbedError } from './exec.js';
import { firewallTool, SynDropper, synDropSupport } from './firewall.js';
import { type ExitStatus, HostProcess, waitUntilListening } from './server-process.js';
import { type Link, LinkShaper, probeShaping, type ShapingKind } from './shaping.js';

export { cleanupAbandoned, findArtifacts } from './cleanup.js';
export { TestbedError } from './exec.js';
export type { ExitStatus } from './server-process.js';

/** Link shaping as `tc netem` has it, applied to each direction of every host's link. */
export interface NetemOptions {
  /** One-way delay per direction; a round trip takes at least twice this. */
  readonly delayMs?: number;
  /** Each packet's delay is `delayMs ± jitterMs` (uniform); packets may be reordered. */
  readonly jitterMs?: number;
  /** Probability, in percent, that a packet is dropped, per direction. */
  readonly lossPercent?: number;
}

/**
 * Whether a fault can be injected on this machine: how, or why not. A spec that needs it
 * skips with `reason` as its message, so a skip always says why.
 */
export type Support =
  | { readonly supported: true; readonly via: string }
  | { readonly supported: false; readonly reason: string };

/** What a server command may need to know about the host it runs on. */
export interface ServerContext {
  /** `host1`, `host2`, … */
  readonly name: string;
  /** 1-based. */
  readonly index: number;
  /** An empty directory of its own, removed at teardown (rakeserver's `--workdir`). */
  readonly workdir: string;
}

/** Builds the argv that starts one server listening on `address:port`. */
export type ServerCommand = (
  address: string,
  port: number,
  host: ServerContext,
) => readonly string[];

/** How to start a test bed. */
export interface TestbedOptions {
  /** Number of hosts, 1 to 99. */
  readonly hosts: number;
  /** Shapes every host's link from the start (netns mode only); see {@link TestbedHost.setNetem}. */
  readonly netem?: NetemOptions;
  /** Defaults to {@link defaultServerCommand}. */
  readonly serverCommand?: ServerCommand;
  /** 1–8 lowercase letters or digits; default derived from the pid, unique per bed. */
  readonly namePrefix?: string;
  /** The port every host listens on in netns mode (default 6238); loopback mode picks free ports. */
  readonly port?: number;
  /** `'auto'` (default) falls back to loopback; `'netns'` fails instead; `'loopback'` forces it. */
  readonly mode?: 'auto' | 'netns' | 'loopback';
  /** How long each server may take to accept connections (default 20 s). */
  readonly readyTimeoutMs?: number;
  /** Where the bed's one-line notices go (the fallback message); default stderr. */
  readonly log?: (message: string) => void;
}

/** One host of the bed and the faults that can be injected on it. */
export interface TestbedHost {
  /** `host1`, `host2`, … */
  readonly name: string;
  /** 1-based. */
  readonly index: number;
  readonly address: string;
  readonly port: number;
  /** The host's network namespace (netns mode), for `ip netns exec`. */
  readonly namespace: string | undefined;
  readonly workdir: string;
  /** The current server process; a restart changes it. */
  readonly pid: number;
  readonly running: boolean;
  /** Resolves when the current server process exits. */
  readonly exited: Promise<ExitStatus>;
  /** The last 64 KiB of the current server's stdout and stderr. */
  output(): string;
  /** Sends `signal` (default SIGKILL) to the server, or with `group` to its process group. */
  kill(signal?: NodeJS.Signals, options?: { readonly group?: boolean }): void;
  /** SIGTERM, then SIGKILL after `graceMs` (default 3 s); resolves once it has exited. */
  stop(graceMs?: number): Promise<ExitStatus>;
  /** Starts the server again (after stop or kill) on the same address and port. */
  start(): Promise<void>;
  /** stop() then start(). */
  restart(): Promise<void>;
  /** SIGSTOP to the server's process group: it stays connected but answers nothing. */
  freeze(): void;
  /** SIGCONT to the server's process group. */
  thaw(): void;
  /** Drops (on) or stops dropping (off) incoming SYNs to the host; see `capabilities.dropSyn`. */
  dropSyn(on: boolean): void;
  /** The shaping now applied to this host's link, if any. */
  readonly netem: NetemOptions | undefined;
  /** Replaces this host's link shaping; `undefined` removes it. See `capabilities.netem`. */
  setNetem(netem: NetemOptions | undefined): Promise<void>;
  /** Runs a command inside the host's namespace (in the root one in loopback mode). */
  exec(argv: readonly string[]): CommandResult;
}

/** A running test bed. */
export interface Testbed {
  /** `'netns'`: hosts are namespaces; `'loopback'`: the fallback. */
  readonly mode: 'netns' | 'loopback';
  /** Why namespaces were not used, in loopback mode. */
  readonly fallbackReason: string | undefined;
  readonly prefix: string;
  /** The address the hosts see the client (the root namespace) connect from. */
  readonly clientAddress: string;
  readonly hosts: readonly TestbedHost[];
  /** Which faults can be injected here, and if not, why not. */
  readonly capabilities: { readonly netem: Support; readonly dropSyn: Support };
  /** A Rakefile `HOSTS` line naming every host as `address:port`. */
  rakefileHosts(): string;
  /** Stops the servers and removes every namespace, link, rule and workdir. Idempotent. */
  teardown(): Promise<void>;
}

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ECHO_SERVER = fileURLToPath(new URL('./echo-server.ts', import.meta.url));
const RAKESERVER = fileURLToPath(new URL('./rakeserver-from-source.ts', import.meta.url));

/** The test bed's own stand-in server (see echo-server.ts), started from source with tsx. */
export const echoServerCommand: ServerCommand = (address, port, host) => [
  process.execPath,
  '--import',
  'tsx',
  ECHO_SERVER,
  '--host',
  address,
  '--port',
  String(port),
  '--name',
  host.name,
];

/** The real rakeserver, from source with tsx (rakeserver-from-source.ts), so no build is needed. */
export const rakeserverCommand: ServerCommand = (address, port, host) => [
  process.execPath,
  '--import',
  'tsx',
  RAKESERVER,
  '--host',
  address,
  '--port',
  String(port),
  '--workdir',
  host.workdir,
  '--log-level',
  'warn',
];

/** Used when the options name no server command: the real thing. */
export const defaultServerCommand: ServerCommand = rakeserverCommand;

let bedsStarted = 0;

/** Starts a test bed; see the module comment. Cleans up after itself if it fails halfway. */
export async function startTestbed(options: TestbedOptions): Promise<Testbed> {
  const count = options.hosts;
  if (!Number.isInteger(count) || count < 1 || count > 99) {
    throw new RangeError(`hosts must be an integer from 1 to 99, not ${count}`);
  }
  bedsStarted += 1;
  const prefix = options.namePrefix ?? `${process.pid.toString(36)}${bedsStarted.toString(36)}`;
  if (!/^[a-z0-9]{1,8}$/.test(prefix)) {
    throw new RangeError(`namePrefix must be 1-8 lowercase letters or digits, not "${prefix}"`);
  }
  const log = options.log ?? ((message: string) => console.error(`testbed: ${message}`));
  const bed = new Bed(prefix, options, log);
  try {
    await bed.start();
  } catch (err) {
    bed.teardownSync();
    throw err;
  }
  return bed;
}

/** The subnet-k addresses of netns mode. */
function subnet(k: number) {
  return { client: `10.77.${k}.1`, host: (index: number) => `10.77.${k}.${10 + index}` };
}

class Bed implements Testbed {
  mode: 'netns' | 'loopback' = 'netns';
  fallbackReason: string | undefined;
  clientAddress = '127.0.0.1';
  hosts: Host[] = [];
  capabilities: { netem: Support; dropSyn: Support } = {
    netem: { supported: false, reason: 'not probed yet' },
    dropSyn: { supported: false, reason: 'not probed yet' },
  };
  #subnet: number | undefined;
  #workroot: string | undefined;
  #unregister: (() => void) | undefined;
  #tornDown = false;
  #teardown: Promise<void> | undefined;

  constructor(
    readonly prefix: string,
    private readonly options: TestbedOptions,
    private readonly log: (message: string) => void,
  ) {}

  async start(): Promise<void> {
    const { options, prefix } = this;
    this.#unregister = tearDownOnExit(this);
    removeArtifacts(prefix); // a previous bed with this prefix that never tore down
    for (const stale of cleanupAbandoned()) this.log(`removed abandoned test bed ${stale}`);
    this.#workroot = mkdtempSync(join(tmpdir(), workrootStem(prefix)));
    const wanted = options.mode ?? 'auto';
    const why = wanted === 'loopback' ? 'loopback mode requested' : this.#tryNamespaces();
    if (why !== undefined) {
      if (wanted === 'netns') throw new TestbedError(`network namespaces not available (${why})`);
      this.mode = 'loopback';
      this.fallbackReason = why;
      if (wanted !== 'loopback') {
        this.log(`network namespaces not available (${why}); using loopback ports 127.0.0.x`);
      }
      await this.#buildLoopback();
    }
    if (options.netem !== undefined) {
      if (!this.capabilities.netem.supported) {
        this.log(`link shaping requested but unsupported: ${this.capabilities.netem.reason}`);
      } else {
        await Promise.all(this.hosts.map((host) => host.setNetem(options.netem)));
      }
    }
    const timeout = options.readyTimeoutMs ?? 20_000;
    await Promise.all(this.hosts.map((host) => host.start(timeout)));
  }

  /** Builds the netns layout; returns why it could not, having removed any part of it. */
  #tryNamespaces(): string | undefined {
    const { prefix } = this;
    const first = `${stem(prefix)}1`;
    const probe = runCommand('ip', ['netns', 'add', first]);
    if (!probe.ok) {
      return probe.reason === 'spawn-error'
        ? 'ip (iproute2) not found; scripts/testbed/install-tools.sh installs it'
        : probe.message;
    }
    this.#subnet = claimSubnet(prefix);
    const addresses = subnet(this.#subnet);
    this.clientAddress = addresses.client;
    const bridge = `${stem(prefix)}br`;
    const port = this.options.port ?? DEFAULT_PORT;
    const links: Link[] = [];
    const rootSide = [
      `link add ${bridge} type bridge`,
      `addr add ${addresses.client}/24 dev ${bridge}`,
      `link set ${bridge} up`,
    ];
    for (let index = 1; index <= this.options.hosts; index++) {
      const ns = `${stem(prefix)}${index}`;
      const link: Link = { rootInterface: `${ns}h`, ns, nsInterface: 'eth0' };
      links.push(link);
      if (index > 1) rootSide.push(`netns add ${ns}`);
      rootSide.push(
        `link add ${link.rootInterface} type veth peer name ${ns}n`,
        `link set ${ns}n netns ${ns}`,
        `link set ${link.rootInterface} master ${bridge}`,
        `link set ${link.rootInterface} up`,
      );
    }
    mustSucceed(runIpBatch(rootSide));
    let shaping: ShapingKind | undefined;
    for (const [offset, link] of links.entries()) {
      const index = offset + 1;
      const { ns } = link;
      const address = addresses.host(index);
      const hostSide = [
        'link set lo up',
        `link set ${ns}n name ${link.nsInterface}`,
        `addr add ${address}/24 dev ${link.nsInterface}`,
        `link set ${link.nsInterface} up`,
        `route add default via ${addresses.client}`,
      ];
      mustSucceed(runIpBatch(hostSide, { ns }));
      if (index === 1) {
        const probed = probeShaping(link);
        if ('kind' in probed) {
          shaping = probed.kind;
          this.capabilities.netem = probed.support;
        } else {
          this.capabilities.netem = probed;
        }
        this.capabilities.dropSyn = synDropSupport(ns);
      }
      const shaper = shaping === undefined ? undefined : new LinkShaper(shaping, link, REPO_ROOT);
      this.hosts.push(this.#host(index, address, port, ns, shaper));
    }
    return undefined;
  }

  async #buildLoopback(): Promise<void> {
    this.capabilities.netem = {
      supported: false,
      reason: `loopback mode has no per-host link to shape (${this.fallbackReason})`,
    };
    const isRoot = process.getuid?.() === 0;
    this.capabilities.dropSyn = isRoot
      ? synDropSupport(undefined)
      : { supported: false, reason: `loopback mode, not root: cannot add firewall rules` };
    for (let index = 1; index <= this.options.hosts; index++) {
      const address = `127.0.0.${1 + index}`;
      const port = await freePort(address);
      this.hosts.push(this.#host(index, address, port, undefined, undefined));
    }
  }

  #host(
    index: number,
    address: string,
    port: number,
    ns: string | undefined,
    shaper: LinkShaper | undefined,
  ): Host {
    const workdir = join(this.#workroot as string, `host${index}`);
    mkdirSync(workdir);
    const tool = firewallTool();
    const dropper =
      this.capabilities.dropSyn.supported && tool !== undefined
        ? new SynDropper(tool, ns, address, port, this.prefix)
        : undefined;
    return new Host(
      { name: `host${index}`, index, workdir },
      address,
      port,
      ns,
      (this.options.serverCommand ?? defaultServerCommand)(address, port, {
        name: `host${index}`,
        index,
        workdir,
      }),
      this.capabilities,
      shaper,
      dropper,
      this.options.readyTimeoutMs ?? 20_000,
    );
  }

  rakefileHosts(): string {
    return `HOSTS = ${this.hosts.map((host) => `${host.address}:${host.port}`).join(' ')}`;
  }

  teardown(): Promise<void> {
    this.#teardown ??= (async () => {
      await Promise.all(this.hosts.map((host) => host.stopQuietly()));
      this.teardownSync();
    })();
    return this.#teardown;
  }

  /** Removes everything at once, without waiting for servers to exit; for `exit` handlers. */
  teardownSync(): void {
    if (this.#tornDown) return;
    this.#tornDown = true;
    this.#unregister?.();
    for (const host of this.hosts) host.killSync();
    removeArtifacts(this.prefix); // and the workroot
    if (this.#subnet !== undefined) releaseSubnet(this.#subnet, this.prefix);
  }
}

class Host implements TestbedHost {
  readonly name: string;
  readonly index: number;
  readonly workdir: string;
  #process: HostProcess | undefined;
  #netem: NetemOptions | undefined;

  constructor(
    context: ServerContext,
    readonly address: string,
    readonly port: number,
    readonly namespace: string | undefined,
    private readonly argv: readonly string[],
    private readonly capabilities: Testbed['capabilities'],
    private readonly shaper: LinkShaper | undefined,
    private readonly dropper: SynDropper | undefined,
    private readonly readyTimeoutMs: number,
  ) {
    this.name = context.name;
    this.index = context.index;
    this.workdir = context.workdir;
  }

  #current(): HostProcess {
    if (this.#process === undefined) throw new TestbedError(`${this.name} was never started`);
    return this.#process;
  }

  get pid(): number {
    return this.#current().pid;
  }

  get running(): boolean {
    return this.#process?.running ?? false;
  }

  get exited(): Promise<ExitStatus> {
    return this.#current().exited;
  }

  output(): string {
    return this.#process?.output() ?? '';
  }

  kill(signal: NodeJS.Signals = 'SIGKILL', options: { readonly group?: boolean } = {}): void {
    this.#current().signal(signal, options.group ?? false);
  }

  async stop(graceMs?: number): Promise<ExitStatus> {
    return this.#current().stop(graceMs);
  }

  /** For teardown: stop if started, never throw. */
  async stopQuietly(): Promise<void> {
    await this.#process?.stop().catch(() => undefined);
  }

  killSync(): void {
    this.#process?.killSync();
    this.shaper?.disposeSync();
  }

  async start(timeoutMs = this.readyTimeoutMs): Promise<void> {
    if (this.#process?.running) throw new TestbedError(`${this.name} is already running`);
    this.#process = HostProcess.start(this.argv, { ns: this.namespace, cwd: REPO_ROOT });
    await waitUntilListening(this.#process, this.address, this.port, timeoutMs);
  }

  async restart(): Promise<void> {
    if (this.#process?.running) await this.#process.stop();
    await this.start();
  }

  freeze(): void {
    this.#current().signal('SIGSTOP', true);
  }

  thaw(): void {
    this.#current().signal('SIGCONT', true);
  }

  dropSyn(on: boolean): void {
    const support = this.capabilities.dropSyn;
    if (!support.supported || this.dropper === undefined) {
      throw new TestbedError(
        `dropSyn unsupported: ${support.supported ? 'no tool' : support.reason}`,
      );
    }
    this.dropper.set(on);
  }

  async setNetem(netem: NetemOptions | undefined): Promise<void> {
    const support = this.capabilities.netem;
    if (!support.supported || this.shaper === undefined) {
      throw new TestbedError(
        `netem unsupported: ${support.supported ? 'no shaper' : support.reason}`,
      );
    }
    await this.shaper.apply(netem);
    this.#netem = netem;
  }

  /** The shaping currently applied to this host's link. */
  get netem(): NetemOptions | undefined {
    return this.#netem;
  }

  exec(argv: readonly string[]): CommandResult {
    const [command, ...args] = inNamespace(this.namespace, argv);
    if (command === undefined) throw new RangeError('exec: empty argv');
    return runCommand(command, args);
  }
}

function mustSucceed(result: CommandResult): void {
  if (!result.ok) throw new TestbedError(result.message);
}

/** A port on `address` nobody listens on right now (loopback mode gives each host its own). */
function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, address, () => {
      const bound = server.address();
      server.close(() => {
        if (bound !== null && typeof bound === 'object') resolve(bound.port);
        else reject(new Error(`no port on ${address}`));
      });
    });
  });
}

/** True when no namespace, link or workroot of the bed with `prefix` is left on the machine. */
export function isClean(prefix: string): boolean {
  const { namespaces, links, workroots } = findArtifacts(prefix);
  return namespaces.length === 0 && links.length === 0 && workroots.length === 0;
}
