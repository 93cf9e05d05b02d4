/**
 * Benchmark: filestream throughput and cost-query rate of the rakeserver (issue "The
 * server", Measure). Targets: ≥ 50% of a raw socket copy's throughput; server peak RSS
 * under 100 MiB while moving 256 MiB each way.
 *
 *   node --import tsx scripts/bench/transfer.ts [--mib 256] [--runs 5] [--seconds 3] [--write-docs]
 *
 * The server runs as a separate process (the compiled `rakeserver` program, built first,
 * `--log-level info`, its NDJSON log drained by this script) so its peak RSS is read from /proc/<pid>/status VmHWM.
 * Per run, on one connection: upload a MiB-sized random file as a requirement (timed from
 * `!R0` to the reply of `ln in.bin out.bin`, so it includes one trivial job), then download
 * `out.bin` as an output file (timed from the `!SSIF1` announcement to the last byte on
 * disk). The baseline is a plain TCP copy of the same file, disk → socket → disk, between
 * this process and a child process of the same script (`--raw-peer`), both directions.
 * Figures are medians of the runs. Cost queries: one connection per query, as the
 * reference client does, for `--seconds`, one at a time and 8 in parallel.
 * `--write-docs` replaces the section in docs/benchmarks.md.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  encodeHeader,
  encodePacket,
  expectFlagged,
  expectPlain,
  FLAGS,
  FramedReader,
  prepareInside,
  receiveFilestream,
  sendFilestream,
} from '../../src/protocol/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = join(root, '.bench', 'transfer');
const MB = 1e6;

const { values: opts } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    runs: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    'write-docs': { type: 'boolean', default: false },
    'raw-peer': { type: 'boolean', default: false },
  },
});

/** Child mode: the far end of the raw baseline. `U<name>\n` receives, `D<name>\n` sends. */
async function rawPeer(): Promise<void> {
  const server = createServer(async (socket) => {
    const reader = new FramedReader(socket);
    let line = '';
    for (;;) {
      const b = (await reader.readExact(1)).toString('latin1');
      if (b === '\n') break;
      line += b;
    }
    reader.dispose();
    const path = line.slice(1);
    if (line[0] === 'U') {
      await pipeline(socket, createWriteStream(path));
    } else {
      await pipeline(createReadStream(path, { highWaterMark: 256 * 1024 }), socket);
    }
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${(server.address() as { port: number }).port}\n`);
  });
}

/** A Markdown table padded the way Biome formats one, so the docs stay lint-clean. */
function markdownTable(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((x, c) => x.padEnd(widths[c] ?? 0)).join(' | ')} |`;
  const [head = [], ...body] = rows;
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function spread(values: number[]): string {
  return `${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)}`;
}

async function connected(port: number): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((ok, fail) => socket.once('connect', ok).once('error', fail));
  socket.setNoDelay(true);
  return socket;
}

/** Starts a child and resolves the first line of its stdout (raw peer) or the port from its log. */
function startChild(
  args: string[],
  portFrom: 'stdout' | 'log',
  viaTsx = true,
): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [...(viaTsx ? ['--import', 'tsx'] : []), ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    const stream = portFrom === 'stdout' ? child.stdout : child.stderr;
    const onData = (c: Buffer) => {
      buf += c.toString();
      for (const line of buf.split('\n')) {
        const port =
          portFrom === 'stdout'
            ? Number(line.trim()) || undefined
            : (() => {
                try {
                  const o = JSON.parse(line) as { msg?: string; port?: number };
                  return o.msg === 'listening' ? o.port : undefined;
                } catch {
                  return undefined;
                }
              })();
        if (port) {
          stream?.off('data', onData);
          stream?.resume(); // keep draining the log
          return resolve({ child, port });
        }
      }
    };
    stream?.on('data', onData);
    child.stderr?.on('data', () => {});
    child.once('exit', (code) => reject(new Error(`child exited early (${code}): ${buf}`)));
  });
}

async function vmHwm(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
  return kb * 1024;
}

async function makeFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  const block = randomBytes(4 * 1024 * 1024);
  for (let done = 0; done < bytes; done += block.length) {
    await fh.write(block, 0, Math.min(block.length, bytes - done));
  }
  await fh.close();
}

/** One upload + download through the rakeserver; returns seconds for each. */
async function oursOnce(
  port: number,
  file: string,
  outDir: string,
): Promise<{ up: number; down: number }> {
  const socket = await connected(port);
  const reader = new FramedReader(socket);
  const t0 = performance.now();
  socket.write(encodeHeader({ kind: 'plain', code: '!R', length: 0 }));
  await sendFilestream(socket, reader, [{ name: 'in.bin', path: file }]);
  socket.write(encodePacket({ code: '!C' }, 'ln in.bin out.bin'));
  expectFlagged(await reader.readHeader(), FLAGS.stdoutAndFiles);
  const t1 = performance.now();
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  const files = await receiveFilestream(reader, socket, {
    resolve: (n) => prepareInside(outDir, n),
  });
  const t2 = performance.now();
  socket.end(encodeHeader({ kind: 'plain', code: '!D', length: 0 }));
  if (files[0]?.size !== (await stat(file)).size) throw new Error('download size mismatch');
  return { up: (t1 - t0) / 1000, down: (t2 - t1) / 1000 };
}

/** One raw copy each way with the raw peer child; returns seconds for each. */
async function rawOnce(
  port: number,
  file: string,
  remote: string,
  local: string,
): Promise<{ up: number; down: number }> {
  const t0 = performance.now();
  const up = await connected(port);
  up.write(`U${remote}\n`);
  await pipeline(createReadStream(file, { highWaterMark: 256 * 1024 }), up);
  await new Promise((ok) => up.once('close', ok));
  // The peer has closed once its file stream finished.
  const t1 = performance.now();
  const down = await connected(port);
  down.write(`D${remote}\n`);
  await pipeline(down, createWriteStream(local));
  const t2 = performance.now();
  return { up: (t1 - t0) / 1000, down: (t2 - t1) / 1000 };
}

async function costQueries(port: number, seconds: number, parallel: number): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  let count = 0;
  const loop = async () => {
    while (performance.now() < deadline) {
      const socket = await connected(port);
      const reader = new FramedReader(socket);
      socket.write(encodeHeader({ kind: 'plain', code: '!E', length: 0 }));
      const h = expectPlain(await reader.readHeader(), '!E');
      await reader.readExact(h.length);
      socket.destroy();
      count++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: parallel }, loop));
  return count / ((performance.now() - start) / 1000);
}

async function main(): Promise<void> {
  const mib = Number(opts.mib);
  const runs = Number(opts.runs);
  const bytes = mib * 1024 * 1024;
  await rm(scratch, { recursive: true, force: true });
  await mkdir(scratch, { recursive: true });
  // The server runs as users run it: the compiled program. tsc emits even when some other
  // part of the tree fails to type-check, so only a missing output stops the benchmark.
  spawnSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: root,
      stdio: 'ignore',
    },
  );
  if (!existsSync(join(root, 'dist/src/cli/rakeserver.js'))) {
    throw new Error('dist/src/cli/rakeserver.js is missing: run `npm run build`');
  }
  const file = join(scratch, 'payload.bin');
  await makeFile(file, bytes);

  const server = await startChild(
    [
      join(root, 'bin', 'rakeserver.js'),
      '--port',
      '0',
      '--workdir',
      join(scratch, 'server-work'),
      '--log-level',
      'info',
    ],
    'log',
    false,
  );
  const raw = await startChild([fileURLToPath(import.meta.url), '--raw-peer'], 'stdout');
  const idleRss = await vmHwm(server.child.pid as number);

  const ours = { up: [] as number[], down: [] as number[] };
  const base = { up: [] as number[], down: [] as number[] };
  for (let i = 0; i < runs; i++) {
    const r = await rawOnce(
      raw.port,
      file,
      join(scratch, 'raw-remote.bin'),
      join(scratch, 'raw-local.bin'),
    );
    base.up.push(bytes / MB / r.up);
    base.down.push(bytes / MB / r.down);
    const o = await oursOnce(server.port, file, join(scratch, 'out'));
    ours.up.push(bytes / MB / o.up);
    ours.down.push(bytes / MB / o.down);
    process.stderr.write(
      `run ${i + 1}/${runs}: ours ${(bytes / MB / o.up).toFixed(0)}/${(bytes / MB / o.down).toFixed(0)} MB/s, raw ${(bytes / MB / r.up).toFixed(0)}/${(bytes / MB / r.down).toFixed(0)} MB/s (up/down)\n`,
    );
  }
  const peakRss = await vmHwm(server.child.pid as number);
  const seconds = Number(opts.seconds);
  const serial = await costQueries(server.port, seconds, 1);
  const parallel = await costQueries(server.port, seconds, 8);

  server.child.kill('SIGTERM');
  raw.child.kill('SIGTERM');
  await rm(scratch, { recursive: true, force: true });

  const row = (name: string, o: number[], b: number[]) => [
    name,
    `${median(o).toFixed(0)} (${spread(o)})`,
    `${median(b).toFixed(0)} (${spread(b)})`,
    `${((100 * median(o)) / median(b)).toFixed(0)}%`,
  ];
  const MiB = (n: number) => (n / 1024 / 1024).toFixed(1);
  const table = [
    `Machine: ${availableParallelism()} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}, loopback, ${mib} MiB random file, median of ${runs} runs (range in brackets), MB = 10^6 bytes.`,
    '',
    markdownTable([
      ['direction', 'rakeserver MB/s', 'raw TCP copy MB/s', 'ours / raw'],
      row('upload (requirement, `!R`)', ours.up, base.up),
      row('download (output file)', ours.down, base.down),
    ]),
    '',
    `Server peak RSS (VmHWM) over all runs: **${MiB(peakRss)} MiB** (${MiB(idleRss)} MiB after start-up; target < 100 MiB).`,
    'The growth is spent socket and file buffers waiting for V8’s external-memory GC (sampled',
    'separately with `process.memoryUsage()`: ArrayBuffers peak near 32 MiB, and a 32 MiB transfer',
    'grows RSS by about as much as a 256 MiB one): no file is held in memory.',
    '',
    `Cost queries (a fresh connection each, \`!E0\` → \`!E1 0\`), ${seconds} s each: **${serial.toFixed(0)}/s** one at a time, **${parallel.toFixed(0)}/s** with 8 in parallel.`,
    '',
    'Reproduce: `node --import tsx scripts/bench/transfer.ts [--mib 256] [--runs 5] [--write-docs]`.',
    'Upload time runs from `!R0` to the reply of a trivial job (`ln in.bin out.bin`), so it includes one job;',
    'download time runs from the `!SSIF1` announcement to the last byte on disk. The raw baseline copies',
    'the same file disk → socket → disk between two processes, like ours. The server is the compiled',
    '`bin/rakeserver.js` logging at `info` (drained by the script); the client side is this script',
    'using `src/protocol/` (run via tsx), the raw sender/receiver is the same script too.',
  ].join('\n');
  process.stdout.write(`${table}\n`);
  if (opts['write-docs']) await writeDocs(table);
}

async function writeDocs(body: string): Promise<void> {
  const path = join(root, 'docs', 'benchmarks.md');
  const text = await readFile(path, 'utf8');
  const title = '## Server: transfer throughput and cost queries';
  const start = text.indexOf(title);
  if (start < 0) throw new Error(`${path} has no "${title}" section`);
  const next = text.indexOf('\n## ', start + title.length);
  const after = next < 0 ? '' : `\n${text.slice(next + 1)}`;
  await writeFile(path, `${text.slice(0, start)}${title}\n\n${body}\n${after}`);
}

if (opts['raw-peer']) await rawPeer();
else await main();
