/**
 * Scale (issue 20): every row of the issue's target table in one script, each measured
 * against its baseline in the same rounds (interleaved, the order rotating from round to
 * round), medians and ranges over `--runs` rounds, and the load average (1 minute) read at
 * the start of every round printed beside each figure. With `--baseline REV` (default
 * {@link SCALE_BASELINE}, the commit main was at when this work began; `--baseline none` to
 * skip), rake-ts as it was at REV is a fourth column: compiled whole from git
 * (lib/proc.ts `compileBaseline`), with servers of its own, measured in the same rounds.
 *
 *   node --import tsx scripts/bench/scale.ts [--runs 5] [--rows make,true,sleep8,...]
 *                                            [--baseline REV|none] [--cpu-hosts 1,2,4,...,64]
 *                                            [--now-flags='--no-load-streams']
 *                                            [--now-flags='--dispatch-queue 0;--dispatch-queue 1']
 *
 * `--now-flags` with `;` makes one side of this tree per flag set, all measured in the same
 * rounds (interleaved): e.g. the dispatch queue at 0, 1, 2 and 4 against each other.
 *                                            [--baseline-flags=--no-load-streams]
 *
 * Rows (`--rows`, default all):
 * - `make`    100 C units + link on 2 one-slot servers against `make -j2` (compare.ts's
 *             build, distcc beside it when installed).
 * - `true`    500 × `remote-true` on 2 one-slot servers against `xargs -P2 -n1 sh -c true`.
 * - `sleep8`  400 × `remote-sleep 0.1` on 8 one-slot servers: efficiency = ideal 5.0 s / wall.
 * - `sleep64` 2,000 × `remote-sleep 0.2` on 64 one-slot servers: ideal 6.25 s.
 * - `two`     2 clients at once, each 200 × `remote-sleep 0.1`, on the same 4 one-slot
 *             servers: each client's wall against the ideal 10 s.
 * - `cpu`     client CPU per action and efficiency at 1 … 64 hosts (25 × `remote-sleep 0.1`
 *             per host, ideal 2.5 s; CPU per action = (CPU of N actions − CPU of 1 action) /
 *             (N − 1), per round), and the chart data (`.bench/suite/scale/scale-hosts.svg`);
 *             and, at every host count, (CPU of 1,600 − CPU of 800 `remote-true`) / 800: one
 *             more action's CPU, the hosts' connections and streams paid for either way.
 * - `conns`   TCP connections the servers accepted per action: 400 × `remote-sleep 0.1` on 8
 *             one-slot servers, each behind a counting TCP proxy in this process.
 * - `rtt`     compiles at 20 ms RTT on the netns test bed (scripts/testbed/): the first action
 *             of a run and a later one (next actionset, warm connections), each traced
 *             (`--trace`) beyond the compile itself (the command's run time in the server's
 *             `job end` log), in measured round trips; the whole client (spawn to exit)
 *             beyond both compiles beside them; and, from a `tcpdump` of the last
 *             round in the host's namespace, every connection's turns (SYN, cost query,
 *             hello/ok, job → reply, ...). Needs root (network namespaces; tcpdump for the
 *             list: scripts/testbed/install-tools.sh); says why not otherwise.
 *
 * Every server is a compiled `rakeserver --max-jobs 1` on loopback (default logging). The
 * client is the compiled CLI as users start it, with compare.ts's flags (`-q
 * --progress=never --no-embedded --no-fallback`), timed from spawn to exit, its CPU from
 * `process.cpuUsage()` as it exits (lib/cpu-usage.cjs preloaded: microseconds, where GNU time
 * counts 10 ms ticks). Progress goes to stderr; the Markdown goes to stdout.
 */

import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, connect as tcpConnect } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { lineChart } from './charts.js';
import { compareMarkdown, RAKE_FLAGS, runCompare, SERVER_FLAGS } from './compare.js';
import { markdownTable } from './lib/markdown.js';
import { type CapturedConnection, readCapture } from './lib/pcap.js';
import {
  compilePrograms,
  compileRev,
  type Daemon,
  haveCommand,
  type Programs,
  progress,
  runChecked,
  runNodeWithCpu,
  SCRATCH,
  startRakeservers,
} from './lib/proc.js';
import { CFLAGS, writeCProject } from './lib/project.js';
import { formatSpread, median, ratios, spread } from './lib/stats.js';
import { readTrace } from './lib/trace.js';

/** The commit main was at when issue 20's work began: the default fourth column. */
export const SCALE_BASELINE = 'f774e28';

export const ROWS = ['make', 'true', 'sleep8', 'sleep64', 'two', 'cpu', 'conns', 'rtt'] as const;
export type RowName = (typeof ROWS)[number];

/** One rake-ts to measure: this tree's, or the baseline's. */
interface Side {
  readonly label: string;
  readonly programs: Programs;
  /** Client flags of this side only (`--now-flags`, e.g. `--load-streams`). */
  readonly flags?: readonly string[];
}

/**
 * Generous time-outs: with 64 servers on a loaded 2-core machine a server can take more than
 * the default 2 s to accept or answer, and the run would fail (no host) instead of being slow.
 * A run where every host answers in time is not changed by them.
 */
export const SCALE_CLIENT_FLAGS = ['--connect-timeout=10', '--cost-timeout=10'] as const;

/** The 1-minute load average now. */
const load1 = () => loadavg()[0] ?? Number.NaN;

/** `load 1.2 (0.9–2.0)`: the load averages read at the start of each round. */
const loadText = (loads: readonly number[]) => `load ${formatSpread(spread(loads), 1)}`;

const f2 = (v: readonly number[], digits = 2) =>
  v.length === 0 ? '–' : formatSpread(spread(v), digits);

/** A Rakefile of one actionset: `count` × `command` (no requirements). */
function writeRepeatRakefile(dir: string, count: number, command: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `Rakefile.${count}`);
  const lines = ['PORT = 6238', 'HOSTS = localhost', '', 'run:'];
  for (let i = 0; i < count; i++) lines.push(`\t${command}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** The `--hosts`/`--port` flags pointing a Rakefile at `servers`. */
function hostFlags(servers: readonly { host: string; port: number }[]): string[] {
  return [
    '--hosts',
    servers.map((s) => `${s.host}:${s.port}`).join(' '),
    '--port',
    String(servers[0]?.port ?? 6238),
  ];
}

/**
 * One client run, checked: wall seconds and the client's CPU seconds, to the microsecond
 * (lib/cpu-usage.cjs preloaded: `process.cpuUsage()` at exit; lib/proc.ts `runNodeWithCpu`).
 */
async function runClient(
  side: Side,
  dir: string,
  rakefile: string,
  servers: readonly { host: string; port: number }[],
  extra: readonly string[] = [],
): Promise<{ seconds: number; cpu: number; gnuCpu: number }> {
  const r = await runNodeWithCpu(
    side.programs.rake,
    [
      '-f',
      rakefile,
      ...RAKE_FLAGS,
      ...SCALE_CLIENT_FLAGS,
      ...(side.flags ?? []),
      ...hostFlags(servers),
      ...extra,
    ],
    { cwd: dir },
  );
  return { seconds: r.seconds, cpu: r.cpuSeconds, gnuCpu: r.gnuCpuSeconds };
}

/** `n` one-slot servers of each side, keyed by the side's label. */
async function serversPerSide(
  sides: readonly Side[],
  n: number,
  dir: string,
): Promise<Map<string, Daemon[]>> {
  const out = new Map<string, Daemon[]>();
  for (const s of sides) {
    out.set(s.label, await startRakeservers(s.programs, n, SERVER_FLAGS, join(dir, s.label)));
  }
  return out;
}

async function stopAll(m: Map<string, Daemon[]>): Promise<void> {
  await Promise.all([...m.values()].flat().map((d) => d.stop()));
}

/** The sides of round `r`, rotated so no side always goes first. */
const rotated = <T>(xs: readonly T[], r: number): T[] => [
  ...xs.slice(r % xs.length),
  ...xs.slice(0, r % xs.length),
];

/** A row's Markdown: its heading line, its table, its notes. */
interface RowResult {
  readonly row: RowName;
  readonly markdown: string;
}

// ---------------------------------------------------------------------------------------------

async function rowMake(o: ScaleOptions): Promise<RowResult> {
  const before = o.sides.find((s) => s !== o.now);
  const loads = [load1()];
  const r = await runCompare({
    programs: o.now.programs,
    units: [100],
    hosts: 2,
    runs: o.runs,
    dir: join(o.dir, 'make'),
    ...(before === undefined
      ? {}
      : { baseline: before.programs, baselineUnits: [100], baselineRev: o.baselineRev ?? '' }),
  });
  loads.push(load1());
  return {
    row: 'make',
    markdown: [
      `100 small C units + link, 2 one-slot servers, against \`make -j2\` (compare.ts; ${loadText(loads)}, read before and after the row; target rake-ts / make ≤ 1.25):`,
      '',
      compareMarkdown(r),
    ].join('\n'),
  };
}

async function rowTrue(o: ScaleOptions): Promise<RowResult> {
  const dir = join(o.dir, 'true');
  const rakefile = writeRepeatRakefile(dir, 500, 'remote-true');
  const servers = await serversPerSide(o.sides, 2, join(dir, 'servers'));
  const wall = new Map<string, number[]>([['xargs', []]]);
  for (const s of o.sides) wall.set(s.label, []);
  const loads: number[] = [];
  try {
    // Warm the servers (spawn helper, V8's optimizing compiles), untimed.
    for (const s of o.sides) await runClient(s, dir, rakefile, servers.get(s.label) ?? []);
    const xargsInput = `${Array.from({ length: 500 }, (_, i) => String(i)).join('\n')}\n`;
    for (let r = 0; r < o.runs; r++) {
      loads.push(load1());
      for (const who of rotated(['xargs', ...o.sides.map((s) => s.label)], r)) {
        let seconds: number;
        if (who === 'xargs') {
          seconds = (
            await runChecked(['xargs', '-P2', '-n1', 'sh', '-c', 'true'], {
              cwd: dir,
              input: xargsInput,
            })
          ).seconds;
        } else {
          const side = o.sides.find((s) => s.label === who) as Side;
          seconds = (await runClient(side, dir, rakefile, servers.get(who) ?? [])).seconds;
        }
        wall.get(who)?.push(seconds);
      }
      progress(
        `true round ${r + 1}/${o.runs}: ${[...wall].map(([k, v]) => `${k} ${v.at(-1)?.toFixed(2)} s`).join(', ')}`,
      );
    }
  } finally {
    await stopAll(servers);
  }
  const x = wall.get('xargs') ?? [];
  const rows = [['', 'wall (s)', '/ xargs -P2', 'load']];
  rows.push(['`xargs -P2 -n1 sh -c true`', f2(x), '1', loadText(loads)]);
  for (const s of o.sides) {
    const w = wall.get(s.label) ?? [];
    rows.push([s.label, f2(w), `**${f2(ratios(w, x))}**`, loadText(loads)]);
  }
  return {
    row: 'true',
    markdown: [
      `500 × \`remote-true\`, 2 one-slot servers, against \`xargs -P2 -n1 sh -c true\` over 500 lines (target ≤ 2.0):`,
      '',
      markdownTable(rows),
    ].join('\n'),
  };
}

/** N × `remote-sleep S` on H one-slot servers: wall and efficiency (ideal / wall). */
async function sleepRow(
  o: ScaleOptions,
  row: RowName,
  count: number,
  sleep: number,
  hosts: number,
  target: string,
): Promise<RowResult> {
  const dir = join(o.dir, row);
  const rakefile = writeRepeatRakefile(dir, count, `remote-sleep ${sleep}`);
  const ideal = (count * sleep) / hosts;
  progress(`${row}: starting ${hosts} servers per side`);
  const servers = await serversPerSide(o.sides, hosts, join(dir, 'servers'));
  const wall = new Map<string, number[]>(o.sides.map((s) => [s.label, []]));
  const cpu = new Map<string, number[]>(o.sides.map((s) => [s.label, []]));
  const loads: number[] = [];
  try {
    for (const s of o.sides) await runClient(s, dir, rakefile, servers.get(s.label) ?? []);
    for (let r = 0; r < o.runs; r++) {
      loads.push(load1());
      for (const s of rotated(o.sides, r)) {
        const x = await runClient(s, dir, rakefile, servers.get(s.label) ?? []);
        wall.get(s.label)?.push(x.seconds);
        cpu.get(s.label)?.push(x.cpu);
      }
      progress(
        `${row} round ${r + 1}/${o.runs}: ${[...wall].map(([k, v]) => `${k} ${v.at(-1)?.toFixed(2)} s`).join(', ')}`,
      );
    }
  } finally {
    await stopAll(servers);
  }
  const rows = [
    ['', 'wall (s)', `efficiency (ideal ${ideal.toFixed(2)} s / wall)`, 'client CPU (s)', 'load'],
  ];
  for (const s of o.sides) {
    const w = wall.get(s.label) ?? [];
    rows.push([
      s.label,
      f2(w),
      `**${f2(
        w.map((x) => (100 * ideal) / x),
        0,
      )} %**`,
      f2(cpu.get(s.label) ?? []),
      loadText(loads),
    ]);
  }
  return {
    row,
    markdown: [
      `${count.toLocaleString('en')} × \`remote-sleep ${sleep}\`, ${hosts} one-slot servers (ideal ${ideal.toFixed(2)} s; target ${target}):`,
      '',
      markdownTable(rows),
    ].join('\n'),
  };
}

async function rowTwo(o: ScaleOptions): Promise<RowResult> {
  const dir = join(o.dir, 'two');
  const rakefile = writeRepeatRakefile(dir, 200, 'remote-sleep 0.1');
  const servers = await serversPerSide(o.sides, 4, join(dir, 'servers'));
  const ideal = 10;
  // Per side: the wall of each client of each round (both clients' figures in one list),
  // and the worse of the two per round.
  const each = new Map<string, number[]>(o.sides.map((s) => [s.label, []]));
  const worst = new Map<string, number[]>(o.sides.map((s) => [s.label, []]));
  const loads: number[] = [];
  try {
    for (let r = 0; r < o.runs; r++) {
      loads.push(load1());
      for (const s of rotated(o.sides, r)) {
        const sv = servers.get(s.label) ?? [];
        const both = await Promise.all([
          runClient(s, dir, rakefile, sv),
          runClient(s, dir, rakefile, sv),
        ]);
        each.get(s.label)?.push(...both.map((b) => b.seconds));
        worst.get(s.label)?.push(Math.max(...both.map((b) => b.seconds)));
      }
      progress(
        `two round ${r + 1}/${o.runs}: ${[...worst].map(([k, v]) => `${k} worse client ${v.at(-1)?.toFixed(2)} s`).join(', ')}`,
      );
    }
  } finally {
    await stopAll(servers);
  }
  const rows = [['', 'each client (s)', 'the later client (s)', 'the later / ideal 10 s', 'load']];
  for (const s of o.sides) {
    const w = worst.get(s.label) ?? [];
    rows.push([
      s.label,
      f2(each.get(s.label) ?? []),
      f2(w),
      `**${f2(w.map((x) => x / ideal))}**`,
      loadText(loads),
    ]);
  }
  return {
    row: 'two',
    markdown: [
      `2 clients at once, each 200 × \`remote-sleep 0.1\`, on the same 4 one-slot servers (ideal 10 s for both; target: both within 15 %, i.e. the later ≤ 1.15):`,
      '',
      markdownTable(rows),
    ].join('\n'),
  };
}

/** Client CPU per action and efficiency against host count. */
/**
 * The `cpu` row's fixed workloads: FIXED and 2 × FIXED `remote-true` at every host count; the
 * CPU between the two, per action, is what one more action costs with the hosts' connections
 * and streams already paid for (a cost per host, not per action).
 */
const FIXED = 800;

async function rowCpu(o: ScaleOptions): Promise<RowResult> {
  const dir = join(o.dir, 'cpu');
  const perHost = 25;
  const sleep = 0.1;
  const maxHosts = Math.max(...o.cpuHosts);
  progress(`cpu: starting ${maxHosts} servers per side`);
  const servers = await serversPerSide(o.sides, maxHosts, join(dir, 'servers'));
  const one = writeRepeatRakefile(dir, 1, `remote-sleep ${sleep}`);
  // The same work at every host count too: at 25 actions per host a 2-host run has 50, where
  // the 1-action run's spread (about ±10 ms) is ±0.2 ms per action, V8 has optimized less of
  // the client than in a 1,600-action run, and each host's connections and streams (a cost
  // per host) are shared by 25 actions at every count. FIXED and 2 × FIXED `remote-true` at
  // every count: the CPU between them is one more action's, whatever the per-host costs.
  const fixedOne = join(dir, 'fixed-one');
  const fixedMany = join(dir, 'fixed-many');
  const fixedOneFile = writeRepeatRakefile(fixedOne, FIXED, 'remote-true');
  const fixedManyFile = writeRepeatRakefile(fixedMany, 2 * FIXED, 'remote-true');
  type Cell = { perAction: number[]; eff: number[]; loads: number[]; fixed: number[] };
  // GNU time's CPU minus the preload's, per client run (ms): what the preload leaves out.
  const gnuMinusPreload: number[] = [];
  const cells = new Map<string, Cell>();
  const key = (label: string, h: number) => `${label}@${h}`;
  for (const s of o.sides) {
    for (const h of o.cpuHosts) {
      cells.set(key(s.label, h), { perAction: [], eff: [], loads: [], fixed: [] });
    }
  }
  try {
    for (const s of o.sides) await runClient(s, dir, one, servers.get(s.label) ?? []);
    for (let r = 0; r < o.runs; r++) {
      for (const h of o.cpuHosts) {
        const n = perHost * h;
        const many = writeRepeatRakefile(dir, n, `remote-sleep ${sleep}`);
        const ideal = perHost * sleep;
        for (const s of rotated(o.sides, r)) {
          const sv = (servers.get(s.label) ?? []).slice(0, h);
          const cell = cells.get(key(s.label, h)) as Cell;
          cell.loads.push(load1());
          const a = await runClient(s, dir, one, sv);
          const b = await runClient(s, dir, many, sv);
          cell.perAction.push((1000 * (b.cpu - a.cpu)) / (n - 1));
          gnuMinusPreload.push(1000 * (a.gnuCpu - a.cpu), 1000 * (b.gnuCpu - b.cpu));
          cell.eff.push((100 * ideal) / b.seconds);
          const c = await runClient(s, fixedOne, fixedOneFile, sv);
          const d = await runClient(s, fixedMany, fixedManyFile, sv);
          cell.fixed.push((1000 * (d.cpu - c.cpu)) / FIXED);
        }
      }
      progress(`cpu round ${r + 1}/${o.runs} done`);
    }
  } finally {
    await stopAll(servers);
  }
  const rows = [
    [
      'hosts',
      'actions',
      ...o.sides.flatMap((s) => [
        `${s.label}: CPU per action (ms)`,
        `${s.label}: efficiency`,
        `${s.label}: CPU per action, ${FIXED} → ${2 * FIXED} × true (ms)`,
      ]),
      'load',
    ],
  ];
  for (const h of o.cpuHosts) {
    const c = (s: Side) => cells.get(key(s.label, h)) as Cell;
    rows.push([
      String(h),
      String(perHost * h),
      ...o.sides.flatMap((s) => [f2(c(s).perAction), `${f2(c(s).eff, 0)} %`, f2(c(s).fixed, 3)]),
      loadText(o.sides.flatMap((s) => c(s).loads)),
    ]);
  }
  // Flatness: the largest median CPU per action over the smallest, from 2 hosts on.
  const flatness = (pick: (c: Cell) => number[]) =>
    o.sides.map((s) => {
      const m = o.cpuHosts
        .filter((h) => h >= 2)
        .map((h) => median(pick(cells.get(key(s.label, h)) as Cell)));
      return `${s.label} ${(Math.max(...m) / Math.min(...m)).toFixed(2)}`;
    });
  const flat = flatness((c) => c.perAction);
  const flatFixed = flatness((c) => c.fixed);
  const point = (v: number[], h: number) => {
    const sp = spread(v);
    return { x: h, y: sp.median, lo: sp.min, hi: sp.max };
  };
  const chartDir = join(o.dir);
  writeFileSync(
    join(chartDir, 'scale-hosts-cpu.svg'),
    lineChart({
      title: 'Client CPU per action against hosts',
      xLabel: `hosts (one slot each; ${perHost} × remote-sleep ${sleep} per host)`,
      yLabel: 'client CPU per action (ms)',
      log2X: true,
      series: o.sides.map((s) => ({
        label: s.label,
        points: o.cpuHosts.map((h) => point(cells.get(key(s.label, h))?.perAction ?? [], h)),
      })),
    }),
  );
  writeFileSync(
    join(chartDir, 'scale-hosts-efficiency.svg'),
    lineChart({
      title: 'Efficiency (ideal / wall) against hosts',
      xLabel: `hosts (one slot each; ${perHost} × remote-sleep ${sleep} per host)`,
      yLabel: 'efficiency (%)',
      log2X: true,
      refLines: [{ value: 100, label: 'ideal', dashed: true }],
      series: o.sides.map((s) => ({
        label: s.label,
        points: o.cpuHosts.map((h) => point(cells.get(key(s.label, h))?.eff ?? [], h)),
      })),
    }),
  );
  return {
    row: 'cpu',
    markdown: [
      `Client CPU per action and efficiency against host count: ${perHost} × \`remote-sleep ${sleep}\` per host (ideal ${(perHost * sleep).toFixed(1)} s), one-slot servers; CPU per action = (CPU of the N-action run − CPU of a 1-action run) / (N − 1), per round, each client's CPU to the microsecond (\`process.cpuUsage()\` as it exits, scripts/bench/lib/cpu-usage.cjs preloaded); GNU time's figure for the same runs (10 ms ticks) minus it: ${f2(gnuMinusPreload, 1)} ms a run. Largest / smallest median CPU per action from 2 hosts on (target ≤ 1.2): ${flat.join(', ')}; with the same work at every host count (last column: (CPU of ${2 * FIXED} − CPU of ${FIXED} \`remote-true\`) / ${FIXED}, one more action's CPU once every host's connections and streams are paid for): ${flatFixed.join(', ')}. Charts: ${join(chartDir, 'scale-hosts-cpu.svg')}, ${join(chartDir, 'scale-hosts-efficiency.svg')}.`,
      '',
      markdownTable(rows),
    ].join('\n'),
  };
}

/** A TCP proxy in this process that counts the connections it accepts. */
interface CountingProxy {
  readonly host: string;
  readonly port: number;
  accepted: number;
  close(): Promise<void>;
}

function countingProxy(to: { host: string; port: number }): Promise<CountingProxy> {
  return new Promise((resolve, reject) => {
    const sockets = new Set<import('node:net').Socket>();
    const server: Server = createServer((client) => {
      proxy.accepted += 1;
      const upstream = tcpConnect({ host: to.host, port: to.port });
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    const proxy: CountingProxy = {
      host: '127.0.0.1',
      port: 0,
      accepted: 0,
      close: () =>
        new Promise<void>((done) => {
          for (const s of sockets) s.destroy();
          server.close(() => done());
        }),
    };
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      (proxy as { port: number }).port = (server.address() as { port: number }).port;
      resolve(proxy);
    });
  });
}

async function rowConns(o: ScaleOptions): Promise<RowResult> {
  const dir = join(o.dir, 'conns');
  const count = 400;
  const hosts = 8;
  const rakefile = writeRepeatRakefile(dir, count, 'remote-sleep 0.1');
  const servers = await serversPerSide(o.sides, hosts, join(dir, 'servers'));
  const proxies = new Map<string, CountingProxy[]>();
  for (const s of o.sides) {
    proxies.set(s.label, await Promise.all((servers.get(s.label) ?? []).map(countingProxy)));
  }
  const perAction = new Map<string, number[]>(o.sides.map((s) => [s.label, []]));
  const loads: number[] = [];
  try {
    for (let r = 0; r < o.runs; r++) {
      loads.push(load1());
      for (const s of rotated(o.sides, r)) {
        const px = proxies.get(s.label) ?? [];
        const before = px.reduce((n, p) => n + p.accepted, 0);
        await runClient(s, dir, rakefile, px);
        const accepted = px.reduce((n, p) => n + p.accepted, 0) - before;
        perAction.get(s.label)?.push(accepted / count);
      }
      progress(
        `conns round ${r + 1}/${o.runs}: ${[...perAction].map(([k, v]) => `${k} ${((v.at(-1) ?? 0) * count).toFixed(0)} connections`).join(', ')}`,
      );
    }
  } finally {
    await Promise.all([...proxies.values()].flat().map((p) => p.close()));
    await stopAll(servers);
  }
  const rows = [['', 'connections accepted', 'per action', 'load']];
  for (const s of o.sides) {
    const v = perAction.get(s.label) ?? [];
    rows.push([
      s.label,
      f2(
        v.map((x) => x * count),
        0,
      ),
      `**${f2(v)}**`,
      loadText(loads),
    ]);
  }
  return {
    row: 'conns',
    markdown: [
      `TCP connections accepted by the servers per action: ${count} × \`remote-sleep 0.1\` on ${hosts} one-slot servers, each behind a TCP proxy in the benchmark that counts the connections it accepts (target ≤ 1 per action + 1 per host per run, i.e. ≤ ${(1 + hosts / count).toFixed(2)}):`,
      '',
      markdownTable(rows),
    ].join('\n'),
  };
}

/** The `job end` lines a rakeserver logged (JSON): command and the command's own run time. */
function jobEnds(output: string): { command: string; durationMs: number }[] {
  const ends: { command: string; durationMs: number }[] = [];
  for (const line of output.split('\n')) {
    if (!line.includes('"job end"')) continue;
    try {
      const j = JSON.parse(line) as { command?: string; durationMs?: number };
      if (typeof j.command === 'string' && typeof j.durationMs === 'number') {
        ends.push({ command: j.command, durationMs: j.durationMs });
      }
    } catch {
      // not a JSON line
    }
  }
  return ends;
}

/** `tcpdump` on a test-bed host's link while `work` runs; the capture's connections after. */
async function captured<T>(
  host: { namespace: string | undefined; port: number },
  file: string,
  work: () => Promise<T>,
): Promise<{ value: T; connections: CapturedConnection[] | string }> {
  if (host.namespace === undefined || !haveCommand('tcpdump')) {
    return {
      value: await work(),
      connections: 'tcpdump not installed (scripts/testbed/install-tools.sh)',
    };
  }
  rmSync(file, { force: true });
  const dump = spawn(
    'ip',
    [
      'netns',
      'exec',
      host.namespace,
      'tcpdump',
      '-i',
      'eth0',
      // Without it, packets wait in the kernel's capture buffer and are lost at SIGINT.
      '--immediate-mode',
      '-U',
      '-s',
      '512',
      '-w',
      file,
      'tcp',
      'port',
      String(host.port),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let said = '';
  const listening = new Promise<boolean>((resolve) => {
    dump.stderr.on('data', (d: Buffer) => {
      said += d.toString();
      if (said.includes('listening on')) resolve(true);
    });
    dump.on('exit', () => resolve(false));
  });
  if (!(await listening))
    return { value: await work(), connections: `tcpdump failed: ${said.trim()}` };
  const exited = new Promise((resolve) => dump.on('exit', resolve));
  try {
    const value = await work();
    return { value, connections: [] };
  } finally {
    dump.kill('SIGINT');
    await exited;
    progress(`tcpdump: ${said.trim().replace(/\n/g, '; ')}`);
  }
}

async function rowRtt(o: ScaleOptions): Promise<RowResult> {
  const dir = join(o.dir, 'rtt');
  const rtt = 20;
  let startTestbed: typeof import('../testbed/netns.js').startTestbed;
  let connectTime: typeof import('../testbed/probe.js').connectTime;
  try {
    ({ startTestbed } = await import('../testbed/netns.js'));
    ({ connectTime } = await import('../testbed/probe.js'));
  } catch (err) {
    return {
      row: 'rtt',
      markdown: `One compile at ${rtt} ms RTT: not measured (${(err as Error).message}).`,
    };
  }
  const why = (m: string) => ({
    row: 'rtt' as const,
    markdown: `One compile at ${rtt} ms RTT on the netns test bed: not measured (${m}).`,
  });
  if (process.getuid?.() !== 0) return why('needs root for network namespaces');
  // One host per side: this tree's server on host1, the baseline's on host2, same delay.
  let bed: Awaited<ReturnType<typeof startTestbed>>;
  try {
    bed = await startTestbed({
      hosts: o.sides.length,
      mode: 'netns',
      netem: { delayMs: rtt / 2 },
      serverCommand: (address, port, host) => {
        const side = o.sides[host.index - 1] ?? o.now;
        return [
          process.execPath,
          side.programs.rakeserver,
          '--host',
          address,
          '--port',
          String(port),
          '--workdir',
          host.workdir,
          ...SERVER_FLAGS,
        ];
      },
      log: (m) => progress(`testbed: ${m}`),
    });
  } catch (err) {
    return why((err as Error).message);
  }
  // Per side, the first action of a run and the later one (warm connections), each beyond
  // its compile: the traced action's wall time minus the command's run time on the server.
  const beyond = new Map<string, { first: number[]; later: number[]; whole: number[] }>(
    o.sides.map((s) => [s.label, { first: [], later: [], whole: [] }]),
  );
  const capture = new Map<string, CapturedConnection[] | string>();
  const loads: number[] = [];
  const rtts: number[] = [];
  const compiles: number[] = [];
  try {
    if (!bed.capabilities.netem.supported)
      return why(`link delay unsupported: ${bed.capabilities.netem.reason}`);
    if (bed.mode !== 'netns')
      return why(`the test bed fell back to ${bed.mode}: ${bed.fallbackReason}`);
    for (let r = 0; r < o.runs; r++) {
      loads.push(load1());
      const h1 = bed.hosts[0];
      if (h1 !== undefined) {
        const c = await connectTime(h1.address, h1.port, 5000);
        if (c.ok) rtts.push(c.value);
      }
      for (const s of rotated(o.sides, r)) {
        const i = o.sides.indexOf(s);
        const h = bed.hosts[i];
        if (h === undefined) continue;
        // New contents every time: the upload is measured, not the server's input cache.
        const p = writeCProject(
          join(dir, `p-${s.label}`),
          2,
          { hosts: [`${h.address}:${h.port}`], port: h.port },
          `${r} ${Date.now()}`,
        );
        // Two actionsets, one after the other: the first action of the run, then a later one.
        const two = join(p.dir, 'Rakefile.two');
        writeFileSync(
          two,
          `PORT = ${h.port}\nHOSTS = ${h.address}:${h.port}\n\nfirst:\n\tremote-cc ${CFLAGS} -c u0.c\n\t\trequires u0.c common.h\n\nlater:\n\tremote-cc ${CFLAGS} -c u1.c\n\t\trequires u1.c common.h\n`,
        );
        const trace = join(p.dir, 'trace.json');
        const logged = jobEnds(h.output()).length;
        const run = () =>
          runChecked(
            [
              process.execPath,
              s.programs.rake,
              '-f',
              two,
              ...RAKE_FLAGS,
              ...(s.flags ?? []),
              '--trace',
              trace,
            ],
            { cwd: p.dir },
          );
        // The last round's packets are kept: the round trips of each connection, listed.
        let finished: Awaited<ReturnType<typeof run>>;
        if (r === o.runs - 1) {
          const c = await captured(h, join(p.dir, 'link.pcap'), run);
          finished = c.value;
          capture.set(
            s.label,
            typeof c.connections === 'string'
              ? c.connections
              : readCapture(join(p.dir, 'link.pcap'), h.port),
          );
        } else {
          finished = await run();
        }
        const actions = [...readTrace(trace).actions].sort((a, b) => a.startMs - b.startMs);
        const ends = jobEnds(h.output()).slice(logged);
        const b = beyond.get(s.label);
        // The whole client, spawn to exit, beyond both compiles: what a wait moved out of the
        // traced actions (before the first, say) would still show here.
        let whole = finished.seconds * 1000;
        for (const [k, unit] of ['u0', 'u1'].entries()) {
          const action = actions.find((a) => a.name.includes(`${unit}.c`));
          const end = ends.find((e) => e.command.includes(`${unit}.c`));
          if (action === undefined || end === undefined) {
            throw new Error(`rtt: no traced action or server log for ${unit}.c (${trace})`);
          }
          compiles.push(end.durationMs);
          whole -= end.durationMs;
          (k === 0 ? b?.first : b?.later)?.push(action.wallMs - end.durationMs);
        }
        b?.whole.push(whole);
      }
      progress(
        `rtt round ${r + 1}/${o.runs}: ${[...beyond].map(([k, v]) => `${k} first ${v.first.at(-1)?.toFixed(1)} ms, later ${v.later.at(-1)?.toFixed(1)} ms beyond the compile`).join('; ')}`,
      );
    }
  } finally {
    await bed.teardown();
  }
  const m = median(rtts);
  const inRtts = (v: readonly number[]) =>
    `**${f2(
      v.map((x) => x / m),
      1,
    )}**`;
  const rows = [
    [
      '',
      'first action (ms)',
      'in RTTs',
      'later action (ms)',
      'in RTTs',
      'whole client (ms)',
      'load',
    ],
  ];
  for (const s of o.sides) {
    const v = beyond.get(s.label) ?? { first: [], later: [], whole: [] };
    rows.push([
      s.label,
      f2(v.first, 1),
      inRtts(v.first),
      f2(v.later, 1),
      inRtts(v.later),
      f2(v.whole, 1),
      loadText(loads),
    ]);
  }
  const listing: string[] = [];
  for (const [label, c] of capture) {
    listing.push(
      '',
      `Round trips per connection on the link, *${label}*, last round (\`tcpdump\` in the host's namespace; → client to server, ← back; each → answered by ← is one round trip the client waited for):`,
      '',
    );
    if (typeof c === 'string') {
      listing.push(`not captured: ${c}`);
      continue;
    }
    for (const [n, conn] of c.entries()) {
      const t0 = c[0]?.turns[0]?.ms ?? 0;
      listing.push(
        `${n + 1}. ${conn.roundTrips} round trip${conn.roundTrips === 1 ? '' : 's'}: ${conn.turns.map((t) => `${t.fromClient ? '→' : '←'} ${t.what} (${t.bytes} B, +${(t.ms - t0).toFixed(0)} ms)`).join(', ')}`,
      );
    }
  }
  return {
    row: 'rtt',
    markdown: [
      `Two compiles (\`remote-cc ${CFLAGS} -c u0.c\`, then \`u1.c\` in the next actionset; 2 requirements each, new contents every round) at ${rtt} ms RTT imposed on the netns test bed (measured connect ${m.toFixed(1)} ms), beyond the compile itself: each traced action (\`--trace\`) minus the command's own run time in the server's \`job end\` log (${f2(compiles, 1)} ms), in measured round trips (target ≤ 1.5). The first action of a run includes the wait for the host's first load or cost answer; the later one runs on the connections the first left. *Whole client*: the client process from spawn to exit minus both compiles (its start, the Rakefile's parse and both actions), where time moved out of the traced actions would still show:`,
      '',
      markdownTable(rows),
      ...listing,
    ].join('\n'),
  };
}

// ---------------------------------------------------------------------------------------------

export interface ScaleOptions {
  readonly now: Side;
  /** `now` first, then the baseline when there is one. */
  readonly sides: readonly Side[];
  readonly baselineRev: string | undefined;
  readonly runs: number;
  readonly rows: readonly RowName[];
  readonly cpuHosts: readonly number[];
  readonly dir: string;
}

/** Runs the rows, handing each row's Markdown to `emit` as it is done (a row that fails says why). */
export async function runScale(o: ScaleOptions, emit: (markdown: string) => void): Promise<void> {
  const run: Record<RowName, () => Promise<RowResult>> = {
    make: () => rowMake(o),
    true: () => rowTrue(o),
    sleep8: () => sleepRow(o, 'sleep8', 400, 0.1, 8, '≥ 95 %'),
    sleep64: () => sleepRow(o, 'sleep64', 2000, 0.2, 64, '≥ 85 %'),
    two: () => rowTwo(o),
    cpu: () => rowCpu(o),
    conns: () => rowConns(o),
    rtt: () => rowRtt(o),
  };
  for (const row of o.rows) {
    progress(`row ${row}`);
    let markdown: string;
    try {
      markdown = (await run[row]()).markdown;
    } catch (err) {
      markdown = `Not measured: the row failed: ${(err as Error).message.slice(0, 2000)}`;
    }
    emit([`#### ${row}`, '', markdown, ''].join('\n'));
    progress(`row ${row} done`);
  }
  const sides = o.sides
    .map((s) =>
      s.programs === o.now.programs
        ? `*${s.label}*: this tree`
        : `*before*: rake-ts at ${o.baselineRev}, servers of its own`,
    )
    .join('; ');
  emit(
    `Columns: ${sides}. Medians of ${o.runs} rounds, range in brackets, the sides interleaved in each round in rotating order; *load* is the 1-minute load average read at the start of each round. Client flags: compare.ts's and \`${SCALE_CLIENT_FLAGS.join(' ')}\`. Reproduce: \`node --import tsx scripts/bench/scale.ts --runs ${o.runs} --rows ${o.rows.join(',')}${o.baselineRev === undefined ? ' --baseline none' : ` --baseline ${o.baselineRev}`}${nowFlagsText(o)}${(o.sides.find((s) => s.label.startsWith('before'))?.flags ?? []).length === 0 ? '' : ` '--baseline-flags=${o.sides.find((s) => s.label.startsWith('before'))?.flags?.join(' ')}'`}\`.`,
  );
}

/** `--now-flags` as given (the flag sets of this tree's sides, `;` between), or nothing. */
function nowFlagsText(o: { readonly sides: readonly Side[]; readonly now: Side }): string {
  const sets = o.sides
    .filter((s) => s.programs === o.now.programs)
    .map((s) => (s.flags ?? []).join(' '));
  return sets.every((f) => f === '') ? '' : ` '--now-flags=${sets.join(';')}'`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      rows: { type: 'string', default: ROWS.join(',') },
      baseline: { type: 'string', default: SCALE_BASELINE },
      'cpu-hosts': { type: 'string', default: '1,2,4,8,16,32,64' },
      // Client flags for this tree's side only (the baseline may not know them), e.g.
      // "--load-streams". The make row (compare.ts) does not take them; the
      // environment does (RAKE_LOAD_STREAMS=1 reaches every client, and older ones ignore it).
      'now-flags': { type: 'string', default: '' },
      // Client flags for the baseline's side, when it knows them (a before/after of a change
      // behind a flag: `--baseline REV --baseline-flags=--load-streams --now-flags=...`).
      'baseline-flags': { type: 'string', default: '' },
    },
  });
  const rows = (values.rows ?? '').split(',').filter(Boolean);
  for (const r of rows) {
    if (!(ROWS as readonly string[]).includes(r)) {
      throw new Error(`--rows: no row "${r}"; the rows are ${ROWS.join(', ')}`);
    }
  }
  const runs = Number(values.runs);
  if (!(Number.isInteger(runs) && runs >= 1)) throw new Error('--runs must be a whole number ≥ 1');
  const dir = join(SCRATCH, 'scale');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  progress('compiling rake-ts');
  const programs = compilePrograms(join(SCRATCH, 'scale-build'));
  const nows: Side[] = (values['now-flags'] ?? '').split(';').map((set) => {
    const flags = set.split(/\s+/).filter(Boolean);
    return { label: flags.length === 0 ? 'now' : `now (${flags.join(' ')})`, programs, flags };
  });
  const now = nows[0] as Side;
  const sides: Side[] = [...nows];
  const rev = values.baseline === 'none' ? undefined : values.baseline;
  if (rev !== undefined) {
    const base = compileRev('scale-baseline', rev);
    const baseFlags = (values['baseline-flags'] ?? '').split(/\s+/).filter(Boolean);
    sides.push({
      label: baseFlags.length === 0 ? 'before' : `before (${baseFlags.join(' ')})`,
      programs: base,
      flags: baseFlags,
    });
  }
  await runScale(
    {
      now,
      sides,
      baselineRev: rev,
      runs,
      rows: rows as RowName[],
      cpuHosts: (values['cpu-hosts'] ?? '').split(',').map(Number),
      dir,
    },
    (markdown) => process.stdout.write(`${markdown}\n`),
  );
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main();
