/**
 * Connections dialed while the Rakefile is parsed (docs/client.md, "Load streams"). The first
 * action of a run waits for its host's load stream: a TCP connect, then the stream's cost
 * query, then the job. The CLI reads the hosts from the Rakefile's text with a line scan
 * before it parses the file (the parse of a small Rakefile takes about as long as a round trip
 * at 20 ms), and dials them; each host's load stream then opens on its connection, already up,
 * instead of dialing one. Nothing is sent on these connections until the stream's cost query,
 * so a host sees the conversation it saw before, begun earlier. A connection the run does not
 * take (the file did not parse after all, a name merged into another host) is ended with `!D`,
 * the base protocol's goodbye, never left without a word.
 */

import type { Socket } from 'node:net';
import { parseHostEntry } from '../../grammar/hosts.js';
import { classifyLine } from '../../grammar/lexer.js';
import { DEFAULT_PORT } from '../../grammar/model.js';
import { OFFER_ANNEX } from '../protocol/extensions.js';
import { encodeHeader } from '../protocol/header.js';
import { type Endpoint, hostKey, isLoopback } from './endpoint.js';
import { type Dialed, plainDial } from './load-stream.js';

/**
 * Files up to this size are scanned (and dialed for): their parse is short, so a connection
 * dialed now is taken within moments; a larger file is parsed first, as before.
 */
export const SCAN_MAX_CHARS = 64 * 1024;

/** What the CLI's flags say about the hosts, before the Rakefile is read. */
export interface ScanOverrides {
  /** `--hosts`, as given (parsed with the file's `PORT` as the default port, as the run does). */
  readonly hosts?: string | undefined;
  /** `--port`. */
  readonly port?: number | undefined;
  /** `--tls`: every host is reached over TLS. */
  readonly tlsAll?: boolean;
}

/**
 * The hosts whose load streams a run of `text` opens as it starts: the Rakefile's `HOSTS`
 * (or `--hosts`), with its `PORT` and `--port` applied as `resolveTargets` does, when the
 * file's first action is remote. Only hosts reached over plain TCP and not on loopback (an
 * embedded server may have to be started there first; a loopback round trip costs nothing).
 * Empty when anything is in doubt: a larger file, a setting given twice, an entry that does
 * not read, a first action that is not remote. The parse still decides what runs; this only
 * says whom to dial early.
 */
export function hostsAhead(text: string, overrides: ScanOverrides = {}): Endpoint[] {
  if (text.length > SCAN_MAX_CHARS || overrides.tlsAll === true) return [];
  let hostsLine: string | undefined;
  let portLine: string | undefined;
  let firstAction: 'remote' | 'local' | undefined;
  for (let at = 0; at < text.length; ) {
    const end = text.indexOf('\n', at);
    const stop = end === -1 ? text.length : end;
    const kind = classifyLine(text, at);
    const line = text.slice(at, stop);
    if (kind === 'hosts') {
      if (hostsLine !== undefined) return [];
      hostsLine = line;
    } else if (kind === 'port') {
      if (portLine !== undefined) return [];
      portLine = line;
    } else if (kind === 'action' && firstAction === undefined) {
      firstAction = line.trimStart().startsWith('remote-') ? 'remote' : 'local';
    } else if (typeof kind !== 'string') {
      return [];
    }
    at = stop + 1;
  }
  if (firstAction !== 'remote') return [];
  let filePort = DEFAULT_PORT;
  if (portLine !== undefined) {
    const value = settingValue(portLine);
    if (!/^[0-9]{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) return [];
    filePort = Number(value);
  }
  const port = overrides.port;
  let hosts: Endpoint[] = [];
  if (overrides.hosts !== undefined) {
    const read = readEntries(overrides.hosts.split(/[\s,]+/), port ?? filePort);
    if (read === undefined) return [];
    hosts = read;
  } else if (hostsLine !== undefined) {
    const read = readEntries(settingValue(hostsLine).split(/[ \t]+/), filePort);
    if (read === undefined) return [];
    hosts = read.map((h) =>
      port !== undefined && h.port === filePort ? { ...h, port } : { ...h },
    );
  }
  const seen = new Set<string>();
  return hosts.filter((h) => {
    const key = hostKey(h);
    if (h.tls === true || isLoopback(h.host) || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The text after a setting's `=`, without a comment or surrounding blanks. */
function settingValue(line: string): string {
  const value = line.slice(line.indexOf('=') + 1);
  const hash = value.indexOf('#');
  return (hash === -1 ? value : value.slice(0, hash)).trim();
}

/** Every entry read, or undefined when one does not read. */
function readEntries(words: readonly string[], defaultPort: number): Endpoint[] | undefined {
  const hosts: Endpoint[] = [];
  for (const word of words) {
    if (word === '') continue;
    const entry = parseHostEntry(word);
    if (!entry.ok) return undefined;
    hosts.push({
      host: entry.host,
      port: entry.port ?? defaultPort,
      ...(entry.tls === true ? { tls: true } : {}),
    });
  }
  return hosts;
}

/** Where bin/early-dial.js leaves the connections it dialed before the bundle loaded. */
const LOADER_DIALS = Symbol.for('rake-ts.loader-dials');

/** A connection bin/early-dial.js dialed: its socket, and the bytes it wrote on it. */
export interface LoaderDial {
  readonly socket: Socket;
  readonly sent?: Buffer | undefined;
}

/**
 * The connections bin/early-dial.js dialed before the bundle loaded, by `host:port`, taken
 * out of its registry (so it ends none of them itself): every one is either taken by
 * {@link EarlyDials} or ended with {@link endLoaderDials}. Empty when it dialed none.
 */
export function takeLoaderDials(): Map<string, LoaderDial> {
  const holder = process as unknown as Record<symbol, Map<string, LoaderDial> | undefined>;
  const registry = holder[LOADER_DIALS];
  if (registry === undefined || registry.size === 0) return new Map();
  const taken = new Map(registry);
  registry.clear();
  return taken;
}

/** The base protocol's goodbye: what ends a connection dialed early that no stream took. */
function goodbye(socket: Socket): void {
  if (socket.destroyed) return;
  // What the host said (the answer to a cost query sent before the run) is read and dropped:
  // a connection whose input is never read never ends.
  socket.resume();
  socket.end(encodeHeader({ kind: 'plain', code: '!D', length: 0 }));
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Ends every connection left in `dials` (`!D0`, then closed) and empties it. */
export function endLoaderDials(dials: Map<string, LoaderDial>): void {
  for (const { socket } of dials.values()) goodbye(socket);
  dials.clear();
}

/** A connection bin/early-dial.js dialed, as a {@link Dialed} (it may still be connecting). */
function adopt({ socket, sent }: LoaderDial): Dialed {
  const ready = socket.connecting
    ? new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      })
    : socket.destroyed
      ? Promise.reject(socket.errored ?? new Error('closed before the run began'))
      : Promise.resolve();
  ready.catch(() => {});
  return { socket, ready, ...(sent === undefined ? {} : { querySent: true }) };
}

/**
 * Connections dialed ahead of the run, one per host, each taken at most once by that host's
 * load stream ({@link EarlyDials.take}); {@link EarlyDials.close} ends the rest.
 */
export class EarlyDials {
  readonly #dials = new Map<string, Dialed>();
  #closed = false;

  /**
   * Dials every endpoint now (`dial`: plain TCP unless a test substitutes it), or takes the
   * connection bin/early-dial.js dialed to it from `before` (by `host:port`) when all it
   * wrote on it is the load stream's opening cost query, which the stream then does not send
   * again. Whatever is left in `before` is the caller's to end ({@link endLoaderDials}).
   */
  constructor(
    endpoints: readonly Endpoint[],
    dial: (e: Endpoint) => Dialed = plainDial,
    before: Map<string, LoaderDial> = new Map(),
  ) {
    const opening = encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: OFFER_ANNEX });
    for (const e of endpoints) {
      const key = hostKey(e);
      if (this.#dials.has(key)) continue;
      const early = before.get(key);
      if (early !== undefined) {
        before.delete(key);
        if (early.sent === undefined || early.sent.equals(opening)) {
          this.#dials.set(key, adopt(early));
          continue;
        }
        // Not what this client would have said first: not used (ended, and dialed afresh).
        goodbye(early.socket);
      }
      const dialed = dial(e);
      // Until a stream takes it, a failure is only kept (the stream then sees it).
      dialed.socket.on('error', () => {});
      this.#dials.set(key, dialed);
    }
  }

  /** Hosts dialed and not taken yet. */
  get pending(): string[] {
    return [...this.#dials.keys()];
  }

  /**
   * The connection dialed for `endpoint` (connected or on its way), once; undefined when none
   * was dialed, it was taken already, or it has closed meanwhile (then it is dialed afresh).
   */
  take(endpoint: Endpoint): Dialed | undefined {
    if (this.#closed || endpoint.tls === true) return undefined;
    const key = hostKey(endpoint);
    const dialed = this.#dials.get(key);
    if (dialed === undefined) return undefined;
    this.#dials.delete(key);
    if (dialed.socket.destroyed || dialed.socket.readableEnded) {
      dialed.socket.destroy();
      return undefined;
    }
    return dialed;
  }

  /**
   * Ends every connection not taken: `!D` once it is up (nothing else was said on it, and a
   * base server takes `!D` as the end of a connection), then closed. Takes no more.
   */
  close(): void {
    this.#closed = true;
    for (const { socket } of this.#dials.values()) goodbye(socket);
    this.#dials.clear();
  }
}
