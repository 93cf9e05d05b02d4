/**
 * Benchmark: the generated 100-unit C build over TLS against the same build over the plain
 * port, in one run, on the same two servers (issue 23).
 *
 *   node --import tsx scripts/bench/tls.ts [--runs 5] [--units 100]
 *
 * Two `rakeserver` processes (`--max-jobs 1`, as the suite's builds), each serving a plain
 * port and a TLS port with a certificate made here by `openssl` (spec/tls/certs.ts: a team CA,
 * a server certificate for 127.0.0.1, EC P-256). Each round builds once per side, alternating
 * which goes first; each build is one `run()` of the client in this process with a transport
 * of its own (as one `rake-ts` process would have), so the TLS build pays its first full
 * handshake per host and resumes sessions after it. Wall time per build, medians and ranges;
 * the handshakes and resumptions of the TLS builds; the load average before and after.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { lastValueFrom, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import { makeTestCerts } from '../../spec/tls/certs.js';
import { run } from '../../src/client/run.js';
import { tcpTransport } from '../../src/client/transport.js';
import { freePort, waitForListen } from './lib/proc.js';
import { type CProject, checkProgram, cleanBuild, writeCProject } from './lib/project.js';
import { median } from './lib/stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = join(root, '.bench', 'tls');
const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    units: { type: 'string', default: '100' },
  },
});
const RUNS = Number(opts.runs);
const UNITS = Number(opts.units);

async function startServer(certPath: string, keyPath: string) {
  const port = await freePort();
  const tlsPort = await freePort();
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `const { main } = await import(${JSON.stringify(join(root, 'src/cli/rakeserver.ts'))}); process.exitCode = await main(process.argv.slice(1));`,
      '--',
      '--port',
      String(port),
      '--tls-port',
      String(tlsPort),
      '--tls-cert',
      certPath,
      '--tls-key',
      keyPath,
      '--max-jobs',
      '1',
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], cwd: root },
  );
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  await waitForListen('127.0.0.1', port, 30_000, () => !exited);
  await waitForListen('127.0.0.1', tlsPort, 30_000, () => !exited);
  return {
    port,
    tlsPort,
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

async function build(project: CProject, ca: Buffer) {
  cleanBuild(project);
  const file = join(project.dir, 'Rakefile');
  const parsed = parseRakefile(readFileSync(file, 'utf8'), { file });
  if (!parsed.ok) throw new Error(parsed.diagnostics.map((d) => d.message).join('\n'));
  const transport = tcpTransport({ tls: { ca } });
  const started = performance.now();
  const events = await lastValueFrom(
    run(parsed.rakefile, { directory: project.dir, embedded: false, transport }).pipe(toArray()),
  );
  const ms = performance.now() - started;
  const done = events.find((e) => e.type === 'done');
  if (done?.type !== 'done' || done.summary.exitStatus !== 0) {
    throw new Error(`build in ${project.dir} failed`);
  }
  checkProgram(project, project.dir);
  return { ms, tls: { ...transport.tlsStats } };
}

async function main() {
  const certs = await makeTestCerts();
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  const servers = [
    await startServer(certs.server.certPath, certs.server.keyPath),
    await startServer(certs.server.certPath, certs.server.keyPath),
  ];
  try {
    const plain = writeCProject(join(scratch, 'plain'), UNITS, {
      hosts: servers.map((s) => `127.0.0.1:${s.port}`),
      port: servers[0]?.port ?? 0,
    });
    const tls = writeCProject(join(scratch, 'tls'), UNITS, {
      hosts: servers.map((s) => `rakes://127.0.0.1:${s.tlsPort}`),
      port: servers[0]?.port ?? 0,
    });
    const loadBefore = loadavg();
    // One warm-up build per side: the servers' code and caches, not the figure.
    await build(plain, certs.ca.cert);
    await build(tls, certs.ca.cert);
    const times = { plain: [] as number[], tls: [] as number[] };
    const handshakes: { handshakes: number; resumed: number }[] = [];
    for (let i = 0; i < RUNS; i++) {
      const order = i % 2 === 0 ? (['plain', 'tls'] as const) : (['tls', 'plain'] as const);
      for (const side of order) {
        const r = await build(side === 'plain' ? plain : tls, certs.ca.cert);
        times[side].push(r.ms);
        if (side === 'tls') handshakes.push(r.tls);
      }
      process.stderr.write(`round ${i + 1}/${RUNS} done\n`);
    }
    const loadAfter = loadavg();
    const fmt = (v: number[]) =>
      `${(median(v) / 1000).toFixed(2)} s (${(Math.min(...v) / 1000).toFixed(2)}–${(Math.max(...v) / 1000).toFixed(2)})`;
    const ratios = times.tls.map((t, i) => t / (times.plain[i] ?? t));
    console.log(`units: ${UNITS}, 2 servers --max-jobs 1, ${RUNS} rounds`);
    console.log(`plain: ${fmt(times.plain)}`);
    console.log(`tls:   ${fmt(times.tls)}`);
    console.log(
      `tls/plain per round: median ${median(ratios).toFixed(3)} (${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
    );
    console.log(
      `TLS handshakes per build: ${handshakes.map((h) => `${h.handshakes} (${h.resumed} resumed)`).join(', ')}`,
    );
    console.log(
      `load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}; after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`,
    );
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await certs.remove();
  }
}

await main();
