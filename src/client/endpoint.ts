import { isIP } from 'node:net';
import { isLoopback } from '../util/loopback.js';

export { isLoopback };

/** A server address: a host name or IP (IPv6 without brackets) and a port. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
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
 * Parses a `--hosts` value: names separated by spaces or commas, each `host`, `host:port`,
 * `[v6]:port` or bare `v6`. Returns the endpoints or the first entry it could not read.
 */
export function parseHostList(
  text: string,
  defaultPort: number,
): { ok: true; hosts: Endpoint[] } | { ok: false; bad: string } {
  const hosts: Endpoint[] = [];
  for (const item of text.split(/[\s,]+/).filter((s) => s !== '')) {
    const parsed = parseHost(item, defaultPort);
    if (parsed === undefined) return { ok: false, bad: item };
    hosts.push(parsed);
  }
  return hosts.length === 0 ? { ok: false, bad: text } : { ok: true, hosts };
}

function parseHost(item: string, defaultPort: number): Endpoint | undefined {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(item);
  if (bracketed) return withPort(bracketed[1] as string, bracketed[2], defaultPort);
  // Two colons at least before asking Node (whose IPv6 pattern is dear to compile).
  if (item.indexOf(':') !== item.lastIndexOf(':') && isIP(item) === 6) {
    return { host: item, port: defaultPort };
  }
  const plain = /^([^:\s]+)(?::(\d+))?$/.exec(item);
  if (plain) return withPort(plain[1] as string, plain[2], defaultPort);
  return undefined;
}

function withPort(host: string, port: string | undefined, defaultPort: number) {
  if (port === undefined) return { host, port: defaultPort };
  const n = Number(port);
  return n >= 1 && n <= 65535 ? { host, port: n } : undefined;
}
