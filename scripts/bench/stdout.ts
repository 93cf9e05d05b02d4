/**
 * Benchmark: large action output through a slow pipe (issue 17, defect 5). Against a real
 * `rakeserver` process on loopback, as `npm run build` makes it:
 *
 *   node --import tsx scripts/bench/stdout.ts [--actions 16] [--mb 60] [--runs 3]
 *
 * `--actions` remote actions each print `--mb` × 10^6 bytes (`yes <letter> | head -c N`: under
 * the server's 64 MiB stdout cap). The client (`bin/rake-ts.js -q`, a process of its own,
 * under `/usr/bin/time -v`) writes them to a pipe this script reads a little slower than it is
 * written (a 1 ms pause after each chunk). Checked: exit status 0, every byte present and in
 * place (each block is one action's letter and newline, repeated, every action once).
 * Reported: the client's peak RSS (`Maximum resident set size`) and wall time, median and
 * range over `--runs`, with the load average (the machine is shared).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, ROOT, startDaemon } from './lib/proc.js';
import { formatSpread, spread } from './lib/stats.js';

const { values: opts } = parseArgs({
  options: {
    actions: { type: 'string', default: '16' },
    mb: { type: 'string', default: '60' },
    runs: { type: 'string', default: '3' },
  },
});
const actions = Number(opts.actions);
const bytes = Number(opts.mb) * 1_000_000;
const runs = Number(opts.runs);
const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'.slice(0, actions);
if (letters.length < actions) throw new Error('at most 52 actions');

interface Outcome {
  readonly code: number | null;
  readonly rssKiB: number;
  readonly seconds: number;
  readonly problem: string | undefined;
}

/** One run of the client; its stdout checked as it streams in. */
function runClient(dir: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(
      '/usr/bin/time',
      ['-v', process.execPath, join(ROOT, 'bin/rake-ts.js'), '-q', '--progress=never'],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    let offset = 0;
    let problem: string | undefined;
    const seen = new Set<string>();
    let pattern: Buffer | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      for (let i = 0; i < chunk.length && problem === undefined; ) {
        const inBlock = offset % bytes;
        if (inBlock === 0) {
          const letter = String.fromCharCode(chunk[i] as number);
          if (!letters.includes(letter) || seen.has(letter)) {
            problem = `at byte ${offset}: a block starts with ${JSON.stringify(letter)}`;
            break;
          }
          seen.add(letter);
          pattern = Buffer.from(`${letter}\n`);
        }
        const n = Math.min(chunk.length - i, bytes - inBlock);
        for (let k = 0; k < n; k++) {
          if (chunk[i + k] !== (pattern as Buffer)[(inBlock + k) % 2]) {
            problem = `at byte ${offset + k}: not the block's pattern`;
            break;
          }
        }
        i += n;
        offset += n;
      }
      child.stdout.pause();
      setTimeout(() => child.stdout.resume(), 1);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      if (problem === undefined && offset !== actions * bytes) {
        problem = `${offset} bytes, not ${actions * bytes}`;
      }
      resolve({
        code,
        rssKiB: rss ? Number(rss[1]) : Number.NaN,
        seconds: (Date.now() - started) / 1000,
        problem: problem ?? (code === 0 ? undefined : stderr.slice(0, 2000)),
      });
    });
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'rake-bench-stdout-'));
  const port = await freePort();
  const server = await startDaemon(
    [
      process.execPath,
      join(ROOT, 'bin/rakeserver.js'),
      '--port',
      String(port),
      '-j',
      String(actions),
    ],
    { host: '127.0.0.1', port, logFile: join(dir, 'server.log') },
  );
  try {
    const lines = [...letters].map((l) => `\tremote-yes ${l} | head -c ${bytes}\n`).join('');
    writeFileSync(
      join(dir, 'Rakefile'),
      `PORT = ${port}\nHOSTS = 127.0.0.1:${port}\n\nprint:\n${lines}`,
    );
    const outcomes: Outcome[] = [];
    const load: string[] = [];
    for (let r = 0; r < runs; r++) {
      load.push(
        loadavg()
          .map((l) => l.toFixed(2))
          .join(' '),
      );
      const o = await runClient(dir);
      console.log(
        `run ${r + 1}: exit ${o.code}, peak RSS ${(o.rssKiB / 1024).toFixed(0)} MiB, ${o.seconds.toFixed(1)} s${o.problem ? `, PROBLEM: ${o.problem}` : ', every byte in place'}`,
      );
      outcomes.push(o);
    }
    console.log(
      `\n${actions} × ${bytes / 1e6} MB through a slow pipe: client peak RSS ${formatSpread(spread(outcomes.map((o) => o.rssKiB / 1024)), 0, ' MiB')}, wall ${formatSpread(spread(outcomes.map((o) => o.seconds)), 1, ' s')}; ${outcomes.filter((o) => o.code === 0 && o.problem === undefined).length}/${runs} runs exit 0 and whole; load average at each start: ${load.join(' | ')}`,
    );
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
