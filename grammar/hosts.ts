import { isIPv4, isIPv6 } from 'node:net';

/**
 * A `HOSTS` entry as written: the port is absent when the entry names none; `tls` when it
 * was written `rakes://…` (the client talks TLS to it).
 */
export type HostEntry =
  | {
      readonly ok: true;
      readonly host: string;
      readonly port: number | undefined;
      readonly tls?: true;
    }
  | {
      readonly ok: false;
      readonly message: string;
      readonly hint: string;
      /** Where the fault starts inside the entry, and how long it is. */
      readonly start: number;
      readonly length: number;
    };

const HOST_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)$/;
const FORMS = 'write `name`, `name:port`, `192.0.2.7:port` or `[::1]:port`';

/** The scheme of a host the client reaches over TLS (`rakes://build1:6239`). */
export const TLS_SCHEME = 'rakes://';

/**
 * Reads one `HOSTS` entry: `name`, `name:port`, `a.b.c.d[:port]`, `[v6]` or `[v6]:port`,
 * each maybe after `rakes://` (TLS). An IPv6 address must be in brackets, since its colons
 * would read as a port.
 */
export function parseHostEntry(entry: string): HostEntry {
  if (entry.toLowerCase().startsWith(TLS_SCHEME)) {
    if (entry.length === TLS_SCHEME.length) {
      return fail(
        `\`${entry}\` names no host`,
        'write the host after it, as in `rakes://build1:6239`',
        0,
        entry.length,
      );
    }
    const inner = parsePlainEntry(entry.slice(TLS_SCHEME.length));
    if (inner.ok) return { ...inner, tls: true };
    return { ...inner, start: inner.start + TLS_SCHEME.length };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(entry)) {
    const scheme = entry.slice(0, entry.indexOf(':'));
    return fail(
      `unknown scheme \`${scheme}://\``,
      `write \`rakes://host:port\` for a TLS host, or the host without a scheme`,
      0,
      scheme.length + 3,
    );
  }
  return parsePlainEntry(entry);
}

function parsePlainEntry(entry: string): HostEntry {
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close === -1) {
      return fail(`\`${entry}\` has no closing \`]\``, FORMS, 0, entry.length);
    }
    const address = entry.slice(1, close);
    if (!isIPv6(address)) {
      return fail(
        `\`${address}\` is not an IPv6 address`,
        'brackets hold an IPv6 address, as in `[::1]:6238`; write other hosts without them',
        1,
        Math.max(1, address.length),
      );
    }
    const rest = entry.slice(close + 1);
    if (rest === '') return { ok: true, host: address, port: undefined };
    if (!rest.startsWith(':')) {
      return fail(`unexpected \`${rest}\` after \`[${address}]\``, FORMS, close + 1, rest.length);
    }
    return withPort(entry, address, close + 2);
  }

  const colon = entry.indexOf(':');
  if (colon !== -1 && entry.indexOf(':', colon + 1) !== -1) {
    return isIPv6(entry)
      ? fail(
          `IPv6 address \`${entry}\` must be written in brackets`,
          `write \`[${entry}]\`, or \`[${entry}]:6238\` with a port`,
          0,
          entry.length,
        )
      : fail(`\`${entry}\` has more than one \`:\``, FORMS, 0, entry.length);
  }
  const name = colon === -1 ? entry : entry.slice(0, colon);
  if (name === '') {
    return fail(
      `no host name before \`${entry}\``,
      `write the host before the port: \`localhost${entry}\``,
      0,
      1,
    );
  }
  const nameProblem = checkName(name);
  if (nameProblem !== undefined) return nameProblem;
  if (colon === -1) return { ok: true, host: name, port: undefined };
  return withPort(entry, name, colon + 1);
}

function checkName(name: string): HostEntry | undefined {
  if (/^[0-9.]+$/.test(name)) {
    if (isIPv4(name)) return undefined;
    return fail(
      `\`${name}\` is not a valid IPv4 address`,
      'an IPv4 address is four numbers from 0 to 255, as in `192.0.2.7`',
      0,
      name.length,
    );
  }
  if (HOST_NAME.test(name)) return undefined;
  const bad = /^[.-]|[^A-Za-z0-9_.-]/.exec(name)?.index ?? 0;
  return fail(
    `\`${name}\` is not a valid host name`,
    'host names use letters, digits, `-`, `_` and `.`, and start with a letter or digit',
    bad,
    1,
  );
}

/** The entry's `:port` part starts at `at`. */
function withPort(entry: string, host: string, at: number): HostEntry {
  const text = entry.slice(at);
  if (text === '') {
    return fail(
      `\`${entry}\` has no port after \`:\``,
      `write a port after the colon, as in \`${entry}6238\`, or drop the colon to use PORT`,
      at - 1,
      1,
    );
  }
  const port = parsePortNumber(text);
  if (port === undefined) {
    return fail(
      `port \`${text}\` of host \`${host}\` is not an integer between 1 and 65535`,
      'a host port is an integer between 1 and 65535, as in `hostname3:6333`',
      at,
      text.length,
    );
  }
  return { ok: true, host, port };
}

/** A decimal integer in 1..65535, or undefined. Leading zeros are allowed (`06238`). */
export function parsePortNumber(text: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(text)) return undefined;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : undefined;
}

function fail(message: string, hint: string, start: number, length: number): HostEntry {
  return { ok: false, message, hint, start, length };
}
