/**
 * Smoke spec of the multi-host test bed (scripts/testbed/): hosts are reachable at their own
 * addresses only, link shaping shows up in round trips, faults can be injected, and nothing is
 * left behind — after teardown, after Ctrl-C to the CLI, after the owning process crashes.
 * Needs root (or CAP_NET_ADMIN) for netns mode; otherwise it runs in loopback mode and every
 * test that needs namespaces skips, saying why.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  cleanupAbandoned,
  echoServerCommand,
  findArtifacts,
  isClean,
  rakeserverCommand,
  startTestbed,
  type Testbed,
} from '../../scripts/testbed/netns.js';
import { connectTime, echoRoundTrip, greeting, queryCost } from '../../scripts/testbed/probe.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = fileURLToPath(new URL('../../scripts/testbed/cli.ts', import.meta.url));
const NETNS = fileURLToPath(new URL('../../scripts/testbed/netns.ts', import.meta.url));
const PROBE_MS = 3_000;
const BED_TIMEOUT = { timeout: 90_000 };

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** `n` connect times (ms) to a host, sequentially; each attempt bounded. */
async function connectTimes(address: string, port: number, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const result = await connectTime(address, port, PROBE_MS);
    assert.ok(result.ok, `connect ${address}:${port}: ${result.ok ? '' : result.message}`);
    times.push(result.value);
  }
  return times;
}

describe('test bed with 3 hosts', BED_TIMEOUT, () => {
  let bed: Testbed;
  before(async () => {
    bed = await startTestbed({ hosts: 3, serverCommand: echoServerCommand, log: () => undefined });
  });
  after(() => bed?.teardown());

  it('gives every host its own address, and each answers as itself', async (t) => {
    t.diagnostic(`mode ${bed.mode}${bed.fallbackReason ? ` (${bed.fallbackReason})` : ''}`);
    assert.equal(new Set(bed.hosts.map((host) => host.address)).size, 3);
    for (const host of bed.hosts) {
      const answer = await greeting(host.address, host.port, PROBE_MS);
      assert.deepEqual(answer, { ok: true, value: `${host.name} ${host.address}:${host.port}` });
    }
    if (bed.mode === 'netns') {
      assert.deepEqual(
        bed.hosts.map((host) => host.address),
        ['11', '12', '13'].map((last) => `${bed.clientAddress.replace(/\.1$/, '.')}${last}`),
      );
      assert.deepEqual(
        bed.hosts.map((host) => host.namespace),
        [1, 2, 3].map((i) => `rk-${bed.prefix}-${i}`),
      );
    }
    const times = await connectTimes(bed.hosts[0]?.address ?? '', bed.hosts[0]?.port ?? 0, 5);
    t.diagnostic(`unshaped connect RTT median ${median(times).toFixed(2)} ms`);
  });

  it('isolates hosts: a server is reachable only at its own host', async () => {
    const [one, two] = bed.hosts;
    assert.ok(one !== undefined && two !== undefined);
    if (bed.mode === 'loopback') {
      // Host 1's port at host 2's address reaches nobody.
      const crossed = await greeting(two.address, one.port, PROBE_MS);
      assert.equal(crossed.ok ? 'answered' : crossed.reason, 'refused');
    } else {
      // Inside host 2's namespace, nothing listens on host 1's port but host 2's own server.
      const listening = two.exec(['ss', '-Hltn']);
      assert.ok(listening.ok, listening.ok ? '' : listening.message);
      assert.match(
        listening.stdout,
        new RegExp(`${two.address.replaceAll('.', '\\.')}:${two.port}`),
      );
      assert.doesNotMatch(listening.stdout, new RegExp(one.address.replaceAll('.', '\\.')));
    }
    // With host 2's server gone, its address answers no more: no other host stands in.
    two.kill('SIGKILL');
    assert.equal((await two.exited).signal, 'SIGKILL');
    const gone = await greeting(two.address, two.port, PROBE_MS);
    assert.equal(gone.ok ? 'answered' : gone.reason, 'refused');
    assert.equal((await greeting(one.address, one.port, PROBE_MS)).ok, true);
    const oldPid = two.pid;
    await two.restart();
    assert.notEqual(two.pid, oldPid);
    assert.equal((await greeting(two.address, two.port, PROBE_MS)).ok, true);
  });

  it('freezes and thaws a host', async () => {
    const host = bed.hosts[2];
    assert.ok(host !== undefined);
    host.freeze();
    try {
      // The kernel still completes the handshake; the stopped server never says hello.
      const silent = await greeting(host.address, host.port, 500);
      assert.equal(silent.ok ? 'answered' : silent.reason, 'timeout');
    } finally {
      host.thaw();
    }
    assert.equal((await greeting(host.address, host.port, PROBE_MS)).ok, true);
  });

  it('drops SYNs to one host on request', async (t) => {
    const support = bed.capabilities.dropSyn;
    if (!support.supported) return t.skip(support.reason);
    const [one, two] = bed.hosts;
    assert.ok(one !== undefined && two !== undefined);
    one.dropSyn(true);
    try {
      const cut = await connectTime(one.address, one.port, 700);
      assert.equal(cut.ok ? 'connected' : cut.reason, 'timeout');
      assert.equal((await connectTime(two.address, two.port, PROBE_MS)).ok, true);
    } finally {
      one.dropSyn(false);
    }
    assert.equal((await connectTime(one.address, one.port, PROBE_MS)).ok, true);
  });

  it('teardown leaves no namespace, link, bridge or workdir, and can be repeated', async (t) => {
    const prefix = bed.prefix;
    await bed.teardown();
    await bed.teardown();
    assert.deepEqual(findArtifacts(prefix), { namespaces: [], links: [], workroots: [] });
    if (bed.mode === 'netns') {
      // Straight from the tools too, not only through the bed's own bookkeeping.
      const stem = `rk-${prefix}-`;
      const netnsList = await output('ip', ['netns', 'list']);
      const linkList = await output('ip', ['-o', 'link', 'show']);
      assert.ok(!netnsList.includes(stem), netnsList);
      assert.ok(!linkList.includes(stem), linkList);
    } else {
      t.diagnostic('loopback mode: nothing but processes to remove');
    }
    assert.deepEqual(
      bed.hosts.map((host) => host.running),
      [false, false, false],
    );
    for (const host of bed.hosts) assert.throws(() => process.kill(host.pid, 0), { code: 'ESRCH' });
  });
});

describe('test bed with 20 ms of delay on each direction', BED_TIMEOUT, () => {
  const delayMs = 20;
  let bed: Testbed;
  before(async () => {
    bed = await startTestbed({
      hosts: 2,
      netem: { delayMs },
      serverCommand: echoServerCommand,
      log: () => undefined,
    });
  });
  after(() => bed?.teardown());

  it('shows the delay in every round trip (lower bound: twice the one-way delay)', async (t) => {
    const support = bed.capabilities.netem;
    if (!support.supported) return t.skip(support.reason);
    t.diagnostic(`shaping via ${support.via}`);
    for (const host of bed.hosts) {
      const connects = await connectTimes(host.address, host.port, 5);
      const echoes: number[] = [];
      for (let i = 0; i < 5; i++) {
        const rtt = await echoRoundTrip(host.address, host.port, PROBE_MS);
        assert.ok(rtt.ok, rtt.ok ? '' : rtt.message);
        echoes.push(rtt.value);
      }
      t.diagnostic(
        `${host.name}: connect RTT min ${Math.min(...connects).toFixed(1)} / median ` +
          `${median(connects).toFixed(1)} ms; echo RTT min ${Math.min(...echoes).toFixed(1)} / ` +
          `median ${median(echoes).toFixed(1)} ms`,
      );
      for (const rtt of [...connects, ...echoes]) assert.ok(rtt >= 2 * delayMs, `RTT ${rtt} ms`);
    }
  });

  it('changes and removes the shaping of one host at run time', async (t) => {
    const support = bed.capabilities.netem;
    if (!support.supported) return t.skip(support.reason);
    const host = bed.hosts[0];
    assert.ok(host !== undefined);
    await host.setNetem({ delayMs: 60 });
    const slow = await connectTimes(host.address, host.port, 3);
    assert.ok(Math.min(...slow) >= 120, `RTTs ${slow}`);
    await host.setNetem(undefined);
    const fast = await connectTimes(host.address, host.port, 3);
    t.diagnostic(
      `60 ms: min ${Math.min(...slow).toFixed(1)} ms; removed: ${median(fast).toFixed(1)} ms`,
    );
    assert.equal(host.netem, undefined);
  });
});

describe('loopback fallback', BED_TIMEOUT, () => {
  it('serves each host on 127.0.0.(1+i) with a port of its own', async () => {
    const bed = await startTestbed({
      hosts: 2,
      mode: 'loopback',
      serverCommand: echoServerCommand,
      log: () => undefined,
    });
    try {
      assert.equal(bed.mode, 'loopback');
      assert.deepEqual(
        bed.hosts.map((host) => host.address),
        ['127.0.0.2', '127.0.0.3'],
      );
      assert.notEqual(bed.hosts[0]?.port, bed.hosts[1]?.port);
      assert.equal(bed.capabilities.netem.supported, false);
      for (const host of bed.hosts) {
        assert.equal((await greeting(host.address, host.port, PROBE_MS)).ok, true);
      }
    } finally {
      await bed.teardown();
    }
  });

  it('drops SYNs in loopback mode too when root, and teardown removes the rule', async (t) => {
    const bed = await startTestbed({
      hosts: 2,
      mode: 'loopback',
      serverCommand: echoServerCommand,
      log: () => undefined,
    });
    try {
      const support = bed.capabilities.dropSyn;
      if (!support.supported) return t.skip(support.reason);
      t.diagnostic(`via ${support.via}`);
      const [one, two] = bed.hosts;
      assert.ok(one !== undefined && two !== undefined);
      one.dropSyn(true);
      const cut = await connectTime(one.address, one.port, 700);
      assert.equal(cut.ok ? 'connected' : cut.reason, 'timeout');
      assert.equal((await connectTime(two.address, two.port, PROBE_MS)).ok, true);
    } finally {
      await bed.teardown(); // with the rule still on
    }
    const rules = await output('iptables', ['-w', '5', '-S', 'INPUT']);
    assert.doesNotMatch(rules, new RegExp(`rk-testbed-${bed.prefix}\\b`));
  });

  it('is chosen, with one clear message, where namespaces are not allowed', async (t) => {
    if (!(await commandWorks('unshare', ['--user', 'true']))) {
      t.skip('unshare --user is not available to take namespace rights away');
      return;
    }
    // A user namespace without a uid mapping: not root, no CAP_SYS_ADMIN over /run/netns.
    const cli = startCli(['--hosts', '2', '--server', 'echo'], ['unshare', '--user']);
    try {
      const lines = await cli.waitForStdout(2, 30_000);
      assert.match(lines.join('\n'), /^host1 127\.0\.0\.2:\d+ \(loopback\)$/m);
      assert.match(
        cli.stderr(),
        /network namespaces not available \(.+\); using loopback ports 127\.0\.0\.x/,
      );
    } finally {
      cli.child.kill('SIGINT');
      await cli.exit(15_000);
    }
  });
});

describe('teardown when the process ends', BED_TIMEOUT, () => {
  it('the CLI prints one line per host and tears down on Ctrl-C (SIGINT)', async (t) => {
    const prefix = `c${process.pid.toString(36)}`;
    const cli = startCli([
      '--hosts',
      '2',
      '--prefix',
      prefix,
      '--delay',
      '5ms',
      '--server',
      'echo',
    ]);
    let code: number | null;
    try {
      const lines = await cli.waitForStdout(2, 30_000);
      t.diagnostic(lines.join(' | '));
      assert.match(lines[0] ?? '', /^host1 \S+:\d+ \((ns rk-\w+-1|loopback)\)$/);
      assert.match(lines[1] ?? '', /^host2 \S+:\d+ \((ns rk-\w+-2|loopback)\)$/);
      if (lines[0]?.includes('(ns ')) assert.equal(isClean(prefix), false);
    } finally {
      cli.child.kill('SIGINT');
      code = await cli.exit(15_000);
    }
    assert.equal(code, 0, cli.stderr());
    assert.match(cli.stderr(), /torn down/);
    assert.equal(isClean(prefix), true);
  });

  it('an uncaught error in the owning process still tears the bed down', async (t) => {
    const prefix = `x${process.pid.toString(36)}`;
    const script = bedScript(prefix, `setTimeout(() => { throw new Error('boom'); }, 10);`);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const cli = watch(child);
    const lines = await cli.waitForStdout(1, 30_000);
    t.diagnostic(lines.join(' '));
    const code = await cli.exit(15_000);
    assert.notEqual(code, 0);
    assert.match(cli.stderr(), /boom/);
    assert.equal(isClean(prefix), true);
  });
});

describe('beds whose process was killed', BED_TIMEOUT, () => {
  it('are removed by cleanupAbandoned (which every new bed runs first)', async (t) => {
    const prefix = `k${process.pid.toString(36)}`;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', bedScript(prefix, '')],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const watched = watch(child);
    const [line] = await watched.waitForStdout(1, 30_000);
    if (line !== 'started netns') {
      child.kill('SIGTERM'); // loopback beds are not tracked across processes: tear down
      await watched.exit(15_000);
      return t.skip(`needs netns mode (${line})`);
    }
    child.kill('SIGKILL'); // no handler runs: the bed is left behind
    await watched.exit(15_000);
    assert.equal(isClean(prefix), false);
    assert.ok(cleanupAbandoned().includes(prefix));
    assert.equal(isClean(prefix), true);
  });
});

describe('with the real rakeserver', BED_TIMEOUT, () => {
  it('answers a cost query on every host', async (t) => {
    if (!existsSync(`${REPO_ROOT}src/cli/rakeserver.ts`)) {
      t.skip('rakeserver not written yet (src/cli/rakeserver.ts is missing)');
      return;
    }
    const bed = await startTestbed({
      hosts: 2,
      serverCommand: rakeserverCommand,
      log: () => undefined,
    });
    try {
      for (const host of bed.hosts) {
        const cost = await queryCost(host.address, host.port, PROBE_MS);
        assert.ok(cost.ok, cost.ok ? '' : `${cost.message}\n${host.output()}`);
        assert.ok(Number.isInteger(cost.value) && cost.value >= 0, `cost ${cost.value}`);
      }
    } finally {
      await bed.teardown();
    }
  });
});

/** A child program that starts a 2-host bed with `prefix`, says so, then runs `then`. */
function bedScript(prefix: string, then: string): string {
  return `
    const { echoServerCommand, startTestbed } = await import(${JSON.stringify(NETNS)});
    const bed = await startTestbed({
      hosts: 2, namePrefix: '${prefix}', serverCommand: echoServerCommand, log: () => {},
    });
    console.log('started ' + bed.mode);
    setInterval(() => {}, 60_000);
    ${then}`;
}

/** A child process whose output is collected, with bounded waits for its lines and its exit. */
interface Watched {
  readonly child: ChildProcess;
  stderr(): string;
  waitForStdout(lines: number, timeoutMs: number): Promise<string[]>;
  exit(timeoutMs: number): Promise<number | null>;
}

function startCli(args: readonly string[], wrapper: readonly string[] = []): Watched {
  const argv = [...wrapper, process.execPath, '--import', 'tsx', CLI, ...args];
  const [command, ...rest] = argv as [string, ...string[]];
  return watch(spawn(command, rest, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
}

function watch(child: ChildProcess): Watched {
  let stdout = '';
  let stderr = '';
  let wake: () => void = () => undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => {
      wake();
      resolve(code);
    });
  });
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    wake();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  return {
    child,
    stderr: () => stderr,
    async waitForStdout(count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const lines = stdout.split('\n').filter((line) => line !== '');
        if (lines.length >= count) return lines;
        const left = deadline - Date.now();
        if (left <= 0 || child.exitCode !== null || child.signalCode !== null) {
          throw new Error(
            `wanted ${count} lines, got ${JSON.stringify(stdout)}; stderr: ${stderr}`,
          );
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    },
    async exit(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const result = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (result === 'timeout') {
        child.kill('SIGKILL');
        throw new Error(`did not exit within ${timeoutMs} ms; stderr: ${stderr}`);
      }
      return result;
    },
  };
}

async function output(command: string, args: readonly string[]): Promise<string> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const watched = watch(child);
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
  });
  await watched.exit(10_000);
  return text;
}

async function commandWorks(command: string, args: readonly string[]): Promise<boolean> {
  const child = spawn(command, args, { stdio: 'ignore', timeout: 10_000 });
  return new Promise((resolve) => {
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
}
