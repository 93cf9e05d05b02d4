/**
 * Benchmark: the input cache extension (issue "Beyond the base protocol", Measure).
 *
 *   node --import tsx scripts/bench/cache.ts [--units 100] [--header-mib 1] [--runs 3] [--write-docs]
 *
 * A generated C project: `--units` units, each `cc -c unitNNN.c` requiring the same
 * `--header-mib` MiB header `big.h` plus its own source, in one actionset, over 2 loopback
 * servers (separate processes: src/cli/rakeserver.ts's `main` via tsx, `--max-jobs 2`,
 * fresh workdirs). The client is `run()` from src/client in this process; a byte meter in
 * its transport counts every byte it writes and reads, cost queries included. Per mode —
 * servers with `--cache-size 0` (the server offers no `cache`; the other extensions stay on)
 * and with the default `--cache-size` — the same project is built twice on the same
 * servers: the first build starts with empty caches, the second is the same build again
 * (no up-to-date check: every action runs and requires its files again). Each run starts
 * new servers. Figures are medians of `--runs` runs with the range. The same project is
 * also run with `wc -c unitNNN.c big.h` instead of `cc -c` (same requirements, next to no
 * work), where the transfer is most of the wall time.
 * `--write-docs` replaces the section "## Extensions: input cache" of docs/benchmarks.md.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { lastValueFrom, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import { whenSettled } from '../../src/client/cleanup.js';
import { run } from '../../src/client/run.js';
import { type TransferMeter, tcpTransport } from '../../src/client/transport.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = join(root, '.bench', 'cache');

const { values: opts } = parseArgs({
  options: {
    units: { type: 'string', default: '100' },
    'header-mib': { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    'write-docs': { type: 'boolean', default: false },
  },
});
const UNITS = Number(opts.units);
const HEADER_BYTES = Math.round(Number(opts['header-mib']) * 1024 * 1024);
const RUNS = Number(opts.runs);
const MiB = 1024 * 1024;

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

const range = (v: number[], f: (n: number) => string) =>
  `${f(Math.min(...v))}–${f(Math.max(...v))}`;

/** A Markdown table padded the way Biome formats one. */
function markdownTable(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((x, c) => x.padEnd(widths[c] ?? 0)).join(' | ')} |`;
  const [head = [], ...body] = rows;
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

type Workload = 'cc' | 'wc';

/** The project: big.h (comments and one declaration per 64 KiB) and the units. */
function makeProject(dir: string, workload: Workload): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const lines: string[] = ['#ifndef BIG_H', '#define BIG_H'];
  let size = 0;
  for (let i = 0; size < HEADER_BYTES - 200; i++) {
    const line =
      i % 1024 === 0
        ? `int big_table_${i}(int);`
        : `/* ${String(i).padStart(8, '0')} ${'x'.repeat(50)} */`;
    lines.push(line);
    size += line.length + 1;
  }
  lines.push('#endif');
  const header = `${lines.join('\n')}\n`;
  writeFileSync(join(dir, 'big.h'), header.padEnd(HEADER_BYTES - 1, ' ').concat('\n'));
  const actions: string[] = [];
  for (let i = 0; i < UNITS; i++) {
    const name = `unit${String(i).padStart(3, '0')}`;
    writeFileSync(
      join(dir, `${name}.c`),
      `#include "big.h"\nint ${name}(int x) { return x * ${i + 1} + big_table_0(x); }\n`,
    );
    const command = workload === 'cc' ? `cc -c ${name}.c` : `wc -c ${name}.c big.h`;
    actions.push(`\tremote-${command}\n\t\trequires ${name}.c big.h`);
  }
  return `HOSTS = 127.0.0.1\n\ncompile:\n${actions.join('\n')}\n`;
}

interface Server {
  child: ChildProcess;
  port: number;
}

/** Starts a rakeserver process; resolves its port from the `listening` log line. */
function startServer(workdir: string, cacheSize: string): Promise<Server> {
  const entry =
    "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })";
  const args = ['--port', '0', '--workdir', workdir, '--max-jobs', '2', '--cache-size', cacheSize];
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', entry, '--', ...args], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString();
      for (const line of buf.split('\n')) {
        try {
          const o = JSON.parse(line) as { msg?: string; port?: number };
          if (o.msg === 'listening' && o.port) {
            buf = '';
            child.stderr?.off('data', onData);
            child.stderr?.resume(); // keep draining the log
            return resolve({ child, port: o.port });
          }
        } catch {
          // a partial line
        }
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`rakeserver exited early (${code})`)));
  });
}

async function stop(servers: Server[]): Promise<void> {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((ok) => {
          s.child.once('exit', () => ok());
          s.child.kill('SIGTERM');
        }),
    ),
  );
}

interface Build {
  seconds: number;
  sentBytes: number;
  receivedBytes: number;
}

/** One build of the project over the servers; every action must succeed. */
async function build(dir: string, text: string, servers: Server[]): Promise<Build> {
  const meter: TransferMeter = { sent: 0, received: 0, connections: 0 };
  const parsed = parseRakefile(text, { file: join(dir, 'Rakefile') });
  if (!parsed.ok) throw new Error(parsed.diagnostics.map((d) => d.message).join('\n'));
  const t0 = performance.now();
  const events = await lastValueFrom(
    run(parsed.rakefile, {
      directory: dir,
      hosts: servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
      embedded: false,
      fallback: false,
      transport: tcpTransport({ meter }),
    }).pipe(toArray()),
  );
  await whenSettled();
  const seconds = (performance.now() - t0) / 1000;
  const done = events.find((e) => e.type === 'done');
  if (done?.type !== 'done' || done.summary.exitStatus !== 0) {
    const failed = events.find((e) => e.type === 'action-failed');
    throw new Error(`the build failed: ${JSON.stringify(failed ?? done)}`);
  }
  return { seconds, sentBytes: meter.sent, receivedBytes: meter.received };
}

type Mode = 'cache off' | 'cache on';
type Results = Record<Mode, { first: Build[]; second: Build[] }>;

async function measure(workload: Workload): Promise<Results> {
  const dir = join(scratch, `project-${workload}`);
  const text = makeProject(dir, workload);
  const results: Results = {
    'cache off': { first: [], second: [] },
    'cache on': { first: [], second: [] },
  };
  for (let r = 0; r < RUNS; r++) {
    for (const mode of ['cache off', 'cache on'] as const) {
      const workdirs = [0, 1].map((i) => join(scratch, `work-${i}`));
      for (const w of workdirs) rmSync(w, { recursive: true, force: true });
      const servers = await Promise.all(
        workdirs.map((w) => startServer(w, mode === 'cache on' ? '512M' : '0')),
      );
      try {
        const first = await build(dir, text, servers);
        const second = await build(dir, text, servers);
        results[mode].first.push(first);
        results[mode].second.push(second);
        process.stderr.write(
          `${workload} run ${r + 1} ${mode}: 1st ${first.seconds.toFixed(2)} s ${(first.sentBytes / MiB).toFixed(1)} MiB, 2nd ${second.seconds.toFixed(2)} s ${(second.sentBytes / MiB).toFixed(2)} MiB (load ${loadavg()[0]?.toFixed(1)})\n`,
        );
      } finally {
        await stop(servers);
      }
    }
  }
  return results;
}

async function main(): Promise<void> {
  const loadBefore = loadavg()[0] ?? 0;
  const all: Record<Workload, Results> = { cc: await measure('cc'), wc: await measure('wc') };
  const loadAfter = loadavg()[0] ?? 0;
  const mib = (n: number) => (n / MiB).toFixed(n < 10 * MiB ? 2 : 1);
  const secs = (n: number) => n.toFixed(2);
  const rows: string[][] = [
    ['command', 'build', 'sent by the client (MiB)', 'received (MiB)', 'wall time (s)'],
  ];
  for (const workload of ['cc', 'wc'] as const) {
    for (const mode of ['cache off', 'cache on'] as const) {
      for (const which of ['first', 'second'] as const) {
        const b = all[workload][mode][which];
        const sent = b.map((x) => x.sentBytes);
        const received = b.map((x) => x.receivedBytes);
        const wall = b.map((x) => x.seconds);
        rows.push([
          workload === 'cc' ? '`cc -c`' : '`wc -c`',
          `${mode}, ${which === 'first' ? '1st' : '2nd'}`,
          `${mib(median(sent))} (${range(sent, mib)})`,
          `${mib(median(received))}`,
          `${secs(median(wall))} (${range(wall, secs)})`,
        ]);
      }
    }
  }
  const results = all.cc;
  const offFirst = median(results['cache off'].first.map((b) => b.sentBytes));
  const onFirst = median(results['cache on'].first.map((b) => b.sentBytes));
  const onSecond = median(results['cache on'].second.map((b) => b.sentBytes));
  const machine = `${availableParallelism()} × ${cpus()[0]?.model.trim() ?? 'CPU'}, Node ${process.version}, loopback`;
  const section = [
    '## Extensions: input cache',
    '',
    `Machine: ${machine}; load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after (a shared machine: wall times are noisy). ${UNITS} units, each requiring the same ${mib(HEADER_BYTES)} MiB header plus its own source, over 2 rakeservers (separate processes, \`--max-jobs 2\`), median of ${RUNS} runs (range in brackets); MiB = 2^20 bytes, counted by the client (every byte it wrote or read, cost queries and handshakes included). \`cc -c unitNNN.c\` compiles; \`wc -c unitNNN.c big.h\` does next to nothing, so its wall time is mostly the transfer.`,
    '',
    markdownTable(rows),
    '',
    `With the cache the client sends ${((100 * onFirst) / offFirst).toFixed(1)}% of the bytes on a first build (the header once per server: concurrent jobs that need it wait for the first upload instead of sending it again) and ${((100 * onSecond) / offFirst).toFixed(2)}% on the second (only \`have\` lists and commands). On loopback moving 100 MiB costs little, so the wall-time gain is small next to this machine's noise; over a 1 Gb/s link the ${mib(offFirst - onFirst)} MiB not sent are about ${(((offFirst - onFirst) * 8) / 1e9).toFixed(1)} s per build, over 100 Mb/s about ${(((offFirst - onFirst) * 8) / 1e8).toFixed(0)} s.`,
    '',
    'Reproduce: `node --import tsx scripts/bench/cache.ts [--units 100] [--header-mib 1] [--runs 3] [--write-docs]`.',
    '"Cache off" is servers started with `--cache-size 0`: they do not offer `cache`, so the client uploads every requirement as in base mode (the other extensions stay on). The second build is the same build again on the same servers; each run starts new servers with empty workdirs.',
    '',
  ].join('\n');
  process.stdout.write(`${section}\n`);
  if (opts['write-docs']) {
    const path = join(root, 'docs', 'benchmarks.md');
    const doc = readFileSync(path, 'utf8');
    const start = doc.indexOf('## Extensions: input cache');
    let next: string;
    if (start < 0) {
      next = `${doc.trimEnd()}\n\n${section}`;
    } else {
      const after = doc.indexOf('\n## ', start + 3);
      next = doc.slice(0, start) + section + (after < 0 ? '' : doc.slice(after + 1));
    }
    writeFileSync(path, next.endsWith('\n') ? next : `${next}\n`);
    process.stderr.write('docs/benchmarks.md updated\n');
  }
}

await main();
