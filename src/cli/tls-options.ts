/**
 * The client's TLS flags, shared by `rake-ts` (run) and `rake-ts hosts`: `--tls` for every
 * host, `--tls-ca` to trust a team's CA, `--tls-cert/--tls-key` for mutual TLS. There is no
 * flag that skips verifying the server's certificate, on purpose (issue 23).
 */
import type { ClientTls } from '../tls/index.js';

/** The flags' values as yargs parses them. */
export interface TlsClientArgs {
  readonly tls: boolean;
  readonly 'tls-ca'?: string | undefined;
  readonly 'tls-cert'?: string | undefined;
  readonly 'tls-key'?: string | undefined;
}

/** yargs option definitions for {@link TlsClientArgs}. */
export const TLS_CLIENT_OPTIONS = {
  tls: {
    type: 'boolean',
    default: false,
    describe: 'talk TLS to every host, as if each were written rakes://host:port',
  },
  'tls-ca': {
    type: 'string',
    describe: 'trust the servers certificates this CA (PEM) signed, instead of the system store',
  },
  'tls-cert': {
    type: 'string',
    describe: "this client's certificate (PEM), for servers that require one (mutual TLS)",
  },
  'tls-key': { type: 'string', describe: 'the private key (PEM) of --tls-cert' },
} as const;

/**
 * Reads the files the flags name (relative to `base`); undefined when no flag is given. Rejects
 * with a `TlsConfigError` that names the flag and file.
 */
export async function clientTlsFrom(
  args: TlsClientArgs,
  base: string,
): Promise<ClientTls | undefined> {
  const files = { ca: args['tls-ca'], cert: args['tls-cert'], key: args['tls-key'] };
  if (!args.tls && files.ca === undefined && files.cert === undefined && files.key === undefined) {
    return undefined;
  }
  // Loaded only when a flag asks for TLS: a plain run never loads node:tls.
  const { loadClientTls } = await import('../tls/index.js');
  return loadClientTls(files, base, args.tls);
}
