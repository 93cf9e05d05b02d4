#!/usr/bin/env node
/**
 * Bundles the two programs into one file each, `dist/rake-ts.cjs` (a script, which
 * bin/rake-ts.js runs through V8's code cache) and `dist/rakeserver.mjs` (an ES module),
 * from the JavaScript tsc wrote under `dist/` (run after tsc: `npm run build`).
 *
 * Why: the client is started once per build, and before its first connection Node used to
 * resolve, read and compile some 300 modules (rxjs alone is over 200 files), which was about
 * a third of its start (docs/benchmarks.md, "Overhead"). One file, with no package.json look-ups
 * and no CommonJS-in-ESM translation per module, starts about 0.15 s sooner here. The
 * package's API (`dist/src/index.js`) stays the module tree tsc wrote.
 *
 *   node scripts/bundle.mjs [distDir]      (default: dist/ of this tree)
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The entry points under a dist directory, and the bundle each becomes. */
export const PROGRAMS = [
  // A script, not a module: bin/rake-ts.js runs it through V8's code cache (vm.Script).
  { entry: 'src/cli/main.js', out: 'rake-ts.cjs', format: 'cjs' },
  { entry: 'src/cli/rakeserver.js', out: 'rakeserver.mjs', format: 'esm' },
];

/** What each format needs: `require` in an ES module, `import.meta.url` in a script. */
const SHIMS = {
  esm: {
    banner: {
      js: "import { createRequire as __rakeRequire } from 'node:module'; const require = __rakeRequire(import.meta.url);",
    },
  },
  cjs: {
    banner: {
      js: "const __rakeImportMetaUrl = require('node:url').pathToFileURL(__filename).href;",
    },
    define: { 'import.meta.url': '__rakeImportMetaUrl' },
  },
};

/**
 * grammar/chevrotain.ts loads chevrotain's own single-file build at run time (a dynamic
 * import of a computed URL, which a bundler cannot follow). In a bundle, chevrotain is
 * bundled with everything else instead: a static import of the same names.
 */
const staticChevrotain = {
  name: 'static-chevrotain',
  setup(b) {
    b.onResolve({ filter: /^\.\/chevrotain\.js$/ }, (args) =>
      args.importer.endsWith(join('grammar', 'lexer.js')) ||
      args.importer.endsWith(join('grammar', 'parser.js'))
        ? { path: 'chevrotain-static', namespace: 'rake-ts' }
        : undefined,
    );
    b.onLoad({ filter: /^chevrotain-static$/, namespace: 'rake-ts' }, () => ({
      contents: "export { createToken, EmbeddedActionsParser, Lexer } from 'chevrotain';",
      resolveDir: root,
      loader: 'js',
    }));
  },
};

/**
 * Modules that do costly work as they are loaded, for output that most runs never make.
 * In a bundle each is loaded when one of its functions is first called instead: every
 * import of it gets a stand-in whose functions `require` the real module (which esbuild then
 * evaluates on that first call). Measured on this machine: 32 ms less per start
 * (docs/benchmarks.md).
 * - string-width: yargs, cliui and wrap-ansi lay out `--help` with it. It builds an
 *   `Intl.Segmenter` and regular expressions of Unicode properties (ICU: about 35 ms).
 * - pino-pretty: readable log lines, only for `--log-format pretty` (a terminal).
 */
const LAZY_MODULES = {
  'string-width': { default: 'stringWidth' },
  'pino-pretty': { prettyFactory: 'prettyFactory' },
};

const lazyModules = {
  name: 'lazy-modules',
  setup(b) {
    const names = Object.keys(LAZY_MODULES).map((m) => m.replace(/[-/]/g, '\\$&'));
    b.onResolve({ filter: new RegExp(`^(${names.join('|')})$`) }, async (args) => {
      if (args.pluginData?.real === true) return undefined;
      const real = await b.resolve(args.path, {
        resolveDir: args.resolveDir,
        kind: args.kind,
        importer: args.importer,
        pluginData: { real: true },
      });
      if (real.errors.length > 0) return { errors: real.errors };
      return { path: real.path, namespace: 'lazy-module', pluginData: { module: args.path } };
    });
    b.onLoad({ filter: /.*/, namespace: 'lazy-module' }, (args) => {
      const real = `require(${JSON.stringify(args.path)})`;
      const exports = Object.entries(LAZY_MODULES[args.pluginData.module]).map(
        ([name, local]) =>
          `function ${local}(...args) { return ${real}.${name}(...args); }\n` +
          (name === 'default' ? `export default ${local};` : `export { ${local} };`),
      );
      return { contents: exports.join('\n'), resolveDir: dirname(args.path), loader: 'js' };
    });
  },
};

/**
 * Node's own modules that our code imports at the top but a plan, a check or a build without
 * files to send never uses: each import of one gets a stand-in whose functions `require` the
 * real module when first called (only the names listed; esbuild fails on any other, so a new
 * import is noticed here). Node compiles a built-in module as it is first required, and
 * `node:crypto` is some twenty of them: about 6 ms of CPU at every start (docs/benchmarks.md,
 * "Client start"). A build that sends files loads it at its first hash instead.
 */
const LAZY_BUILTINS = {
  'node:crypto': ['createHash', 'createHmac', 'randomBytes', 'randomUUID', 'timingSafeEqual'],
  'node:dns/promises': ['lookup'],
};

const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(b) {
    const names = Object.keys(LAZY_BUILTINS).map((m) => m.replace(/[/]/g, '\\$&'));
    b.onResolve({ filter: new RegExp(`^(${names.join('|')})$`) }, (args) =>
      args.kind === 'import-statement' && args.namespace !== 'lazy-builtin'
        ? { path: args.path, namespace: 'lazy-builtin' }
        : { path: args.path, external: true },
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
      contents: LAZY_BUILTINS[args.path]
        .map(
          (name) =>
            `export function ${name}(...args) { return require(${JSON.stringify(args.path)}).${name}(...args); }`,
        )
        .join('\n'),
      loader: 'js',
    }));
  },
};

/**
 * Two built-ins that dependencies load as they are loaded, for work a run does not do:
 * - `assert` (with its error class and colours): yargs checks its own state with
 *   `strictEqual` and `notStrictEqual`, and sonic-boom (pino's file destination) with
 *   `assert(ok, message)`, each throwing only when the check fails. In the bundle they get the
 *   same checks, which load `assert` only to throw its error.
 * - `worker_threads`: pino reads `isMainThread` as it loads, and uses it only when it makes an
 *   asynchronous destination (`sync: false`, which the CLI's logger is not: src/cli/logging.ts),
 *   and loads thread-stream, which needs `Worker`, for transports (which the CLI has none of).
 * About 4 ms of CPU per start together (docs/benchmarks.md, "Client start").
 */
const LAZY_SOURCE_EDITS = [
  {
    file: /[\\/]pino[\\/]lib[\\/]tools\.js$/,
    gone: ['isMainThread'],
    edits: [
      ["const { isMainThread } = require('worker_threads')\n", ''],
      [
        'if (!opts.sync && isMainThread)',
        "if (!opts.sync && require('worker_threads').isMainThread)",
      ],
    ],
  },
  {
    file: /[\\/]pino[\\/]lib[\\/]transport\.js$/,
    gone: ['ThreadStream'],
    edits: [
      ["const ThreadStream = require('thread-stream')\n", ''],
      ['new ThreadStream(', "new (require('thread-stream'))("],
    ],
  },
  {
    // pino's own copy (pino-pretty, loaded only for `--log-format pretty`, has another).
    file: /[\\/]node_modules[\\/]sonic-boom[\\/]index\.js$/,
    except: /[\\/]pino-pretty[\\/]/,
    edits: [
      [
        "const assert = require('assert')\n",
        "function assert (ok, message) { if (!ok) require('assert')(ok, message) }\n",
      ],
    ],
  },
];

const lazyDependencyBuiltins = {
  name: 'lazy-dependency-builtins',
  setup(b) {
    b.onResolve({ filter: /^assert$/ }, (args) =>
      /[\\/]yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/.test(args.importer)
        ? { path: 'yargs-assert', namespace: 'rake-ts' }
        : undefined,
    );
    b.onLoad({ filter: /^yargs-assert$/, namespace: 'rake-ts' }, () => ({
      contents: [
        'export function strictEqual(actual, expected, message) {',
        "  if (!Object.is(actual, expected)) require('node:assert').strictEqual(actual, expected, message);",
        '}',
        'export function notStrictEqual(actual, expected, message) {',
        "  if (Object.is(actual, expected)) require('node:assert').notStrictEqual(actual, expected, message);",
        '}',
      ].join('\n'),
      loader: 'js',
    }));
    for (const { file, except, gone = [], edits } of LAZY_SOURCE_EDITS) {
      b.onLoad({ filter: file }, (args) => {
        if (except?.test(args.path)) return undefined;
        let source = readFileSync(args.path, 'utf8');
        for (const [from, to] of edits) {
          // Exactly once each, or the dependency changed and this must be looked at again.
          if (source.split(from).length !== 2) {
            throw new Error(`bundle: ${args.path} no longer has ${JSON.stringify(from)} once`);
          }
          source = source.replace(from, to);
        }
        // A name whose declaration went must have no other use left.
        for (const name of gone) {
          if (new RegExp(`(?<![.\\w])${name}\\b`).test(source)) {
            throw new Error(`bundle: ${args.path} uses ${name} elsewhere now`);
          }
        }
        return { contents: source, loader: 'js' };
      });
    }
  },
};

/**
 * rxjs as ES modules: under Node's conditions its package resolves to the CommonJS build,
 * one module whose exports are some 400 getters, and esbuild copied all of them into a new
 * object for each of our 27 modules that import from it (`__toESM`), at every start. Its ES
 * module build (the same code, `sideEffects: false`) lets esbuild keep only what we use: 53
 * of its 254 KiB, and no copying. Measured on this machine: 12 ms less CPU per start
 * (docs/benchmarks.md, "Client start").
 */
const rxjsAsModules = {
  name: 'rxjs-as-modules',
  setup(b) {
    b.onResolve({ filter: /^rxjs$/ }, async (args) => {
      if (args.pluginData?.real === true) return undefined;
      const cjs = await b.resolve(args.path, {
        resolveDir: args.resolveDir,
        kind: args.kind,
        importer: args.importer,
        pluginData: { real: true },
      });
      if (cjs.errors.length > 0) return { errors: cjs.errors };
      // .../rxjs/dist/cjs/index.js -> .../rxjs/dist/esm/index.js
      const esm = cjs.path.replace(/([\\/]rxjs[\\/]dist[\\/])cjs([\\/]index\.js)$/, '$1esm$2');
      if (esm === cjs.path || !existsSync(esm)) {
        throw new Error(
          `bundle: rxjs resolved to ${cjs.path}, which has no ES module build beside it`,
        );
      }
      return { path: esm };
    });
  },
};

/**
 * yargs() always calls `.version()` as it makes a parser, which guesses the version by looking
 * for a package.json upwards from its main file: in a bundle that is the current directory,
 * so every start listed the working directory and each of its parents up to the root, found
 * nothing, and built an AssertionError (with util.inspect) to say so, before main.ts set the
 * version it already knows (`.version(packageVersion())`; rakeserver: `.version(false)`). In
 * the bundle the factory does not guess.
 */
const yargsNoVersionGuess = {
  name: 'yargs-no-version-guess',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]lib[\\/]yargs-factory\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      const guess = /(yargs\.help\(\);)\s*yargs\.version\(\);/;
      if (!guess.test(source)) {
        throw new Error(`bundle: ${args.path} no longer calls yargs.version() as expected`);
      }
      return { contents: source.replace(guess, '$1'), loader: 'js' };
    });
  },
};

/** Bundles every program under `dist` (tsc's output). Resolves the files written. */
export async function bundle(dist = join(root, 'dist')) {
  const written = [];
  for (const { entry, out, format } of PROGRAMS) {
    const input = join(dist, entry);
    if (!existsSync(input)) throw new Error(`bundle: ${input} is missing; run tsc first`);
    const outfile = join(dist, out);
    await build({
      entryPoints: [input],
      outfile,
      bundle: true,
      platform: 'node',
      format,
      target: 'node20',
      ...SHIMS[format],
      // No comments or indentation to read at start; names are kept for stack traces.
      minifyWhitespace: true,
      charset: 'ascii',
      // The dependencies are resolved from this tree's node_modules, wherever dist is.
      nodePaths: [join(root, 'node_modules')],
      plugins: [
        staticChevrotain,
        lazyModules,
        lazyBuiltins,
        lazyDependencyBuiltins,
        rxjsAsModules,
        yargsNoVersionGuess,
      ],
      legalComments: 'none',
      logLevel: 'warning',
    });
    // bin/rake-ts.js reads the bundle as latin1, exact only for ASCII.
    const text = readFileSync(outfile);
    const at = text.findIndex((b) => b > 0x7f);
    if (at >= 0) throw new Error(`bundle: ${outfile} has a non-ASCII byte at offset ${at}`);
    written.push(outfile);
  }
  return written;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dist = process.argv[2] === undefined ? undefined : resolve(process.argv[2]);
  const files = await bundle(dist);
  for (const f of files) process.stdout.write(`bundled ${relative(process.cwd(), f)}\n`);
}
