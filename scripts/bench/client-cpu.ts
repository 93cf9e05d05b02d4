/**
 * Benchmark: the client's own CPU time per remote action.
 *
 *   node --import tsx scripts/bench/client-cpu.ts [--actions 100] [--runs 5] [--label before]
 *                                                 [--jobs N] [--warm] [--baseline DIR]
 *
 * A scratch project under .bench/client-cpu/ holds `--actions` small C-source-like files and
 * one header; its Rakefile has one actionset of actions `remote-cp src/uN.c uN.o`, each
 * requiring its source and the header, over 2 loopback servers. A second Rakefile with one
 * such action gives the start-up baseline (module loading, parsing, the first connection).
 *
 * The TypeScript is compiled first (tsc, into .bench/client-cpu/dist-*) so no run pays for tsx.
 * Each server is `serve()` in a child process of its own, started fresh for every client run
 * with an empty work directory, so its input cache is cold and every requirement is uploaded
 * (`--warm` keeps the work directories: the cache holds every file, as for a rebuild, and
 * only `have`/`need` cross). The client is a child process too: the CLI's `main` with
 * lib/client-run.ts's `CLIENT_FLAGS` (`-q --progress=never --no-embedded` ...). A preloaded
 * module writes its `process.resourceUsage()` (user + system CPU) to a file at exit; server CPU is
 * never counted. Runs alternate the 1-action and the N-action Rakefile.
 *
 * CPU per action = (CPU of N actions − CPU of 1 action) / (N − 1), per pair of runs; printed
 * as the median with the range, with the start-up CPU and the load average.
 *
 * `--baseline DIR` compares against another source tree (a directory with its own src/,
 * grammar/ and tsconfig files, e.g. a `git archive` of an older commit unpacked under
 * .bench/ so it finds this checkout's node_modules): each run then measures both trees,
 * one after the other, so both see the same machine load.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type ClientRun, runClientProcess } from './lib/client-run.js';
import { median } from './lib/stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = join(root, '.bench', 'client-cpu');

const { values: opts } = parseArgs({
  options: {
    actions: { type: 'string', default: '100' },
    runs: { type: 'string', default: '5' },
    label: { type: 'string', default: 'current' },
    jobs: { type: 'string' },
    baseline: { type: 'string' },
    warm: { type: 'boolean', default: false },
  },
});
const ACTIONS = Number(opts.actions);
const RUNS = Number(opts.runs);
if (!(Number.isInteger(ACTIONS) && ACTIONS >= 2)) throw new Error('--actions must be at least 2');
if (!(Number.isInteger(RUNS) && RUNS >= 1)) throw new Error('--runs must be at least 1');

const range = (v: readonly number[], digits: number) =>
  `${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)}`;

/** Compiles a tree's src/ and grammar/ with its build tsconfig into `dist`. */
function compile(tree: string, dist: string): void {
  rmSync(dist, { recursive: true, force: true });
  const tsc = spawnSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', dist],
    { cwd: tree, encoding: 'utf8' },
  );
  for (const f of ['src/cli/commands/run.js', 'src/server/index.js']) {
    if (!existsSync(join(dist, f))) {
      throw new Error(`compile failed, ${f} missing:\n${tsc.stdout}${tsc.stderr}`);
    }
  }
}

/** `serve()` in a child process on a free loopback port; resolves once it listens. */
function startServer(
  dist: string,
  workdir: string,
): Promise<{ child: ChildProcess; port: number }> {
  mkdirSync(workdir, { recursive: true });
  const code = `
    const { serve } = await import(${JSON.stringify(join(dist, 'src/server/index.js'))});
    const server = await serve({ host: '127.0.0.1', port: 0, workdir: ${JSON.stringify(workdir)} });
    process.stdout.write(JSON.stringify({ port: server.port }) + '\\n');
    process.on('SIGTERM', () => server.close().then(() => process.exit(0)));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      const line = buf.split('\n')[0];
      if (buf.includes('\n') && line !== undefined) {
        resolve({ child, port: (JSON.parse(line) as { port: number }).port });
      }
    });
    child.once('exit', (c) => reject(new Error(`server exited early (${c}): ${buf}`)));
  });
}

function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** The sources and the header. */
function generateSources(dir: string): void {
  mkdirSync(join(dir, 'src'), { recursive: true });
  mkdirSync(join(dir, 'include'), { recursive: true });
  const decls = Array.from({ length: ACTIONS }, (_, i) => `long unit${i}(long seed);`).join('\n');
  writeFileSync(
    join(dir, 'include/units.h'),
    `#ifndef UNITS_H\n#define UNITS_H\n${decls}\n#endif\n`,
  );
  for (let i = 0; i < ACTIONS; i++) {
    writeFileSync(
      join(dir, `src/u${i}.c`),
      `#include "units.h"\n\nlong unit${i}(long seed) {\n  long t = seed;\n  for (int k = 0; k < ${i % 7} + 3; k++) t = (t * 31 + ${i}) % 1000003;\n  return t;\n}\n`,
    );
  }
}

/** The two Rakefiles (N actions, 1 action) for these ports. */
function writeRakefiles(dir: string, ports: readonly number[]): void {
  const head = `PORT = ${ports[0]}\nHOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}\n\ncopy:\n`;
  const action = (i: number) =>
    `\tremote-cp src/u${i}.c u${i}.o\n\t\trequires src/u${i}.c include/units.h\n`;
  writeFileSync(
    join(dir, 'Rakefile'),
    head + Array.from({ length: ACTIONS }, (_, i) => action(i)).join(''),
  );
  writeFileSync(join(dir, 'Rakefile.one'), head + action(0));
}

function cleanOutputs(dir: string): void {
  for (let i = 0; i < ACTIONS; i++) rmSync(join(dir, `u${i}.o`), { force: true });
}

/** Runs the CLI's `main` in a child process; its CPU as it reported it at exit. */
function runClient(dist: string, dir: string, rakefile: string): Promise<ClientRun> {
  return runClientProcess(dist, dir, join(scratch, `usage-${process.pid}.json`), [
    '-f',
    rakefile,
    ...(opts.jobs === undefined ? [] : ['-j', opts.jobs]),
  ]);
}

/** User + system CPU seconds of a client run. */
const cpuOf = (r: ClientRun) => r.user + r.system;

/** One client run against 2 fresh servers; checks every output file arrived. */
async function measure(
  dist: string,
  dir: string,
  rakefile: string,
  expected: number,
): Promise<ClientRun> {
  const servers = await Promise.all(
    [0, 1].map((i) => startServer(dist, join(scratch, `server${i}`))),
  );
  try {
    writeRakefiles(
      dir,
      servers.map((s) => s.port),
    );
    cleanOutputs(dir);
    const r = await runClient(dist, dir, rakefile);
    for (let i = 0; i < expected; i++) {
      const out = readFileSync(join(dir, `u${i}.o`), 'utf8');
      if (out !== readFileSync(join(dir, `src/u${i}.c`), 'utf8'))
        throw new Error(`u${i}.o differs`);
    }
    return r;
  } finally {
    await Promise.all(servers.map((s) => stopServer(s.child)));
  }
}

interface Tree {
  readonly label: string;
  readonly dist: string;
  readonly one: ClientRun[];
  readonly many: ClientRun[];
  readonly perAction: number[];
}

function summary(t: Tree, loads: readonly number[]): string {
  const cpu = (runs: readonly ClientRun[]) => runs.map(cpuOf);
  // Less noisy: each N-action run less the median start-up of all runs of the same tree.
  const startup = median(cpu(t.one));
  const againstMedian = t.many.map((r) => ((cpuOf(r) - startup) / (ACTIONS - 1)) * 1000);
  return [
    `[${t.label}] client CPU per action: ${median(t.perAction).toFixed(2)} ms (range ${range(t.perAction, 2)}); ` +
      `against the median start-up: ${median(againstMedian).toFixed(2)} ms (range ${range(againstMedian, 2)})`,
    `start-up (1 action): ${median(cpu(t.one)).toFixed(3)} s (range ${range(cpu(t.one), 3)})`,
    `${ACTIONS} actions: ${median(cpu(t.many)).toFixed(3)} s (range ${range(cpu(t.many), 3)}), ` +
      `wall ${median(t.many.map((r) => r.seconds)).toFixed(2)} s`,
    `voluntary context switches per action: ${(
      (median(t.many.map((r) => r.switches)) - median(t.one.map((r) => r.switches))) / (ACTIONS - 1)
    ).toFixed(1)}`,
    `1-min load average during runs ${range(loads, 2)}`,
  ].join('\n  ');
}

async function main(): Promise<void> {
  const trees: Tree[] = [];
  const tree = (label: string, dir: string): Tree => {
    const dist = join(scratch, `dist-${trees.length}`);
    compile(dir, dist);
    return { label, dist, one: [], many: [], perAction: [] };
  };
  if (opts.baseline !== undefined) trees.push(tree('baseline', resolve(opts.baseline)));
  trees.push(tree(opts.label, root));
  const dir = join(scratch, 'project');
  rmSync(dir, { recursive: true, force: true });
  generateSources(dir);
  process.stderr.write(
    `client CPU per action: ${ACTIONS} actions vs 1, ${RUNS} runs, ${trees.map((t) => t.label).join(' vs ')}\n`,
  );
  // One unmeasured pair per tree first: page cache, the first python3 spawn helper.
  for (const t of trees) {
    await measure(t.dist, dir, 'Rakefile.one', 1);
    await measure(t.dist, dir, 'Rakefile', ACTIONS);
  }
  const loads: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    for (const t of trees) {
      const a = await measure(t.dist, dir, 'Rakefile.one', 1);
      const b = await measure(t.dist, dir, 'Rakefile', ACTIONS);
      const per = ((cpuOf(b) - cpuOf(a)) / (ACTIONS - 1)) * 1000;
      t.one.push(a);
      t.many.push(b);
      t.perAction.push(per);
      const load = loadavg()[0] as number;
      loads.push(load);
      process.stderr.write(
        `  run ${run + 1} [${t.label}]: 1 action ${cpuOf(a).toFixed(3)} s CPU (${a.user.toFixed(3)} user), ` +
          `${ACTIONS} actions ${cpuOf(b).toFixed(3)} s CPU (${b.user.toFixed(3)} user, ${b.seconds.toFixed(2)} s wall) ` +
          `→ ${per.toFixed(2)} ms/action, load ${load.toFixed(2)}\n`,
      );
    }
  }
  for (const t of trees) process.stdout.write(`${summary(t, loads)}\n`);
  const [base, current] = trees;
  if (base !== undefined && current !== undefined && base !== current) {
    const saved = base.perAction.map((b, i) => b - (current.perAction[i] as number));
    process.stdout.write(
      `saved per action, run by run (${base.label} − ${current.label}): median ${median(saved).toFixed(2)} ms ` +
        `(range ${range(saved, 2)}), ${((100 * median(saved)) / median(base.perAction)).toFixed(0)}% of the baseline's median\n`,
    );
  }
  process.stdout.write(
    `load average at the end: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}\n`,
  );
}

await main();
