/**
 * `rake-ts hosts [Rakefile]`: asks every host of a Rakefile its cost, the way a run does
 * (the client's own `pollCosts`, one connection per host), and prints what came back:
 * reachable or why not, the cost, the round-trip time, and what the server says about
 * itself. Runs nothing.
 */
import { stat } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { lastValueFrom, toArray } from 'rxjs';
import type { Argv, CommandModule } from 'yargs';
import { formatDiagnostics } from '../../../grammar/diagnostics.js';
import { readRakefile } from '../../../grammar/parse.js';
import {
  type Endpoint,
  endpointIdentity,
  hostKey,
  hostListProblem,
  parseHostList,
} from '../../client/endpoint.js';
import { describePeer, type PeerInfo } from '../../client/negotiate.js';
import { type CostResult, pollCosts } from '../../client/poll.js';
import { resolveTargets } from '../../client/run.js';
import { tcpTransport } from '../../client/transport.js';
import { type CertificateInfo, describeCertificate } from '../../tls/index.js';
import {
  type CliIO,
  cliContext,
  EXIT_USAGE,
  POLL_TIMEOUT_OPTIONS,
  UsageError,
} from '../context.js';
import { clientTlsFrom, TLS_CLIENT_OPTIONS, type TlsClientArgs } from '../tls-options.js';

/** The flags of `rake-ts hosts`. */
export interface HostsArgs extends TlsClientArgs {
  readonly rakefile?: string | undefined;
  readonly file?: string | undefined;
  readonly directory?: string | undefined;
  readonly hosts?: string | undefined;
  readonly port?: number | undefined;
  readonly 'connect-timeout': number;
  readonly 'cost-timeout': number;
  readonly json: boolean;
}

/** Exit statuses of `rake-ts hosts`: every host answered; some did not; none did. */
export const HOSTS_EXIT = { allAnswered: 0, someSilent: 1, usage: EXIT_USAGE, noneAnswered: 3 };

/**
 * What is known of one host. `server` is what the server said about itself in its cost
 * reply: `{ kind: 'base' }` for a base-protocol server (the reference `rakeserver`), or ours
 * with its protocol, version and extensions; `description` is the one-line form.
 */
export interface HostReport {
  /** `host:port` as runs name it. */
  readonly host: string;
  /** `host`: in HOSTS; `local`: the local server (`localhost:PORT`) that runs local actions. */
  readonly role: 'host' | 'local' | 'host+local';
  readonly reachable: boolean;
  readonly cost?: number;
  readonly error?: string;
  readonly rttMs: number;
  readonly server?: PeerInfo & { readonly description: string };
  /**
   * For a TLS host (`rakes://`, `--tls`): the certificate it presented, when the handshake
   * got that far, with `description` as the table shows it (a warning within 14 days of expiry).
   */
  readonly tls?: { readonly certificate?: CertificateInfo & { readonly description: string } };
}

function withHostsOptions<T>(y: Argv<T>): Argv<T & HostsArgs> {
  return y
    .positional('rakefile', {
      type: 'string',
      describe: 'the Rakefile whose HOSTS to ask (default: ./Rakefile)',
    })
    .option('file', { alias: 'f', type: 'string', describe: 'the Rakefile (same as the argument)' })
    .option('directory', {
      alias: 'C',
      type: 'string',
      describe: 'change to this directory first (as make -C)',
    })
    .option('hosts', {
      type: 'string',
      describe: 'ask these hosts instead of HOSTS: "h1 h2:port [::1]:7000"',
    })
    .option('port', { type: 'number', describe: 'replace PORT (as for a run)' })
    .options(POLL_TIMEOUT_OPTIONS)
    .options(TLS_CLIENT_OPTIONS)
    .option('json', { type: 'boolean', default: false, describe: 'print the table as JSON' })
    .example([
      ['$0 hosts', "ask every host of ./Rakefile's HOSTS"],
      ['$0 hosts build/Rakefile --json', 'the same as JSON, for scripts'],
      ['$0 hosts --hosts "a b:7000"', 'ask other hosts'],
    ])
    .epilog(
      'Exit status: 0 every host answered, 1 some did not, 3 none did, 2 usage or Rakefile error.',
    )
    .check((args) => {
      const a = args as unknown as HostsArgs;
      if (a.rakefile !== undefined && a.file !== undefined) {
        throw new UsageError('give the Rakefile either as the argument or with -f, not both');
      }
      if (a.port !== undefined && !(Number.isInteger(a.port) && a.port >= 1 && a.port <= 65535)) {
        throw new UsageError('--port must be a whole number from 1 to 65535');
      }
      for (const [name, v] of [
        ['--connect-timeout', a['connect-timeout']],
        ['--cost-timeout', a['cost-timeout']],
      ] as const) {
        if (!(Number.isFinite(v) && v > 0))
          throw new UsageError(`${name} must be a number of seconds`);
      }
      const hostsProblem = a.hosts === undefined ? undefined : hostListProblem(a.hosts);
      if (hostsProblem !== undefined) throw new UsageError(hostsProblem);
      return true;
    }) as unknown as Argv<T & HostsArgs>;
}

/** Asks every host and prints the table (or JSON); resolves the exit status. */
export async function runHosts(args: HostsArgs, io: CliIO): Promise<number> {
  const base = resolve(io.cwd, args.directory ?? '.');
  if (args.directory !== undefined) {
    const st = await stat(base).catch(() => undefined);
    if (!st?.isDirectory()) {
      io.stderr.write(`rake-ts hosts: -C ${args.directory}: no such directory\n`);
      return EXIT_USAGE;
    }
  }
  const given = args.file ?? args.rakefile ?? 'Rakefile';
  const path = resolve(base, given);
  const label = relative(io.cwd, path) || given;
  const read = await readRakefile(path, { file: label });
  if (!read.ok) {
    io.stderr.write(formatDiagnostics(read.diagnostics, read.source));
    return EXIT_USAGE;
  }
  const rakefile = read.rakefile;
  let tls: Awaited<ReturnType<typeof clientTlsFrom>>;
  try {
    tls = await clientTlsFrom(args, base);
  } catch (err) {
    io.stderr.write(`rake-ts hosts: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT_USAGE;
  }
  const override =
    args.hosts === undefined ? undefined : parseHostList(args.hosts, args.port ?? rakefile.port);
  const targets = resolveTargets(rakefile, {
    directory: resolve(path, '..'),
    ...(override?.ok ? { hosts: override.hosts } : {}),
    ...(args.port !== undefined ? { port: args.port } : {}),
    ...(tls ? { tls } : {}),
  });
  const hasLocal = rakefile.actionsets.some((s) => s.actions.some((a) => !a.remote));
  const asked = hostsToAsk(targets.hosts, hasLocal ? targets.local : undefined);
  const transport = tcpTransport({ tls });
  const results = await lastValueFrom(
    pollCosts(
      asked.map((a) => a.endpoint),
      (e) => transport.queryCost(e),
      {
        connectTimeoutMs: args['connect-timeout'] * 1000,
        replyTimeoutMs: args['cost-timeout'] * 1000,
      },
    ).pipe(toArray()),
  );
  const reports = asked.map(({ endpoint, role }) => {
    const r = results.find((x) => x.endpoint === endpoint);
    const report = hostReport(hostKey(endpoint), role, r);
    if (endpoint.tls !== true) return report;
    const cert = transport.certificate(endpoint);
    return {
      ...report,
      tls:
        cert === undefined
          ? {}
          : { certificate: { ...cert, description: describeCertificate(cert) } },
    };
  });

  if (args.json) {
    io.stdout.write(`${JSON.stringify({ rakefile: label, hosts: reports }, null, 2)}\n`);
  } else if (reports.length === 0) {
    io.stdout.write(`${label}: no HOSTS and no local actions: nothing to ask\n`);
  } else {
    io.stdout.write(formatHostTable(reports));
  }
  const answered = reports.filter((r) => r.reachable).length;
  if (answered === reports.length) return HOSTS_EXIT.allAnswered;
  return answered === 0 ? HOSTS_EXIT.noneAnswered : HOSTS_EXIT.someSilent;
}

/** HOSTS in order, then the local server unless it is one of them (same endpoint). */
function hostsToAsk(
  hosts: readonly Endpoint[],
  local: Endpoint | undefined,
): { endpoint: Endpoint; role: HostReport['role'] }[] {
  const asked: { endpoint: Endpoint; role: HostReport['role'] }[] = [];
  const seen = new Set<string>();
  for (const endpoint of hosts) {
    const id = endpointIdentity(endpoint);
    if (seen.has(id)) continue;
    seen.add(id);
    asked.push({ endpoint, role: 'host' });
  }
  if (local !== undefined) {
    const id = endpointIdentity(local);
    const same = asked.find((a) => endpointIdentity(a.endpoint) === id);
    if (same !== undefined) same.role = 'host+local';
    else asked.push({ endpoint: local, role: 'local' });
  }
  return asked;
}

function hostReport(host: string, role: HostReport['role'], r: CostResult | undefined): HostReport {
  if (r === undefined) return { host, role, reachable: false, error: 'not asked', rttMs: 0 };
  if (!r.ok) return { host, role, reachable: false, error: r.error, rttMs: r.rttMs };
  const peer: PeerInfo = r.peer ?? { kind: 'base' };
  return {
    host,
    role,
    reachable: true,
    cost: r.cost,
    rttMs: r.rttMs,
    server: { ...peer, description: describePeer(peer) },
  };
}

/** The table `rake-ts hosts` prints: one row per host, columns padded. */
export function formatHostTable(reports: readonly HostReport[]): string {
  // A TLS column only when some host is TLS: `plain`, or `tls` and the certificate.
  const anyTls = reports.some((r) => r.tls !== undefined);
  const tlsCell = (r: HostReport) =>
    r.tls === undefined
      ? ['plain']
      : [`tls ${r.tls.certificate?.description ?? '(no certificate)'}`];
  const rows = [
    ['HOST', 'ROLE', 'COST', 'RTT', 'SERVER', ...(anyTls ? ['TLS'] : []), 'STATUS'],
    ...reports.map((r) => [
      r.host,
      r.role,
      r.cost === undefined ? '-' : String(r.cost),
      `${Math.round(r.rttMs)} ms`,
      r.server?.description ?? '-',
      ...(anyTls ? tlsCell(r) : []),
      r.reachable ? 'reachable' : `unreachable: ${r.error ?? 'unknown'}`,
    ]),
  ];
  const widths =
    rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length))) ?? [];
  // The last column (the status, maybe an error message) is not padded.
  return `${rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

/** `rake-ts hosts [Rakefile]`. */
export const hostsCommand: CommandModule<object, HostsArgs> = {
  command: 'hosts [rakefile]',
  describe: 'ask every host of a Rakefile its cost and show who answers; run nothing',
  builder: (y) => withHostsOptions(y),
  handler: async (args) => {
    const context = cliContext(args);
    context.exitCode = await runHosts(args, context);
  },
};
