// The bundled CLI loads what only some commands need when they first need it
// (scripts/bundle.mjs, `LAZY_MODULES`; src/client/embedded.ts; src/cli/commands/serve.ts).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { freePort } from '../client/support.js';

const root = new URL('../../', import.meta.url).pathname;
const built = existsSync(join(root, 'dist/rake-ts.cjs'));

/**
 * Preloaded into the program: counts `Intl.Segmenter`s made (string-width makes one as it
 * loads) and, at exit, writes that count and the Node built-in modules loaded.
 */
const PRELOAD = `data:text/javascript,${encodeURIComponent(`
import { writeFileSync } from 'node:fs';
let segmenters = 0;
Intl.Segmenter = new Proxy(Intl.Segmenter, {
  construct(target, args, newTarget) { segmenters++; return Reflect.construct(target, args, newTarget); },
});
process.on('exit', () => {
  const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
  writeFileSync(process.env.RAKE_LOAD_REPORT, JSON.stringify({ segmenters, builtins }));
});`)}`;

interface LoadReport {
  segmenters: number;
  builtins: string[];
}

describe('what the built rake-ts loads', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rake-lazy-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let runs = 0;

  const rake = (args: string[]) => {
    const report = join(dir, `report-${++runs}.json`);
    const r = spawnSync(
      process.execPath,
      ['--import', PRELOAD, join(root, 'bin/rake-ts.js'), ...args],
      {
        encoding: 'utf8',
        cwd: join(root, 'examples/hello-c'),
        env: { ...process.env, RAKE_LOAD_REPORT: report, COLUMNS: '100' },
      },
    );
    assert.equal(r.status, 0, r.stderr);
    return { ...r, load: JSON.parse(readFileSync(report, 'utf8')) as LoadReport };
  };

  it('plans a build without string-width, pino-pretty or the server', () => {
    const r = rake(['-n']);
    assert.match(r.stdout, /# dry run of Rakefile/);
    assert.equal(r.load.segmenters, 0, 'string-width was loaded');
    // The server's launcher is what needs these two.
    assert.ok(!r.load.builtins.includes('child_process'), r.load.builtins.join(' '));
    assert.ok(!r.load.builtins.includes('readline'), r.load.builtins.join(' '));
    // Loaded at first use (scripts/bundle.mjs, `LAZY_BUILTINS`, `LAZY_SOURCE_EDITS`).
    for (const m of ['crypto', 'dns/promises', 'assert', 'worker_threads']) {
      assert.ok(!r.load.builtins.includes(m), `${m}: ${r.load.builtins.join(' ')}`);
    }
  });

  it('loads string-width when --help lays out its columns', () => {
    const r = rake(['--help']);
    assert.ok(r.load.segmenters > 0, 'string-width was not used');
    // Flags on the left, their descriptions in a column beside them.
    assert.match(r.stdout, /^ {2}-j, --jobs {2,}actions of one actionset that run at once/m);
    assert.match(r.stdout, /^ {6}--fail-fast {2,}on the first failure, cancel the other/m);
  });

  it('loads the server and pino-pretty when a run starts an embedded server and logs pretty', async () => {
    writeFileSync(join(dir, 'Rakefile'), `PORT = ${await freePort()}\n\nlocal:\n\techo hi\n`);
    const r = rake(['-C', dir, '-vv', '--log-format', 'pretty']);
    assert.match(r.stdout, /^hi$/m);
    // The display says so; a pretty record says where the action went.
    assert.match(r.stderr, /^rake-ts: started an embedded server at /m);
    assert.match(r.stderr, /^\[\d\d:\d\d:\d\d\.\d{3}\] DEBUG: local#0 goes to /m);
    assert.ok(r.load.builtins.includes('child_process'), 'the server was not loaded');
    // The embedded server's secret is drawn through the bundle's stand-in for node:crypto.
    assert.ok(r.load.builtins.includes('crypto'), 'node:crypto was not loaded');
  });
});
