/**
 * Benchmark: the client end to end (issue "The reactive client", Measure).
 *
 *   node --import tsx scripts/bench/build.ts [--runs 3] [--units 100] [--trues 500]
 *                                            [--big 10000] [--write-docs]
 *
 * 1. A generated C project of `--units` units plus a link step, built by `rake-ts` over 2
 *    loopback servers, against `make -j2` on the same sources in the same run. Target: ratio
 *    at most 1.25.
 * 2. `--trues` `remote-true` actions in one actionset over 2 servers, against
 *    `xargs -P2 sh -c true` run as many times. Target: ratio at most 1.5; actions/s.
 * 3. Peak client RSS (VmHWM) for a Rakefile of `--big` `remote-true` actions.
 *
 * The programs are built first as `npm run build` builds them (tsc, then the one-file bundles
 * of scripts/bundle.mjs, into .bench/build/programs) so neither side pays for tsx. The
 * servers are `bin/rakeserver.js` processes (NDJSON logs at info, drained here). The C
 * project is built on 2 servers with one job slot each (`--max-jobs 1`, as the suite's
 * compare.ts and `distccd --jobs 1`: at most 2 compiles at once, as `make -j2`), and, as a
 * second row, on 2 servers with default flags (a slot per core: 4 compiles at once on these
 * 2 cores). The `remote-true` rows use the default servers. The client is `bin/rake-ts.js`,
 * a separate process per run, as a user starts it, timed from spawn to exit; its peak RSS is
 * its own `maxRSS` at exit. Runs rotate baseline and clients; figures are medians with the
 * range.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SERVER_FLAGS, WARMUP_BUILDS } from './compare.js';
import { type ClientRun, runRakeProgram } from './lib/client-run.js';
import { compilePrograms, type Programs } from './lib/proc.js';
import { checkProgram, cleanBuild, truesRakefile, writeCProject } from './lib/project.js';
import { formatSpread, median, ratios, spread } from './lib/stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = join(root, '.bench', 'build');
/** The programs as `npm run build` makes them (tsc, then the bundles), compiled by main(). */
let programs: Programs;

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    units: { type: 'string', default: '100' },
    trues: { type: 'string', default: '500' },
    big: { type: 'string', default: '10000' },
    'write-docs': { type: 'boolean', default: false },
  },
});
const RUNS = Number(opts.runs);

const range = (v: number[], digits = 2) =>
  `${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)}`;

/**
 * A rakeserver on a free port, by default with default flags (a job slot per core: two
 * here), as a user starts it; resolves once it listens.
 */
function startServer(
  spawner = 'auto',
  flags: readonly string[] = [],
): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [programs.rakeserver, '--port', '0', '--spawner', spawner, ...flags],
    {
      cwd: root,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (chunk: Buffer) => {
      buf += chunk.toString();
      for (const line of buf.split('\n')) {
        try {
          const o = JSON.parse(line) as { msg?: string; port?: number };
          if (o.msg === 'listening' && o.port) {
            child.stderr?.off('data', onData);
            child.stderr?.resume(); // keep draining the log
            return resolve({ child, port: o.port });
          }
        } catch {}
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (c) => reject(new Error(`server exited early (${c}): ${buf}`)));
  });
}

/** Runs the client program (`bin/rake-ts.js`) in a child process; wall time from spawn to exit. */
function runClient(dir: string): Promise<ClientRun> {
  return runRakeProgram(programs.rake, dir, join(scratch, `report-${process.pid}.json`));
}

/**
 * The servers' own limit: `n` jobs of `true` sent by a minimal base-protocol client
 * (`!C4 true`, read the reply, `!D0`; no cost polls, 16 connections at a time, alternating
 * servers), so the client's share of the `remote-true` time can be told from the servers'.
 */
async function rawJobs(ports: number[], n: number): Promise<number> {
  const header = (t: string) => Buffer.from(t.padEnd(64, ' '), 'latin1');
  const job = (port: number) =>
    new Promise<void>((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1' });
      let got = 0;
      s.on('connect', () => s.write(Buffer.concat([header('!C4'), Buffer.from('true')])));
      s.on('data', (b: Buffer) => {
        got += b.length;
        if (got >= 64) s.end(header('!D0'));
      });
      s.on('close', () => resolve());
      s.on('error', reject);
    });
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 16 }, async (_, w) => {
      while (next < n) {
        next++;
        await job(ports[w % ports.length] as number);
      }
    }),
  );
  return (performance.now() - t0) / 1000;
}

function timeCommand(cmd: string, args: string[], cwd: string, input?: string): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, {
    cwd,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'inherit'],
    ...(input === undefined ? {} : { input }),
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const loadBefore = loadavg()[0]?.toFixed(1);
  mkdirSync(scratch, { recursive: true });
  process.stderr.write('compiling...\n');
  programs = compilePrograms(join(scratch, 'programs'));
  const servers = await Promise.all([startServer(), startServer()]);
  const ports = servers.map((s) => s.port);
  // The same servers starting jobs the old way (child_process.spawn, a fork of the server
  // per job): the spawn helper's share of the remote-true figure, in the same run.
  const nodeServers = await Promise.all([startServer('node'), startServer('node')]);
  const nodePorts = nodeServers.map((s) => s.port);
  // The C project's servers: one job slot each, as the suite's (compare.ts).
  const oneSlot = await Promise.all([
    startServer('auto', SERVER_FLAGS),
    startServer('auto', SERVER_FLAGS),
  ]);
  try {
    // 1. The C project, twice: the same sources in two directories, one Rakefile naming the
    // one-slot servers, the other the default ones.
    const units = Number(opts.units);
    // The suite's project (lib/project.ts), as compare.ts builds it.
    const cProject = (name: string, hostPorts: number[]) =>
      writeCProject(join(scratch, name), units, {
        hosts: hostPorts.map((p) => `127.0.0.1:${p}`),
        port: hostPorts[0] as number,
      });
    const project = cProject(
      'c',
      oneSlot.map((s) => s.port),
    );
    const projectDefault = cProject('c-default', ports);
    const times: Record<'make' | 'ours' | 'oursDefault', number[]> = {
      make: [],
      ours: [],
      oursDefault: [],
    };
    const { make, ours, oursDefault } = times;
    // Untimed builds first: page cache and compiler warm, and the servers past their
    // start-up (spawn helper, job directories, V8's optimizing compiles: a rakeserver is a
    // daemon, so its steady state is what users get; compare.ts, WARMUP_BUILDS); the
    // client's code cache written.
    cleanBuild(project);
    timeCommand('make', ['-s', '-j2'], project.dir);
    for (let w = 0; w < WARMUP_BUILDS; w++) {
      for (const p of [project, projectDefault]) {
        cleanBuild(p);
        await runClient(p.dir);
      }
    }
    const sides = ['make', 'ours', 'oursDefault'] as const;
    for (let i = 0; i < RUNS; i++) {
      const order = sides.map((_, k) => sides[(k + i) % sides.length] as (typeof sides)[number]);
      for (const who of order) {
        const p = who === 'oursDefault' ? projectDefault : project;
        cleanBuild(p);
        if (who === 'make') make.push(timeCommand('make', ['-s', '-j2'], p.dir));
        else times[who].push((await runClient(p.dir)).seconds);
        checkProgram(p, who);
      }
      process.stderr.write(
        `C run ${i + 1}: make ${make.at(-1)?.toFixed(2)} s, rake-ts ${ours.at(-1)?.toFixed(2)} s (servers with default flags ${oursDefault.at(-1)?.toFixed(2)} s)\n`,
      );
    }

    // 2. remote-true, many times.
    const tDir = join(scratch, 'trues');
    const trues = Number(opts.trues);
    truesRakefile(tDir, trues, ports);
    const tNodeDir = join(scratch, 'trues-node');
    truesRakefile(tNodeDir, trues, nodePorts);
    const xargs: number[] = [];
    const truesOurs: number[] = [];
    const truesNode: number[] = [];
    const raw: number[] = [];
    const seq = `${Array.from({ length: trues }, (_, i) => i).join('\n')}\n`;
    for (let i = 0; i < RUNS; i++) {
      xargs.push(timeCommand('xargs', ['-P2', '-n1', 'sh', '-c', 'true'], tDir, seq));
      truesOurs.push((await runClient(tDir)).seconds);
      truesNode.push((await runClient(tNodeDir)).seconds);
      raw.push(await rawJobs(ports, trues));
      process.stderr.write(
        `true run ${i + 1}: xargs ${xargs.at(-1)?.toFixed(2)} s, rake-ts ${truesOurs.at(-1)?.toFixed(2)} s (servers with --spawner node ${truesNode.at(-1)?.toFixed(2)} s), raw jobs ${raw.at(-1)?.toFixed(2)} s\n`,
      );
    }

    // 3. Peak RSS for a big Rakefile.
    const bDir = join(scratch, 'big');
    const big = Number(opts.big);
    truesRakefile(bDir, big, ports);
    const bigRun = await runClient(bDir);
    const oneDir = join(scratch, 'one');
    truesRakefile(oneDir, 1, ports);
    const oneRun = await runClient(oneDir);
    process.stderr.write(
      `big run: ${bigRun.seconds.toFixed(2)} s, ${(bigRun.maxRss / 2 ** 20).toFixed(1)} MiB\n`,
    );

    const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
    // Per round, as compare.ts: each build against make's build of the same round.
    const cRatio = formatSpread(spread(ratios(ours, make)));
    const cRatioDefault = formatSpread(spread(ratios(oursDefault, make)));
    const vsXargs = (v: number[]) => formatSpread(spread(ratios(v, xargs)));
    const body = [
      `Machine: ${availableParallelism()} × ${cpu}, Node ${process.version}, loopback; medians of ${RUNS} runs (range in brackets), measured ${new Date().toISOString().slice(0, 10)}.`,
      '',
      markdownTable([
        ['workload', 'baseline', 'rake-ts', 'rake-ts / baseline', 'target'],
        [
          `C project, ${units} units + link, 2 servers \`${SERVER_FLAGS.join(' ')}\``,
          `\`make -j2\` ${median(make).toFixed(2)} s (${range(make)})`,
          `${median(ours).toFixed(2)} s (${range(ours)})`,
          `**${cRatio}**`,
          '≤ 1.25',
        ],
        [
          'the same, servers with default flags (2 job slots each: 4 compiles at once on 2 cores)',
          '',
          `${median(oursDefault).toFixed(2)} s (${range(oursDefault)})`,
          cRatioDefault,
          '',
        ],
        [
          `${trues} × \`remote-true\`, 1 actionset, 2 servers`,
          `\`xargs -P2 sh -c true\` ${median(xargs).toFixed(2)} s (${range(xargs)})`,
          `${median(truesOurs).toFixed(2)} s (${range(truesOurs)}), **${(trues / median(truesOurs)).toFixed(0)} actions/s**`,
          `**${vsXargs(truesOurs)}**`,
          '≤ 1.5',
        ],
        [
          `the same, servers with \`--spawner node\` (a fork of the server per job, as before the spawn helper)`,
          '',
          `${median(truesNode).toFixed(2)} s (${range(truesNode)}), ${(trues / median(truesNode)).toFixed(0)} actions/s`,
          vsXargs(truesNode),
          '',
        ],
        [
          `the same ${trues} jobs from a minimal base-protocol client (no polls, 16 at a time)`,
          '',
          `${median(raw).toFixed(2)} s (${range(raw)}), ${(trues / median(raw)).toFixed(0)} jobs/s`,
          vsXargs(raw),
          "(the servers' own limit)",
        ],
      ]),
      '',
      `Client peak RSS (VmHWM) for a Rakefile of ${big.toLocaleString('en')} \`remote-true\` actions in one actionset: **${(bigRun.maxRss / 2 ** 20).toFixed(1)} MiB** (${bigRun.seconds.toFixed(1)} s, ${(big / bigRun.seconds).toFixed(0)} actions/s); for a Rakefile of 1 action: ${(oneRun.maxRss / 2 ** 20).toFixed(1)} MiB.`,
      '',
      `Reproduce: \`node --import tsx scripts/bench/build.ts [--runs ${RUNS}] [--units ${units}] [--trues ${trues}] [--big ${big}] [--write-docs]\`.`,
      'The script builds the programs first (tsc, then the bundles, as `npm run build`); the servers are separate `bin/rakeserver.js` processes (logs at info; the spawn helper).',
      `The C project's are \`${SERVER_FLAGS.join(' ')}\`, as in the suite (a job slot each: at most 2 compiles at once, as \`make -j2\` and \`distccd --jobs 1\`); the second row gives the same build to servers with`,
      `default flags (2 job slots each, so up to 4 compiles at once on 2 cores), which also run the \`remote-true\` rows. Each C configuration first gets ${WARMUP_BUILDS} untimed builds (make: 1; a rakeserver is a daemon,`,
      'and its CPU per build falls for about its first 10 builds: `scripts/bench/server-warmup.ts`); the client is a separate process per run, through the CLI',
      '(`bin/rake-ts.js -q`, default `-j`), timed from spawn to exit, so its start-up counts. Both sides compile with',
      "`cc -O2`; the C project is the suite's (scripts/bench/lib/project.ts: one small function per unit, a header,",
      'a `main.c` calling every unit), and the program each build makes is run and must print the expected sum.',
      '',
      `Reading the figures: load average ${loadBefore} before this script and ${loadavg()[0]?.toFixed(1)} after it, on 2 cores; the ratios come from`,
      "interleaved runs; a ratio is the median of the rounds' ratios (each run against the baseline's run of the same round; the C builds' order rotates every round), with their range. `remote-true` is bound by the servers: the minimal client that skips the cost polls shows",
      "the servers' own limit, and the `--spawner node` row shows what starting each job with `child_process.spawn`",
      '(a fork of the whole server) costs. Most of the peak RSS is the process itself (the 1-action figure); the',
      'many actions add the rest.',
    ].join('\n');
    process.stdout.write(`${body}\n`);
    if (opts['write-docs']) writeDocs(body);
  } finally {
    for (const s of [...servers, ...nodeServers, ...oneSlot]) s.child.kill('SIGTERM');
  }
}

/** A Markdown table with padded columns, as Biome formats it (docs are linted). */
function markdownTable(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, c) =>
    Math.max(3, ...rows.map((r) => (r[c] ?? '').length)),
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join(' | ')} |`;
  const [head, ...body] = rows;
  return [line(head ?? []), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function writeDocs(body: string): void {
  const path = join(root, 'docs', 'benchmarks.md');
  const text = readFileSync(path, 'utf8');
  const title = '## Client: builds and per-action overhead';
  const start = text.indexOf(title);
  if (start < 0) throw new Error(`${path} has no "${title}" section`);
  const next = text.indexOf('\n## ', start + title.length);
  const after = next < 0 ? '' : `\n${text.slice(next + 1)}`;
  writeFileSync(path, `${text.slice(0, start)}${title}\n\n${body}\n${after}`);
}

await main();
