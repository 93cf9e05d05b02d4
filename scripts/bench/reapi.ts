/**
 * Benchmark: the example C project (examples/hello-c: four compiles, a link, a local run)
 * through REAPI against through our own protocol, both to one `rakeserver` on loopback.
 *
 *   node --import tsx scripts/bench/reapi.ts [--runs 7]    (also a part of `npm run bench`)
 *
 * The programs are built first as `npm run build` builds them (scripts/bench/lib/proc.ts,
 * into .bench/reapi). One `rakeserver --max-jobs 2 --reapi-port Q` process serves both. Each round builds
 * a clean copy of the project three ways, in rotating order, each a separate `bin/rake-ts.js`
 * process timed from spawn to exit:
 * - `ours`:  `--hosts 127.0.0.1:P` (our protocol, its extensions negotiated);
 * - `reapi`: `--executor grpc://127.0.0.1:Q` (every action executed: skip_cache_lookup);
 * - `reapi --cache`: the same with `--cache`, after a first build filled the ActionCache.
 * The local action (`./hello …`) runs on the same server in all three. Prints medians and
 * ranges, with the load average before and after.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compilePrograms, type Programs } from './lib/proc.js';
import { spread } from './lib/stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: { runs: { type: 'string', default: '7' } } });
const RUNS = Number(opts.runs);
let programs: Programs;

function startServer(log: string): Promise<{ child: ChildProcess; port: number; reapi: number }> {
  return new Promise((ok, fail) => {
    const child = spawn(
      process.execPath,
      [programs.rakeserver, '--port', '0', '--reapi-port', '0', '--max-jobs', '2'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let text = '';
    let port = 0;
    let reapi = 0;
    child.stderr?.on('data', (b: Buffer) => {
      text += b.toString();
      for (const line of text.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const r = JSON.parse(line) as { msg?: string; port?: number };
          if (r.msg === 'REAPI listening') reapi = r.port ?? 0;
          if (r.msg === 'listening') port = r.port ?? 0;
        } catch {}
      }
      if (port && reapi) {
        text = '';
        ok({ child, port, reapi });
      }
      if (text.length > 1e6) text = text.slice(-1e5);
    });
    child.on('exit', (code) => fail(new Error(`rakeserver exited (${code}); see ${log}`)));
  });
}

function timeRake(dir: string, args: string[]): Promise<number> {
  return new Promise((ok, fail) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [programs.rake, '--progress', 'never', '-q', ...args], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.stderr?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.on('exit', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0 || !out.includes('hello from rake-ts'))
        fail(new Error(`rake-ts ${args.join(' ')}: exit ${code}\n${out}`));
      else ok(ms);
    });
  });
}

async function main(): Promise<void> {
  programs = compilePrograms(join(root, '.bench', 'reapi'));
  const work = mkdtempSync(join(tmpdir(), 'rake-bench-reapi-'));
  const before = loadavg();
  const server = await startServer(join(work, 'server.log'));
  const ways: Record<string, string[]> = {
    ours: ['--hosts', `127.0.0.1:${server.port}`, '--port', String(server.port)],
    reapi: ['--executor', `grpc://127.0.0.1:${server.reapi}`, '--port', String(server.port)],
    'reapi --cache': [
      '--executor',
      `grpc://127.0.0.1:${server.reapi}`,
      '--cache',
      '--port',
      String(server.port),
    ],
  };
  const names = Object.keys(ways);
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  let n = 0;
  const fresh = () => {
    const dir = join(work, `p${n++}`);
    cpSync(join(root, 'examples/hello-c'), dir, { recursive: true });
    return dir;
  };
  try {
    // Warm-up: one build each way (fills the ActionCache for `reapi --cache`).
    for (const name of names) await timeRake(fresh(), ways[name] as string[]);
    for (let round = 0; round < RUNS; round++) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(round + i) % names.length] as string;
        const dir = fresh();
        (times[name] as number[]).push(await timeRake(dir, ways[name] as string[]));
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    server.child.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  }
  const after = loadavg();
  const la = (l: number[]) => l.map((v) => v.toFixed(2)).join(' ');
  console.log(
    `The example C project (examples/hello-c: 4 compiles, a link, a local run of the program), a clean copy per build, through one rakeserver on loopback (\`--max-jobs 2\`): our protocol (\`--hosts\`), REAPI (\`--executor\`, every action executed), and REAPI with \`--cache\` after a warm-up filled the ActionCache. ${RUNS} rounds in rotating order; wall time of the \`rake-ts\` process, ms:`,
  );
  console.log('');
  console.log('| client | median | range |');
  console.log('|---|---|---|');
  for (const name of names) {
    const s = spread(times[name] as number[]);
    console.log(`| ${name} | ${s.median.toFixed(0)} | ${s.min.toFixed(0)}–${s.max.toFixed(0)} |`);
  }
  console.log('');
  console.log(`Load average before: ${la(before)}; after: ${la(after)}.`);
}

await main();
