/**
 * What the summary says about hosts, beyond the actions they ran: the hosts that did no work
 * and why (issue 18: a dead or refusing host must not be invisible), and the names that
 * turned out to be one server. Kept apart from the summary line so that any renderer (the
 * live display, plain lines, a log record) can add it.
 */
import type { RunSummary } from '../client/events.js';
import type { SilentHost } from '../client/hosts.js';

const REASON: Record<SilentHost['reason'], string> = {
  refused: 'refused the connection: nothing listens there',
  'timed-out': 'timed out',
  'no-such-name': 'no such name',
  unreachable: 'no route to it',
  'bad-answer': 'answered something that is not a cost',
  closed: 'closed the connection without answering',
  tls: 'could not be reached over TLS',
  'wanted-token': 'wanted a token: it got no more work in this run',
};

/** `127.0.0.1:7005 refused the connection: nothing listens there (ECONNREFUSED)`. */
export function describeSilentHost(h: SilentHost): string {
  const reason = REASON[h.reason];
  // The detail repeats the reason for a refused token; otherwise it says how it showed.
  const detail = h.reason === 'wanted-token' || h.detail === '' ? '' : ` (${h.detail})`;
  return `${h.host} ${reason}${detail}${h.reason === 'wanted-token' ? `: ${h.detail}` : ''}`;
}

/**
 * Lines after the summary line, each ending in `\n`; empty when every host answered and no
 * host was listed twice.
 *
 * ```
 * rake-ts: never answered: 10.0.0.9:6238 timed out (no connection within 2000 ms)
 * rake-ts: localhost:7001 is 127.0.0.1:7001 (both reach 127.0.0.1:7001): counted once
 * ```
 */
export function formatHostNotes(s: RunSummary): string {
  let out = '';
  for (const h of s.silentHosts ?? []) {
    const what = h.reason === 'wanted-token' ? 'no work' : 'never answered';
    out += `rake-ts: ${what}: ${describeSilentHost(h)}\n`;
  }
  for (const e of s.embedded ?? []) {
    out += `rake-ts: nothing listened at ${e.host}: an embedded server ran there (${e.reason})\n`;
  }
  for (const a of s.aliases ?? []) {
    out += `rake-ts: ${a.alias} is ${a.host} (both reach ${a.address}): counted once\n`;
  }
  return out;
}
