#!/bin/sh
':' //; [ -z "${NODE_EXTRA_CA_CERTS-}" ] || { RAKE_TS_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export RAKE_TS_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; }; exec node "$0" "$@"
// The line above is shell (this file run as a program: `rake-ts`, `bin/rake-ts.js`) and, for
// node, a string and a comment. It starts node as `#!/usr/bin/env node` did, with one
// difference: Node 20 parses every certificate of the bundle NODE_EXTRA_CA_CERTS names, and
// its own root store, as it starts, whether or not the process ever speaks TLS: about 50 ms
// of CPU per start where the variable is set (docs/benchmarks.md, "Client start"). The shell
// hands the name over in RAKE_TS_EXTRA_CA_CERTS instead; below it is put back into the
// environment (local actions and every child see NODE_EXTRA_CA_CERTS as the user set it) and
// TLS connections made in this process add those certificates to the roots they trust
// (src/tls/index.ts `defaultTrust`), so what is trusted is unchanged. (biome.json leaves this
// file unformatted: its formatter would end the string with a `;`, which the shell would run.)
// The CLI is bundled into one script, dist/rake-ts.cjs, by `npm run build` (which `npm
// install` runs via `prepare`; scripts/bundle.mjs). It is started here through V8's code
// cache: the first run saves the bytecode of every function it compiled, and later runs
// load it instead of parsing and compiling 1.4 MB of JavaScript again (Node 20 has no
// compile cache of its own for this). A cache that cannot be read, written or trusted is
// simply not used.
//
// This file is CommonJS (bin/package.json says so; the package itself is ES modules): Node
// starts a CommonJS program without its ES module loader (its own modules, and a module
// facade of each built-in imported here): 3-4 ms less CPU per start (docs/benchmarks.md).
const {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} = require('node:fs');
const { createRequire } = require('node:module');
const { homedir } = require('node:os');
const { dirname, join } = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');

const deferredCa = process.env.RAKE_TS_EXTRA_CA_CERTS;
if (deferredCa !== undefined) {
  delete process.env.RAKE_TS_EXTRA_CA_CERTS;
  process.env.NODE_EXTRA_CA_CERTS = deferredCa;
  // Read by src/tls/index.ts: Node has not loaded these, TLS must add them itself.
  process[Symbol.for('rake-ts.deferred-extra-ca-certs')] = deferredCa;
}

const args = process.argv.slice(2);
const serving = args.includes('serve');

// A client lives for one build, and V8's optimizing compiler (TurboFan) spent about a sixth
// of its CPU optimizing functions the build then barely used; that CPU is taken from the
// compilers on the same cores. Functions now run 4 times longer before they are optimized
// (V8's default budget is 66 KiB of bytecode): a build of 300 actions took 20% less client
// CPU, and checking a 100,000-action Rakefile took no longer (docs/benchmarks.md). `serve`
// is a daemon and gets the opposite, as bin/rakeserver.js does. Set before the bundle is
// compiled, so each cache is always made and read under the same flags.
if (!process.execArgv.some((a) => a.startsWith('--interrupt-budget'))) {
  v8.setFlagsFromString(`--interrupt-budget=${serving ? 8192 : 270336}`);
}

const bundle = join(__dirname, '..', 'dist', 'rake-ts.cjs');

/**
 * Which functions a run compiles depends on what it does, and the cache holds only those the
 * run that wrote it compiled: a build keeps a cache apart from the other commands (a
 * misjudged command line only costs speed), and `serve`, compiled under another tier-up
 * budget (which V8 checks a cache against), keeps one of its own.
 */
const OTHER = new Set([
  '-n',
  '--dry-run',
  'check',
  'hosts',
  'completion',
  '-h',
  '--help',
  '-V',
  '--version',
]);
const kind = serving ? 'serve' : args.some((a) => OTHER.has(a)) ? 'other' : 'run';

/**
 * Where this bundle's cache lives: beside it, or in the user's cache directory when dist/
 * is read-only. The name carries the bundle's size, modification time and inode, so a
 * rebuilt bundle never meets the cache of another (V8 itself only checks the length), and
 * V8's version.
 */
function cachePaths(st) {
  const identity = `${st.size}-${Math.trunc(st.mtimeMs)}-${st.ino}-v8-${process.versions.v8}`;
  const name = `rake-ts.${identity}.${kind}.v8cache`;
  const home = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return { identity, paths: [join(dirname(bundle), name), join(home, 'rake-ts', name)] };
}

/**
 * Removes, beside the bundle, the caches of earlier builds of it (each rebuild or upgrade
 * would otherwise leave a few megabytes behind). Only there: that directory holds one
 * bundle, while the user's cache directory may serve several installations.
 */
function removeStaleCaches(identity) {
  try {
    const dir = dirname(bundle);
    for (const name of readdirSync(dir)) {
      if (/^rake-ts\..+\.v8cache$/.test(name) && !name.startsWith(`rake-ts.${identity}.`)) {
        rmSync(join(dir, name), { force: true });
      }
    }
  } catch {
    // Read-only, or gone: nothing to tidy.
  }
}

function readCache(paths) {
  for (const path of paths) {
    try {
      return readFileSync(path);
    } catch {
      // Not there yet.
    }
  }
  return undefined;
}

function writeCache({ identity, paths }, data) {
  for (const [i, path] of paths.entries()) {
    const tmp = `${path}.${process.pid}.tmp`;
    try {
      mkdirSync(dirname(path), { recursive: true });
      const fd = openSync(tmp, 'wx', 0o644);
      try {
        writeSync(fd, data);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      if (i === 0) removeStaleCaches(identity);
      return;
    } catch {
      // Read-only or full: try the next place, or go without, leaving no partial file.
      try {
        rmSync(tmp, { force: true });
      } catch {
        // Its directory is missing or not one (ENOTDIR): no file was made.
      }
    }
  }
}

/**
 * Compiles the bundle (through the code cache); `run` then runs its top level and returns
 * its `main` and `save`, which writes the cache when it was missing or refused.
 */
function compile() {
  const st = statSync(bundle);
  // The bundle is ASCII (scripts/bundle.mjs checks), so latin1 reads it exactly, and fast.
  const source = readFileSync(bundle, 'latin1');
  const cache = cachePaths(st);
  const cachedData = readCache(cache.paths);
  const script = new vm.Script(
    `(function (exports, require, module, __filename, __dirname) {${source}\n})`,
    {
      filename: bundle,
      ...(cachedData === undefined ? {} : { cachedData }),
      importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
    },
  );
  const run = () => {
    const module = { exports: {} };
    script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dirname(bundle));
    const fresh = cachedData === undefined || script.cachedDataRejected === true;
    return {
      main: module.exports.main,
      save: fresh ? () => writeCache(cache, script.createCachedData()) : () => {},
    };
  };
  return run;
}

/**
 * Resolves once `stream` has handed everything written to it to the OS (at once when it
 * holds nothing, is closed or has failed: an EPIPE reader will never read it).
 */
function drained(stream) {
  if (stream.writableLength === 0 || stream.destroyed || stream.writableFinished) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('error', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('error', done);
    stream.on('close', done);
  });
}

/**
 * Exits with `code` once stdout and stderr are written out. The exit is explicit: when the
 * command is over, nothing still open (a socket, a timer, a server shutting down) may keep
 * the process alive; after a signal or a broken stdout (130, 143, 141) it waits at most a second for the streams.
 */
async function exit(code) {
  const flushed = Promise.all([drained(process.stdout), drained(process.stderr)]);
  if (code === 130 || code === 141 || code === 143) {
    await Promise.race([flushed, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
  } else {
    await flushed;
  }
  process.exit(code);
}

/**
 * False when a quick look shows the run dials nothing ahead, so bin/early-dial.js is not even
 * loaded (about 1.5 ms of CPU): no flag names hosts or another Rakefile, and ./Rakefile has no
 * `HOSTS` line, or one of loopback hosts only. Anything else is for that file to judge.
 */
function mayDialAhead() {
  if (process.env.RAKE_EARLY_DIAL === '0') return false;
  for (const a of args) {
    if (!a.startsWith('-') || /^(-f|-C|--file|--directory|--hosts)(=|$)/.test(a)) return true;
  }
  let text;
  try {
    // A larger file is not scanned at all (src/client/early-dial.ts SCAN_MAX_CHARS).
    if (statSync('Rakefile').size > 64 * 1024) return false;
    text = readFileSync('Rakefile', 'latin1');
  } catch {
    return false;
  }
  const at = text.startsWith('HOSTS') ? 0 : text.indexOf('\nHOSTS') + 1;
  if (at === 0 && !text.startsWith('HOSTS')) return false;
  const end = text.indexOf('\n', at);
  const line = text.slice(at, end === -1 ? text.length : end);
  const value = line.slice(line.indexOf('=') + 1).split('#')[0];
  return value.split(/[ \t]+/).some((w) => w !== '' && !/^(127\.[0-9.]+|localhost)(:|$)/i.test(w));
}

// A run's remote hosts are dialed now, and sent the load stream's opening cost query, so both
// round trips go on while the bundle loads (bin/early-dial.js); the run takes the connections.
const early = kind === 'run' && mayDialAhead() ? require('./early-dial.js') : undefined;
const dialed = early === undefined ? 0 : early.dialAhead(args, process.env, process.cwd());

/** Runs the command: `main`, then the cache written if it was missing, then the exit. */
function start({ main, save }) {
  main(args).then(
    async (code) => {
      // After the run, the cache holds every function it compiled, not just the top level.
      save();
      if (dialed > 0) await early.closeUntaken();
      return exit(code);
    },
    async (err) => {
      console.error(err);
      if (dialed > 0) await early.closeUntaken();
      return exit(70);
    },
  );
}

if (dialed === 0) {
  start(compile()());
} else {
  // Node connects, and writes on a connection that has come up, only between turns of its
  // event loop, and compiling and running the bundle is one long stretch of JavaScript. So
  // the loop turns before the compile (the connects start), between it and the bundle's top
  // level, and before `main` (a connection up by then sends its query).
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  turn()
    .then(() => compile())
    .then((run) => turn().then(run))
    .then((loaded) => turn().then(() => start(loaded)))
    .catch(async (err) => {
      console.error(err);
      await early.closeUntaken();
      return exit(70);
    });
}
