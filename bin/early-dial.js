// Dials a run's hosts before the bundle loads (docs/client.md, "Load streams"; src/client/
// early-dial.ts). bin/rake-ts.js calls `dialAhead` before it compiles dist/rake-ts.cjs: a
// client spends 60-90 ms loading its modules, and the connect and the load stream's opening
// cost query, two round trips the run's first action would otherwise wait for, go on during
// that time. This file reads the command line and the Rakefile with a line scan (not the
// grammar, which is in the bundle) and may dial too little or wrongly: the bundle scans the
// file again with the real lexer and takes only the connections its own scan would have
// dialed, by host:port (`takeLoaderDials`); it ends every other one with `!D0`.
//
// What goes out before the bundle loads is exactly what the client sends first on a load
// stream's connection: the cost query with the offer, `!E0` + spaces + `rake/1` (a base
// server reads it as a plain cost query; it is what this client sends a base host anyway).
// It does not depend on the run's token or TLS settings; a run with `--tls` or a TLS option,
// or one whose flags this scan does not know, is not dialed here at all.
//
// CommonJS, like bin/rake-ts.js; `node:net` is loaded only when there is a host to dial.
const { readFileSync, statSync } = require('node:fs');
const { resolve } = require('node:path');

/** Where the connections are left for the bundle (src/client/early-dial.ts reads it). */
const REGISTRY = Symbol.for('rake-ts.loader-dials');

/** The load stream's opening cost query: src/protocol/extensions.ts OFFER_ANNEX in `!E0`. */
const OPENING = Buffer.from(`${'!E0'.padEnd(58, ' ')}rake/1`, 'latin1');

/** `!D0`: the base protocol's goodbye. */
const GOODBYE = Buffer.from('!D0'.padEnd(64, ' '), 'latin1');

/** Files larger than this are not scanned (src/client/early-dial.ts SCAN_MAX_CHARS). */
const SCAN_MAX_CHARS = 64 * 1024;

/** Flags that take a value (`--flag value` or `--flag=value`). */
const VALUED = new Set([
  '-f',
  '--file',
  '-C',
  '--directory',
  '-j',
  '--jobs',
  '--hosts',
  '--port',
  '--connect-timeout',
  '--cost-timeout',
  '--job-timeout',
  '--retries',
  '--dispatch-queue',
  '--token-file',
  '--log-format',
  '--log-level',
  '--log-file',
  '--progress',
  '--trace',
  '--report',
  '--cache-dir',
  '--cache-size',
]);

/** Flags that take no value (and their `--no-` forms). */
const SWITCHES = new Set([
  '--fail-fast',
  '--embedded',
  '--fallback',
  '--local-here',
  '--cache',
  '--quiet',
  '-q',
  '--verbose',
  '-v',
  '-vv',
  '-vvv',
  '--load-streams',
]);

/** The subcommands: their first word is not a Rakefile. */
const COMMANDS = new Set(['check', 'hosts', 'serve', 'completion']);

const HOST_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * What the command line says, for a run this scan understands: the Rakefile's path, `--hosts`
 * and `--port`; undefined for anything else (a subcommand, a flag it does not know, `-n`,
 * `--executor`, `--tls`, `--no-load-streams`, a value it cannot read).
 */
function readArgs(args, env, cwd) {
  let directory;
  let file;
  let positional;
  let hosts;
  let port;
  let loadStreams;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--') return undefined;
    if (!arg.startsWith('-') || arg === '-') {
      if (positional !== undefined || COMMANDS.has(arg) || arg === '') return undefined;
      positional = arg;
      continue;
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq === -1 ? arg : arg.slice(0, eq);
    let value;
    if (VALUED.has(name)) {
      if (eq !== -1) value = arg.slice(eq + 1);
      else {
        value = args[++i];
        if (value === undefined) return undefined;
      }
    } else if (SWITCHES.has(name)) {
      if (name === '--load-streams') {
        if (eq === -1) loadStreams = true;
        else if (arg.slice(eq + 1) === 'true') loadStreams = true;
        else return undefined;
      } else if (eq !== -1 && !/^(true|false)$/.test(arg.slice(eq + 1))) return undefined;
      continue;
    } else if (eq === -1 && name.startsWith('--no-') && SWITCHES.has(`--${name.slice(5)}`)) {
      if (name === '--no-load-streams') return undefined;
      continue;
    } else {
      return undefined;
    }
    if (name === '-f' || name === '--file') file = value;
    else if (name === '-C' || name === '--directory') directory = value;
    else if (name === '--hosts') hosts = value;
    else if (name === '--port') {
      if (!/^[0-9]{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
        return undefined;
      }
      port = Number(value);
    }
  }
  if (loadStreams === undefined && env.RAKE_LOAD_STREAMS === '0') return undefined;
  if (file !== undefined && positional !== undefined) return undefined;
  const base = resolve(cwd, directory ?? '.');
  return { path: resolve(base, file ?? positional ?? 'Rakefile'), hosts, port };
}

/** True for names that can only mean this machine (src/util/loopback.ts). */
function isLoopback(host) {
  const h = host.toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  const v4 = IPV4.exec(h);
  return v4 !== null && v4[1] === '127';
}

/**
 * `name`, `name:port`, `a.b.c.d` or `a.b.c.d:port` (`rakes://` before it: a TLS host, which
 * is not dialed here); undefined for any other entry, which ends the scan.
 */
function readEntry(word, defaultPort) {
  if (word.toLowerCase().startsWith('rakes://')) return { tls: true };
  const colon = word.indexOf(':');
  const name = colon === -1 ? word : word.slice(0, colon);
  if (!HOST_NAME.test(name)) return undefined;
  if (/^[0-9.]+$/.test(name)) {
    const v4 = IPV4.exec(name);
    if (v4 === null || v4.slice(1).some((octet) => Number(octet) > 255)) return undefined;
  }
  if (colon === -1) return { host: name, port: defaultPort };
  const port = word.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return undefined;
  return { host: name, port: Number(port) };
}

/** Every entry read (TLS ones left out), or undefined when one does not read. */
function readEntries(words, defaultPort) {
  const out = [];
  for (const word of words) {
    if (word === '') continue;
    const entry = readEntry(word, defaultPort);
    if (entry === undefined) return undefined;
    if (entry.tls !== true) out.push(entry);
  }
  return out;
}

/** The text after a setting's `=`, without a comment or surrounding blanks. */
function settingValue(line) {
  const value = line.slice(line.indexOf('=') + 1);
  const hash = value.indexOf('#');
  return (hash === -1 ? value : value.slice(0, hash)).trim();
}

/**
 * The hosts a run of `text` would open load streams to, as src/client/early-dial.ts
 * `hostsAhead` reads them (the file's `HOSTS` or `--hosts`, its `PORT` and `--port`, when the
 * first action is remote; not loopback), or none when anything is in doubt.
 */
function scanRakefile(text, hostsFlag, portFlag) {
  if (text.length > SCAN_MAX_CHARS) return [];
  let hostsLine;
  let portLine;
  let firstAction;
  for (const line of text.split('\n')) {
    const c = line.charCodeAt(0);
    if (c === 9 || c === 32) {
      const word = line.trimStart();
      if (word === '' || word.startsWith('#') || /^requires([ \t#]|$)/.test(word)) continue;
      if (firstAction === undefined) firstAction = word.startsWith('remote-');
    } else if (/^PORT[ \t]*=/.test(line)) {
      if (portLine !== undefined) return [];
      portLine = line;
    } else if (/^HOSTS[ \t]*=/.test(line)) {
      if (hostsLine !== undefined) return [];
      hostsLine = line;
    }
  }
  if (firstAction !== true) return [];
  let filePort = 6238;
  if (portLine !== undefined) {
    const value = settingValue(portLine);
    if (!/^[0-9]{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) return [];
    filePort = Number(value);
  }
  let hosts;
  if (hostsFlag !== undefined) {
    hosts = readEntries(hostsFlag.split(/[\s,]+/), portFlag ?? filePort);
  } else if (hostsLine !== undefined) {
    hosts = readEntries(settingValue(hostsLine).split(/[ \t]+/), filePort);
    if (hosts !== undefined && portFlag !== undefined) {
      hosts = hosts.map((h) => (h.port === filePort ? { host: h.host, port: portFlag } : h));
    }
  }
  if (hosts === undefined) return [];
  const seen = new Set();
  return hosts.filter((h) => {
    const key = `${h.host}:${h.port}`;
    if (isLoopback(h.host) || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * The hosts to dial before the bundle loads for `rake-ts ARGS` in `cwd`: none unless the
 * command line is a run this scan understands and the Rakefile names remote hosts.
 */
function planAhead(args, env, cwd) {
  if (env.RAKE_EARLY_DIAL === '0') return [];
  const run = readArgs(args, env, cwd);
  if (run === undefined) return [];
  let text;
  try {
    if (statSync(run.path).size > SCAN_MAX_CHARS) return [];
    text = readFileSync(run.path, 'latin1');
  } catch {
    return [];
  }
  return scanRakefile(text, run.hosts, run.port);
}

/**
 * Dials the hosts `planAhead` finds and sends each the opening cost query as it connects (no
 * query with RAKE_EARLY_DIAL=connect). The connections wait, unread, in a registry the
 * bundle empties; returns how many were dialed.
 */
function dialAhead(args, env, cwd) {
  let hosts;
  try {
    hosts = planAhead(args, env, cwd);
  } catch {
    // Only a speed-up: the run goes on, and dials as it parses.
    return 0;
  }
  if (hosts.length === 0) return 0;
  const { connect } = require('node:net');
  const query = env.RAKE_EARLY_DIAL !== 'connect';
  const registry = new Map();
  for (const h of hosts) {
    const socket = connect({ host: h.host, port: h.port });
    socket.setNoDelay(true);
    // Until the bundle takes it, a failure is only kept (its load stream then sees it).
    socket.on('error', () => {});
    // Written as soon as the connection is up (Node keeps it until then).
    if (query) socket.write(OPENING);
    registry.set(`${h.host}:${h.port}`, { socket, sent: query ? OPENING : undefined });
  }
  process[REGISTRY] = registry;
  return registry.size;
}

/**
 * Ends every connection the bundle did not take (it takes them as the run starts, so only a
 * run that failed before that leaves any): `!D0`, then closed. Resolves once each is closed,
 * or after a second.
 */
function closeUntaken() {
  const registry = process[REGISTRY];
  if (registry === undefined || registry.size === 0) return Promise.resolve();
  const open = [...registry.values()].map(({ socket }) => socket);
  registry.clear();
  let timer;
  return Promise.race([
    Promise.all(
      open.map(
        (socket) =>
          new Promise((done) => {
            if (socket.destroyed) return done();
            socket.once('close', done);
            // Read what the host answered (its cost), or the connection never ends.
            socket.resume();
            socket.end(GOODBYE);
          }),
      ),
    ),
    // Not unref'd: the exit waits for this, and must not be left to an empty event loop.
    new Promise((done) => {
      timer = setTimeout(done, 1000);
    }),
  ]).then(() => {
    clearTimeout(timer);
    for (const socket of open) socket.destroy();
  });
}

module.exports = { dialAhead, planAhead, closeUntaken, OPENING, REGISTRY, VALUED, SWITCHES };
