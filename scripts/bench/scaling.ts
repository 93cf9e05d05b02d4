/**
 * Scaling: the build of the generated C project over 1, 2, 4 and 8 hosts of the multi-host
 * test bed (scripts/testbed/: each host a network namespace with its own address, its link
 * delayed in both directions), at several round-trip times. One bed of the largest host
 * count is started once (compiled `rakeserver`, `--max-jobs 1`, as in the build
 * comparison); a smaller count is the same bed with a shorter `HOSTS` line.
 *
 * Besides the build's wall time, a probe of `remote-cc -c` actions run one at a time
 * (`-j 1`) gives each phase of one action in round trips: the cost poll must cost about one
 * round trip whatever the number of hosts (the client asks every host at once), not one
 * per host.
 *
 *   node --import tsx scripts/bench/scaling.ts [--hosts 1,2,4,8] [--rtt 2,20] [--units 100] [--runs 3]
 *
 * Needs root (or CAP_NET_ADMIN) for namespaces; without them it says so and measures nothing.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PHASES, type PhaseName } from '../../src/observe/timeline.js';
import { connectTime } from '../testbed/probe.js';
import { RAKE_FLAGS, SERVER_FLAGS } from './compare.js';
import { runPartAsMain } from './lib/cli.js';
import { writeCompileRakefile } from './lib/compile-rakefile.js';
import { markdownTable } from './lib/markdown.js';
import {
  type Daemon,
  type Programs,
  progress,
  runChecked,
  SCRATCH,
  startDaemon,
} from './lib/proc.js';
import { CFLAGS, checkProgram, cleanBuild, writeCProject, writeRakefile } from './lib/project.js';
import { formatSpread, median, spread } from './lib/stats.js';
import { readTrace } from './lib/trace.js';
import { phaseMedians } from './overhead.js';

export interface ScalingOptions {
  readonly programs: Programs;
  readonly hostCounts: readonly number[];
  /** Round-trip times to impose, ms (each direction gets half). */
  readonly rtts: readonly number[];
  readonly units: number;
  readonly runs: number;
  /** Compiles in the `-j 1` probe per point. */
  readonly probe: number;
  /** The programs before the speed-ups, measured over `baselineHosts` hosts at every RTT. */
  readonly baseline?: Programs;
  readonly baselineHosts?: number;
  readonly dir?: string;
}

/** One (round trip, host count) point. */
export interface ScalingPoint {
  readonly rttMs: number;
  /** The connect time measured to host1 (median of 5): the real round trip. */
  readonly measuredRttMs: number;
  readonly hosts: number;
  /** Build wall times, s. */
  readonly seconds: number[];
  /** Per-phase medians of the `-j 1` probe, ms. */
  readonly probe: Readonly<Record<PhaseName, number>>;
  /** Measured with the programs before the speed-ups. */
  readonly before: boolean;
}

export type ScalingResult =
  | {
      readonly ok: true;
      readonly via: string;
      readonly units: number;
      readonly runs: number;
      readonly probe: number;
      readonly points: ScalingPoint[];
    }
  | { readonly ok: false; readonly why: string };

export async function runScaling(o: ScalingOptions): Promise<ScalingResult> {
  // The test bed registers exit handlers and needs root: load it only when used.
  const { startTestbed } = await import('../testbed/netns.js');
  const dir = o.dir ?? join(SCRATCH, 'scaling');
  rmSync(dir, { recursive: true, force: true });
  const maxHosts = Math.max(...o.hostCounts);
  const first = o.rtts[0] ?? 2;
  progress(`scaling: starting a test bed of ${maxHosts} hosts`);
  let bed: Awaited<ReturnType<typeof startTestbed>>;
  try {
    bed = await startTestbed({
      hosts: maxHosts,
      mode: 'netns',
      netem: { delayMs: first / 2 },
      serverCommand: (address, port, host) => [
        process.execPath,
        o.programs.rakeserver,
        '--host',
        address,
        '--port',
        String(port),
        '--workdir',
        host.workdir,
        '--log-level',
        'warn',
        ...SERVER_FLAGS,
      ],
      log: (m) => progress(`testbed: ${m}`),
    });
  } catch (err) {
    return { ok: false, why: (err as Error).message };
  }
  const points: ScalingPoint[] = [];
  const baselineServers: Daemon[] = [];
  try {
    const netem = bed.capabilities.netem;
    if (!netem.supported) return { ok: false, why: `link delay unsupported: ${netem.reason}` };
    const all = bed.hosts.map((h) => `${h.address}:${h.port}`);
    const port = bed.hosts[0]?.port ?? 6238;
    const project = writeCProject(join(dir, 'c'), o.units, { hosts: all, port });
    const probeDir = join(dir, 'probe');
    writeCProject(probeDir, o.probe, { hosts: all, port });
    // The programs before the speed-ups get servers of their own on the first hosts, on the
    // next port (same namespaces, same delayed links), so their builds alternate with the
    // current ones run by run instead of minutes apart on a machine whose load drifts.
    const baseline = o.baseline;
    const bHosts = baseline === undefined ? 0 : (o.baselineHosts ?? 0);
    for (const x of bed.hosts.slice(0, bHosts)) {
      if (baseline === undefined || x.namespace === undefined) break;
      mkdirSync(join(x.workdir, 'baseline'), { recursive: true });
      baselineServers.push(
        await startDaemon(
          ['ip', 'netns', 'exec', x.namespace, process.execPath, baseline.rakeserver]
            .concat([
              '--host',
              x.address,
              '--port',
              String(port + 1),
              '--workdir',
              join(x.workdir, 'baseline'),
            ])
            .concat(['--log-level', 'warn', ...SERVER_FLAGS]),
          { host: x.address, port: port + 1, logFile: join(dir, `baseline-${x.name}.log`) },
        ),
      );
    }
    const before = {
      hosts: baselineServers.map((d) => `${d.host}:${d.port}`),
      port: port + 1,
    };
    const measure = async (rtt: number, h: number) => {
      await Promise.all(bed.hosts.map((x) => x.setNetem({ delayMs: rtt / 2 })));
      const host1 = bed.hosts[0];
      const connects: number[] = [];
      for (let i = 0; i < 5 && host1 !== undefined; i++) {
        const c = await connectTime(host1.address, host1.port, 5000);
        if (c.ok) connects.push(c.value);
      }
      const measuredRttMs = median(connects);
      const hosts = { hosts: all.slice(0, h), port };
      writeRakefile(project.dir, o.units, hosts);
      const variants: { programs: Programs; before: boolean; override: string[] }[] = [
        { programs: o.programs, before: false, override: [] },
      ];
      if (baseline !== undefined && h === bHosts && before.hosts.length === h) {
        const override = ['--hosts', before.hosts.join(' '), '--port', String(before.port)];
        variants.push({ programs: baseline, before: true, override });
      }
      const seconds = variants.map((): number[] => []);
      for (let r = 0; r < o.runs; r++) {
        for (const [i, v] of variants.entries()) {
          cleanBuild(project);
          const run = await runChecked(
            [process.execPath, v.programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS, ...v.override],
            { cwd: project.dir },
          );
          checkProgram(project, `rake-ts over ${h} hosts`);
          seconds[i]?.push(run.seconds);
        }
      }
      for (const [i, v] of variants.entries()) {
        // New contents each time: the probe measures uploads, not the servers' input cache.
        writeCProject(probeDir, o.probe, hosts, `probe ${rtt} ${h} ${v.before} ${Date.now()}`);
        writeCompileRakefile(probeDir, o.probe, hosts);
        const trace = join(probeDir, 'trace.json');
        const argv = [process.execPath, v.programs.rake, '-f', 'Rakefile', ...RAKE_FLAGS];
        await runChecked([...argv, ...v.override, '-j', '1', '--trace', trace], { cwd: probeDir });
        const probe = phaseMedians(readTrace(trace));
        const point = { rttMs: rtt, measuredRttMs, hosts: h, seconds: seconds[i] ?? [], probe };
        points.push({ ...point, before: v.before });
        progress(
          `scaling: RTT ${rtt} ms (${measuredRttMs.toFixed(1)} measured), ${h} hosts${v.before ? ', before the speed-ups' : ''}: build ${formatSpread(spread(point.seconds))} s; probe ${PHASES.map((p) => `${p} ${probe[p].toFixed(0)}`).join(', ')} ms`,
        );
      }
    };
    for (const rtt of o.rtts) {
      for (const h of o.hostCounts) await measure(rtt, h);
    }
  } finally {
    await Promise.all(baselineServers.map((d) => d.stop()));
    await bed.teardown();
  }
  return {
    ok: true,
    via: bed.capabilities.netem.supported ? bed.capabilities.netem.via : '',
    units: o.units,
    runs: o.runs,
    probe: o.probe,
    points,
  };
}

export function scalingMarkdown(r: ScalingResult): string {
  if (!r.ok) return `Not measured: ${r.why}.`;
  const rows: string[][] = [
    [
      'RTT (imposed / measured)',
      'hosts',
      'build wall (s)',
      ...PHASES.map((p) => `${p} (ms)`),
      'poll / RTT',
      '(upload + download) / RTT',
    ],
  ];
  for (const p of r.points) {
    rows.push([
      `${p.rttMs} / ${p.measuredRttMs.toFixed(1)} ms`,
      p.before ? `${p.hosts}, before the speed-ups` : String(p.hosts),
      formatSpread(spread(p.seconds)),
      ...PHASES.map((ph) => p.probe[ph].toFixed(0)),
      (p.probe.poll / p.measuredRttMs).toFixed(1),
      ((p.probe.upload + p.probe.download) / p.measuredRttMs).toFixed(1),
    ]);
  }
  return [
    markdownTable(rows),
    '',
    `*build wall*: the generated project (N = ${r.units} units + main + link, as in "Build") built by the CLI over the first *hosts* hosts of one test bed, median of ${r.runs} runs (range in brackets); each host is a \`rakeserver ${SERVER_FLAGS.join(' ')}\` in its own network namespace, its link delayed by half the round trip in each direction (${r.via}). All hosts share this machine's 2 cores, so past 2 hosts more hosts add job slots, not CPU. The phase columns are per-action medians of a probe of ${r.probe} compiles (\`remote-cc ${CFLAGS} -c uK.c\`, 2 requirements, 1 output) run one at a time (\`-j 1\`): latency without queueing. *poll / RTT* is the cost poll in measured round trips: a new TCP connection (1 round trip) and the \`!E0\` query (1 round trip) to every host at once, so it stays near 2 whatever the host count. *(upload + download) / RTT* counts the round trips the filestreams cost (plus the handshake and cache offer in *upload*), with 8 compiles per probe the first on a host also uploads the header. With the \`push\` extension (docs/protocol.md) a compile's hello, files and command leave in one write and its reply brings the object file, so *upload* and *download* are only the time to write and read them, near 0 round trips: the job's one round trip is in *run*. Rows *before the speed-ups* are the programs before this page's speed-ups (see the last section), with servers of their own on the same hosts at the next port, their builds alternating with the current ones run by run.`,
  ].join('\n');
}

await runPartAsMain(
  import.meta.url,
  { hosts: [1, 2, 4, 8], rtt: [2, 20], units: 100, runs: 3, probe: 10 },
  async ({ hosts, rtt, ...rest }, programs) =>
    scalingMarkdown(await runScaling({ programs, hostCounts: hosts, rtts: rtt, ...rest })),
);
