/**
 * Everything a test bed leaves on the machine is named after its prefix (`rk-<prefix>-…`
 * namespaces and links, tagged firewall rules), so one function finds and removes it: used by
 * teardown, by the stale-cleanup at start, and for beds whose process died without tearing
 * down. Subnets are claimed with lock files so parallel beds never share one.
 */
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand, runIpBatch } from './exec.js';
import { removeTaggedRules } from './firewall.js';

/** What a test bed with a given prefix has left on the machine (root namespace view). */
export interface Artifacts {
  readonly namespaces: readonly string[];
  readonly links: readonly string[];
  /** Workroots (the hosts' workdirs) in the temp directory. */
  readonly workroots: readonly string[];
}

/** The name stem of every namespace and link of the bed with `prefix`. */
export function stem(prefix: string): string {
  return `rk-${prefix}-`;
}

/** The start of the name of the bed's workroot (hosts' workdirs) in the temp directory. */
export function workrootStem(prefix: string): string {
  return `rake-testbed-${prefix}-`;
}

/** Lists the namespaces and links named after `prefix` (all test beds' when omitted). */
export function findArtifacts(prefix?: string): Artifacts {
  const start = prefix === undefined ? 'rk-' : stem(prefix);
  const namespaces = lines(runCommand('ip', ['netns', 'list']))
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(start));
  const links = lines(runCommand('ip', ['-o', 'link', 'show']))
    .map((line) => (line.split(': ')[1] ?? '').split('@')[0] ?? '')
    .filter((name) => name.startsWith(start));
  const workroots = safeReaddir(tmpdir())
    .filter((name) =>
      name.startsWith(prefix === undefined ? 'rake-testbed-' : workrootStem(prefix)),
    )
    .map((name) => join(tmpdir(), name));
  return { namespaces, links, workroots };
}

/**
 * Removes every artifact of the bed with `prefix`: kills the processes still inside its
 * namespaces, deletes its links (a veth goes with its peer, the bridge last) and namespaces,
 * its tagged firewall rules and its workroot. Synchronous, so an `exit` handler can call it.
 */
export function removeArtifacts(prefix: string): void {
  const { namespaces, links, workroots } = findArtifacts(prefix);
  for (const ns of namespaces) {
    for (const pid of lines(runCommand('ip', ['netns', 'pids', ns]))) killQuietly(Number(pid));
  }
  const bridgeLast = [...links].sort((a, b) => Number(a.endsWith('br')) - Number(b.endsWith('br')));
  const removals = [
    ...bridgeLast.map((link) => `link del ${link}`),
    ...namespaces.map((ns) => `netns del ${ns}`),
  ];
  if (removals.length > 0) runIpBatch(removals, { force: true });
  removeTaggedRules(prefix);
  for (const workroot of workroots) {
    rmSync(workroot, { recursive: true, force: true });
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function killQuietly(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function lines(result: ReturnType<typeof runCommand>): string[] {
  return result.ok ? result.stdout.split('\n').filter((line) => line.trim() !== '') : [];
}

const LOCK_DIR = join(tmpdir(), 'rake-testbed');
const SUBNETS = 256;

/** Who holds a subnet: a bed whose process is gone holds nothing. */
interface SubnetOwner {
  readonly pid: number;
  readonly prefix: string;
}

/**
 * Claims a free `10.77.<k>.0/24` for the bed with `prefix` and returns k. A lock file per
 * subnet (created exclusively) makes the claim atomic between processes; a lock whose owner
 * process is dead is reclaimed after removing what that bed left behind. Subnets with an
 * address already on some interface are skipped.
 */
export function claimSubnet(prefix: string): number {
  mkdirSync(LOCK_DIR, { recursive: true });
  const inUse = addressesInUse();
  for (let k = 0; k < SUBNETS; k++) {
    if (inUse.some((address) => address.startsWith(`10.77.${k}.`))) continue;
    const path = lockPath(k);
    for (let attempt = 0; attempt < 2; attempt++) {
      if (tryCreateLock(path, { pid: process.pid, prefix })) return k;
      const owner = readOwner(path);
      if (owner !== undefined && isAlive(owner.pid)) break;
      if (owner !== undefined) removeArtifacts(owner.prefix);
      try {
        unlinkSync(path);
      } catch {
        // another process reclaimed it first; the next attempt decides
      }
    }
  }
  throw new Error(`no free subnet among 10.77.0.0/24 … 10.77.${SUBNETS - 1}.0/24`);
}

/**
 * Removes the beds whose owning process is gone (killed before it could tear down) and frees
 * their subnets. Returns their prefixes.
 */
export function cleanupAbandoned(): string[] {
  const names = safeReaddir(LOCK_DIR);
  const removed: string[] = [];
  for (const name of names) {
    if (!/^subnet-\d+\.json$/.test(name)) continue;
    const path = join(LOCK_DIR, name);
    const owner = readOwner(path);
    if (owner === undefined || isAlive(owner.pid)) continue;
    removeArtifacts(owner.prefix);
    try {
      unlinkSync(path);
    } catch {
      // another process cleaned it up at the same time
    }
    removed.push(owner.prefix);
  }
  return removed;
}

/** Gives subnet k back, if `prefix` still holds it. */
export function releaseSubnet(k: number, prefix: string): void {
  const path = lockPath(k);
  if (readOwner(path)?.prefix !== prefix) return;
  try {
    unlinkSync(path);
  } catch {
    // already released
  }
}

function lockPath(k: number): string {
  return join(LOCK_DIR, `subnet-${k}.json`);
}

function tryCreateLock(path: string, owner: SubnetOwner): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  writeSync(fd, JSON.stringify(owner));
  closeSync(fd);
  return true;
}

function readOwner(path: string): SubnetOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(path, 'utf8')) as Partial<SubnetOwner>;
    if (typeof owner.pid === 'number' && typeof owner.prefix === 'string') {
      return { pid: owner.pid, prefix: owner.prefix };
    }
  } catch {
    // missing, or half written by a process that died at that moment
  }
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function addressesInUse(): string[] {
  return lines(runCommand('ip', ['-4', '-o', 'addr', 'show']))
    .map((line) => /inet (\S+)\//.exec(line)?.[1] ?? '')
    .filter((address) => address !== '');
}

/** Something to tear down synchronously when the process ends without having done so. */
export interface ExitHook {
  teardownSync(): void;
}

const liveBeds = new Set<ExitHook>();
let handlersInstalled = false;
const EXIT_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Makes sure `bed` is torn down however the process ends: normally, by an uncaught error or
 * unhandled rejection (both end in `exit`), or by SIGINT/SIGTERM/SIGHUP. On a signal, when
 * nobody else listens for it, the process then dies of that signal as it would have.
 * Returns the function that unregisters the bed (after a normal teardown).
 */
export function tearDownOnExit(bed: ExitHook): () => void {
  liveBeds.add(bed);
  if (!handlersInstalled) {
    handlersInstalled = true;
    process.on('exit', tearDownAll);
    for (const signal of EXIT_SIGNALS) process.on(signal, onSignal);
  }
  return () => liveBeds.delete(bed);
}

function tearDownAll(): void {
  for (const bed of [...liveBeds]) {
    liveBeds.delete(bed);
    try {
      bed.teardownSync();
    } catch (err) {
      console.error(`testbed: teardown failed: ${String(err)}`);
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  tearDownAll();
  if (process.listenerCount(signal) > 1) return; // the program handles this signal itself
  for (const each of EXIT_SIGNALS) process.removeListener(each, onSignal);
  process.kill(process.pid, signal);
}
