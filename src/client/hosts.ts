import { isIP } from 'node:net';
import { defer, from, map, type Observable, of } from 'rxjs';
import { bindAddress, type Endpoint, hostKey, isLoopback } from './endpoint.js';

/**
 * Finds the addresses a host name reaches (`dns.lookup` with `all`). Rejects, or resolves
 * to nothing, when it does not know: the name then stands for itself.
 */
export type LookupAddresses = (host: string) => Promise<readonly string[]>;

/**
 * A host listed under a second name that reaches the same server: `localhost:7001` beside
 * `127.0.0.1:7001`. The run keeps the first spelling (`host`) and drops the other (`alias`),
 * so that spreading, retries ("another host") and the summary see one server once.
 */
export interface HostAlias {
  /** The spelling the run uses (listed first). */
  readonly host: string;
  /** The later spelling, dropped. */
  readonly alias: string;
  /** `address:port` both reach. */
  readonly address: string;
}

/** The hosts of a run, each server once, and the local server under its hosts' spelling. */
export interface DistinctHosts {
  readonly hosts: readonly Endpoint[];
  /** `localhost:PORT`, or the listed host that reaches the same server. */
  readonly local: Endpoint;
  readonly aliases: readonly HostAlias[];
}

/**
 * The addresses an endpoint's name stands for, without asking anyone: an IP literal is
 * itself; a loopback name is the address an embedded server binds for it (`localhost` is
 * 127.0.0.1, as in `endpointIdentity`). `undefined`: the name must be looked up.
 */
function knownAddresses(host: string): readonly string[] | undefined {
  if (isLoopback(host)) return [bindAddress(host)];
  if (isIP(host) !== 0) return [host.toLowerCase()];
  return undefined;
}

/**
 * Merges the hosts that reach the same server: two endpoints are one host when they have
 * the same port and their names share an address. The first spelling of each server is
 * kept, in the order listed. Names are looked up (at once, all together) only when there
 * is something to compare them with; a name that does not resolve stands for itself (its
 * cost query will say why it cannot be reached). Synchronous when no name needs a lookup,
 * which keeps marble tests in virtual time.
 */
export function distinctHosts(
  hosts: readonly Endpoint[],
  local: Endpoint,
  lookup: LookupAddresses | undefined,
): Observable<DistinctHosts> {
  return defer(() => {
    const all = [...hosts, local];
    const unknown =
      lookup === undefined || hosts.length === 0
        ? []
        : [...new Set(all.map((e) => e.host).filter((h) => knownAddresses(h) === undefined))];
    const resolved =
      unknown.length === 0
        ? of(new Map<string, readonly string[]>())
        : from(
            Promise.all(
              unknown.map((h) =>
                (lookup as LookupAddresses)(h).then(
                  (addresses) => [h, addresses] as const,
                  () => [h, [] as readonly string[]] as const,
                ),
              ),
            ),
          ).pipe(map((pairs) => new Map(pairs)));
    return resolved.pipe(map((looked) => merge(hosts, local, looked)));
  });
}

function merge(
  hosts: readonly Endpoint[],
  local: Endpoint,
  looked: ReadonlyMap<string, readonly string[]>,
): DistinctHosts {
  const addressesOf = (e: Endpoint): readonly string[] => {
    const known = knownAddresses(e.host);
    if (known !== undefined) return known;
    const found = looked.get(e.host) ?? [];
    // Unresolved: the name stands for itself (it can only equal another of the same spelling).
    return found.length > 0 ? found.map((a) => a.toLowerCase()) : [`name:${e.host.toLowerCase()}`];
  };
  const kept: { endpoint: Endpoint; addresses: readonly string[] }[] = [];
  const aliases: HostAlias[] = [];
  const sameAs = (e: Endpoint) => {
    const mine = addressesOf(e);
    for (const k of kept) {
      if (k.endpoint.port !== e.port) continue;
      const shared = mine.find((a) => k.addresses.includes(a));
      if (shared !== undefined) return { kept: k.endpoint, shared };
    }
    return undefined;
  };
  const reached = (address: string, port: number) =>
    address.startsWith('name:') ? `${address.slice(5)}:${port}` : hostKey({ host: address, port });
  for (const e of hosts) {
    const same = sameAs(e);
    if (same === undefined) {
      kept.push({ endpoint: e, addresses: addressesOf(e) });
    } else if (hostKey(same.kept) !== hostKey(e)) {
      aliases.push({
        host: hostKey(same.kept),
        alias: hostKey(e),
        address: reached(same.shared, e.port),
      });
    }
  }
  const localSame = sameAs(local);
  return {
    hosts: kept.map((k) => k.endpoint),
    local: localSame?.kept ?? local,
    aliases,
  };
}

/**
 * Why a host could not be asked its cost, in the words the summary uses: nothing listened
 * (`refused`), no connection or no answer in time (`timed-out`), the name does not resolve
 * (`no-such-name`), no route to it (`unreachable`), it answered something that is not a
 * cost (`bad-answer`), it closed the connection without answering (`closed`), or TLS with it
 * failed (`tls`: a certificate, a CA, plain and TLS crossed; src/tls/).
 */
export type HostTrouble =
  | 'refused'
  | 'timed-out'
  | 'no-such-name'
  | 'unreachable'
  | 'bad-answer'
  | 'closed'
  | 'tls';

/**
 * A host that did no work in a run, and why: it never answered a cost query
 * ({@link HostTrouble}), or it refused this client's token (`wanted-token`; it gets no more
 * work in that run, its actions go to other hosts). Carried by the summary (`silentHosts`).
 */
export interface SilentHost {
  /** `host:port`. */
  readonly host: string;
  readonly reason: HostTrouble | 'wanted-token';
  /** The last error, as said to the user (`ECONNREFUSED`, `no connection within 2000 ms`, …). */
  readonly detail: string;
}

/**
 * A loopback endpoint where nothing listened, so the run started a server of its own there
 * (`embedded-server-started`): it then answered, but the summary says so.
 */
export interface EmbeddedNote {
  /** `host:port` the embedded server listened on. */
  readonly host: string;
  readonly reason: 'local-actions' | 'loopback-host' | 'fallback';
}

const NO_SUCH_NAME = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL']);
const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'EADDRNOTAVAIL']);

/** The {@link HostTrouble} a connection's system error code means (`undefined`: none of them). */
export function troubleOf(code: string | undefined): HostTrouble | undefined {
  if (code === undefined) return undefined;
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ETIMEDOUT') return 'timed-out';
  if (NO_SUCH_NAME.has(code)) return 'no-such-name';
  if (UNREACHABLE.has(code)) return 'unreachable';
  return undefined;
}
