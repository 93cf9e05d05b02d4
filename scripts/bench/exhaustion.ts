/**
 * Benchmark: connection exhaustion (issue 17, defect 2). Against a real `rakeserver` process
 * on loopback, as `npm run build` makes it:
 *
 *   node --import tsx scripts/bench/exhaustion.ts [--slowloris 2000] [--preauth 1500]
 *                                                [--runs 3] [--seconds 20] [--units 8]
 *
 * 1. **slowloris**: `--slowloris` connections, each trickling a header one byte a second (the
 *    bytes a real client would send, so no refusal comes before the message deadline) and
 *    reconnecting whenever the server closes it, so that many stay open. While they are, a
 *    normal client (`bin/rake-ts.js`, a process of its own) builds a C project of `--units`
 *    units plus a link, `--runs` times; the same builds without the attack are the baseline.
 * 2. **pre-auth**: a server with a token; `--preauth` connections say hello with `auth`, read
 *    the challenge and then (a) announce a 1 MiB `!X` and send its bytes (the attack the
 *    review measured at 1.55 GiB for 1 500 connections), or (b) send a 4 095-byte `!X` of the
 *    4 096 allowed and stall; each reconnects when closed, for `--seconds` each.
 *
 * Reported: the server's RSS (VmRSS sampled every 250 ms: the peak; VmHWM at the end), the
 * builds' wall times (median and range) and whether every build was correct, the connections
 * the attackers had open, and how often the server closed one (refusals and evictions).
 * The load average is printed with the figures: the machine is shared.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runRakeProgram } from './lib/client-run.js';
import { compilePrograms, type Daemon, freePort, ROOT, startDaemon } from './lib/proc.js';
import { checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { formatSpread, spread } from './lib/stats.js';

const { values: opts } = parseArgs({
  options: {
    slowloris: { type: 'string', default: '2000' },
    preauth: { type: 'string', default: '1500' },
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '20' },
    units: { type: 'string', default: '8' },
  },
});
const SLOWLORIS = Number(opts.slowloris);
const PREAUTH = Number(opts.preauth);
const RUNS = Number(opts.runs);
const SECONDS = Number(opts.seconds);
const UNITS = Number(opts.units);
const TOKEN = 'exhaustion-bench-token';
const scratch = join(ROOT, '.bench', 'exhaustion');

const MiB = 1024 * 1024;
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM); 0 once the process is gone. */
function vm(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
      readFileSync(`/proc/${pid}/status`, 'utf8'),
    );
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Samples a process's VmRSS every 250 ms until stopped; resolves the peak. */
function sampleRss(pid: number): { stop(): number } {
  let peak = vm(pid, 'VmRSS');
  const timer = setInterval(() => {
    peak = Math.max(peak, vm(pid, 'VmRSS'));
  }, 250);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, vm(pid, 'VmRSS'));
    },
  };
}

async function startServer(name: string, extra: string[], env?: NodeJS.ProcessEnv) {
  const port = await freePort();
  const programs = compiled;
  return startDaemon(
    [
      process.execPath,
      programs.rakeserver,
      '--port',
      String(port),
      '--log-level',
      'warn',
      ...extra,
    ],
    { host: '127.0.0.1', port, logFile: join(scratch, `${name}.log`), ...(env ? { env } : {}) },
  );
}

/**
 * Keeps `count` attacking connections open: each runs `attack` on its socket and, when the
 * server closes it, is replaced by a new one. `stop()` ends them all.
 */
function swarm(
  port: number,
  count: number,
  attack: (socket: Socket) => void,
): { open(): number; closedByServer(): number; stop(): void } {
  const sockets = new Set<Socket>();
  let stopped = false;
  let closed = 0;
  const open = () => {
    if (stopped) return;
    const socket = connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    socket.once('connect', () => {
      sockets.add(socket);
      attack(socket);
    });
    socket.once('close', () => {
      if (sockets.delete(socket)) closed++;
      // A short pause before the replacement: a real attacker's reconnect loop.
      if (!stopped) setTimeout(open, 50);
    });
  };
  // Connect in batches of 100 so the listen backlog is not the limit being measured.
  let started = 0;
  const batch = () => {
    for (let i = 0; i < 100 && started < count; i++, started++) open();
    if (started < count) setTimeout(batch, 20);
  };
  batch();
  return {
    open: () => sockets.size,
    closedByServer: () => closed,
    stop() {
      stopped = true;
      for (const s of sockets) s.destroy();
    },
  };
}

/** One header byte a second: `!E0` + padding, never finished before the deadline. */
function slowloris(socket: Socket): void {
  const header = Buffer.from('!E0'.padEnd(64, ' '));
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || i >= header.length) return clearInterval(timer);
    socket.write(header.subarray(i, i + 1));
    i++;
  }, 1000);
  socket.once('close', () => clearInterval(timer));
}

/** Says hello with auth, waits for the challenge, then runs `then`. */
function preauth(then: (socket: Socket) => void): (socket: Socket) => void {
  return (socket) => {
    const hello = Buffer.from('hello rake/1 ext=stderr,mode,cache,auth');
    socket.write(Buffer.concat([Buffer.from(`!X${hello.length}`.padEnd(64, ' ')), hello]));
    let got = 0;
    const onData = (chunk: Buffer) => {
      got += chunk.length;
      if (got >= 64 + 42) {
        socket.off('data', onData);
        socket.on('data', () => {});
        then(socket);
      }
    };
    socket.on('data', onData);
  };
}

/** The review's attack: a 1 MiB `!X` before authentication, and its bytes. */
const oversize = preauth((socket) => {
  socket.write(Buffer.from('!X1048576'.padEnd(64, ' ')));
  socket.write(Buffer.alloc(MiB, 0x61));
});

/** The most a peer may still make the server hold: 4 095 of an allowed 4 096 bytes, then nothing. */
const stall = preauth((socket) => {
  socket.write(Buffer.from('!X4096'.padEnd(64, ' ')));
  socket.write(Buffer.alloc(4095, 0x61));
});

async function build(project: ReturnType<typeof writeCProject>, label: string): Promise<number> {
  cleanBuild(project);
  const run = await runRakeProgram(
    compiled.rake,
    project.dir,
    join(scratch, `report-${process.pid}.json`),
  );
  checkProgram(project, label);
  return run.seconds;
}

async function waitOpen(s: { open(): number }, want: number, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (s.open() < want && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function slowlorisPhase(): Promise<void> {
  const server = await startServer('slowloris', []);
  const pid = server.child.pid as number;
  const project = writeCProject(join(scratch, 'project'), UNITS, {
    hosts: [`127.0.0.1:${server.port}`],
    port: server.port,
  });
  try {
    const baseline: number[] = [];
    for (let i = 0; i < RUNS; i++) baseline.push(await build(project, 'baseline'));
    const rssBefore = vm(pid, 'VmRSS');
    const rss = sampleRss(pid);
    const attack = swarm(server.port, SLOWLORIS, slowloris);
    await waitOpen(attack, SLOWLORIS, 30_000);
    const openAtStart = attack.open();
    const times: number[] = [];
    const openDuring: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      openDuring.push(attack.open());
      times.push(await build(project, 'under attack'));
      openDuring.push(attack.open());
    }
    const peak = rss.stop();
    const closed = attack.closedByServer();
    attack.stop();
    console.log(
      [
        `slowloris: ${SLOWLORIS} connections trickling a header 1 byte/s (${openAtStart} open when the builds began, ${Math.min(...openDuring)}–${Math.max(...openDuring)} during them; the server closed ${closed})`,
        `  builds of ${UNITS} units + link, correct every time: baseline ${formatSpread(spread(baseline), 2, ' s')}, under attack ${formatSpread(spread(times), 2, ' s')}`,
        `  server RSS: ${(rssBefore / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB during (VmHWM ${(vm(pid, 'VmHWM') / MiB).toFixed(0)} MiB); load average ${load()}`,
      ].join('\n'),
    );
  } finally {
    await server.stop();
  }
}

async function preauthPhase(
  name: string,
  attackWith: (socket: Socket) => void,
  what: string,
): Promise<void> {
  const server: Daemon = await startServer(name, [], { ...process.env, RAKE_TOKEN: TOKEN });
  const pid = server.child.pid as number;
  try {
    const rssBefore = vm(pid, 'VmRSS');
    const rss = sampleRss(pid);
    const attack = swarm(server.port, PREAUTH, attackWith);
    const opened: number[] = [];
    const until = performance.now() + SECONDS * 1000;
    while (performance.now() < until) {
      await new Promise((r) => setTimeout(r, 500));
      opened.push(attack.open());
    }
    const peak = rss.stop();
    const closed = attack.closedByServer();
    attack.stop();
    console.log(
      [
        `pre-auth, ${what}: ${PREAUTH} connections for ${SECONDS} s (open: median ${formatSpread(spread(opened), 0)}; the server closed ${closed})`,
        `  server RSS: ${(rssBefore / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB (VmHWM ${(vm(pid, 'VmHWM') / MiB).toFixed(0)} MiB); load average ${load()}`,
      ].join('\n'),
    );
  } finally {
    await server.stop();
  }
}

console.log(`compiling the programs into ${scratch} ...; load average ${load()}`);
const compiled = compilePrograms(join(scratch, 'build'));
if (SLOWLORIS > 0) await slowlorisPhase();
if (PREAUTH > 0) {
  await preauthPhase('preauth-oversize', oversize, 'a 1 MiB !X announced and sent');
  await preauthPhase('preauth-stall', stall, '4 095 bytes of a 4 096-byte !X, then silence');
}
