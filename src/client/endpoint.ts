import { parseHostEntry } from '../../grammar/hosts.js';
import { DEFAULT_PORT } from '../../grammar/model.js';
import { isLoopback } from '../util/loopback.js';

export { isLoopback };

/**
 * The name events and the summary give the Rakefile's own directory as a place to run
 * (`--local-here`): not a `host:port`, since no server is involved.
 */
export const HERE = 'here';

/** A server address: a host name or IP (IPv6 without brackets) and a port. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** Talk TLS to this host (written `rakes://host:port`, or `--tls`): see src/tls/. */
  readonly tls?: boolean;
}

/**
 * `host:port`, with brackets for IPv6 (`[::1]:6238`): the name events and logs use. Only an
 * IPv6 address holds a colon (the Rakefile and `--hosts` take no other), and testing for
 * one spares the first call of every run compiling Node's IPv6 pattern (about 10 ms here).
 */
export function hostKey(e: Endpoint): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

/**
 * The address an embedded server binds for a loopback name. `localhost` binds 127.0.0.1:
 * Node's client connects with happy eyeballs, so it reaches the server either way.
 */
export function bindAddress(host: string): string {
  const h = host.toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return '127.0.0.1';
  return h;
}

/**
 * A key under which two spellings of the same loopback endpoint coincide
 * (`localhost:6238` and `127.0.0.1:6238`), so one embedded server serves both.
 */
export function endpointIdentity(e: Endpoint): string {
  return isLoopback(e.host) ? hostKey({ host: bindAddress(e.host), port: e.port }) : hostKey(e);
}

/**
 * Parses a `--hosts` value: entries separated by spaces or commas, each read by the same
 * function as a Rakefile's `HOSTS` entries (grammar/hosts.ts), so both take and refuse the
 * same words (`name`, `name:port`, `a.b.c.d[:port]`, `[v6][:port]`, each maybe after
 * `rakes://` for TLS; a bare IPv6 address is
 * refused with a hint to bracket it). Returns the endpoints, or the first entry it could not
 * read with what is wrong and what to write instead.
 */
export function parseHostList(
  text: string,
  defaultPort: number,
): { ok: true; hosts: Endpoint[] } | { ok: false; bad: string; message: string; hint: string } {
  const hosts: Endpoint[] = [];
  for (const item of text.split(/[\s,]+/).filter((s) => s !== '')) {
    const entry = parseHostEntry(item);
    if (!entry.ok) return { ok: false, bad: item, message: entry.message, hint: entry.hint };
    hosts.push({
      host: entry.host,
      port: entry.port ?? defaultPort,
      ...(entry.tls ? { tls: true } : {}),
    });
  }
  if (hosts.length > 0) return { ok: true, hosts };
  return {
    ok: false,
    bad: text,
    message: 'no hosts given',
    hint: 'name at least one host, as in `--hosts "a b:6333"`',
  };
}

/** The usage error for a `--hosts` value `parseHostList` refused, or undefined. */
export function hostListProblem(text: string): string | undefined {
  const parsed = parseHostList(text, DEFAULT_PORT);
  if (parsed.ok) return undefined;
  return `--hosts: cannot read ${JSON.stringify(parsed.bad)}: ${parsed.message}; ${parsed.hint}`;
}
