// The README's API example runs as written (against src/ instead of the built package, in
// a copy of the example whose PORT is a free port).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { freePort, removeDir } from './support.js';

const root = new URL('../../', import.meta.url).pathname;

describe('README', () => {
  it('the API example builds the example program', { timeout: 60_000 }, async () => {
    const readme = await readFile(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### From code'));
    const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(code, 'README has a js block after "### From code"');
    assert.match(code, /from 'rake-ts'/);

    const dir = await mkdtemp(join(tmpdir(), 'rake-readme-'));
    try {
      await cp(join(root, 'examples/hello-c'), join(dir, 'examples/hello-c'), {
        recursive: true,
        filter: (src) => !/\.o$|\/hello$/.test(src),
      });
      const rakefile = join(dir, 'examples/hello-c/Rakefile');
      const port = await freePort();
      await writeFile(
        rakefile,
        (await readFile(rakefile, 'utf8')).replace(/^PORT.*$/m, `PORT = ${port}`),
      );
      const script = join(dir, 'build.mts');
      await writeFile(
        script,
        code
          .replace("from 'rake-ts'", `from ${JSON.stringify(join(root, 'src/index.ts'))}`)
          .replace("from 'rxjs'", `from ${JSON.stringify(import.meta.resolve('rxjs'))}`),
      );
      const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), script], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 50_000,
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^compile#0 -> localhost:\d+$/m);
      assert.match(r.stdout, /hello from rake-ts: 8 numbers, sum 31, max 9, mean 3\.87\n/);
      // The user's own operator, inserted into the event stream, saw every action end.
      assert.match(r.stdout, /\nslowest: \w+#\d+ \(\d+ ms\)\n$/);
    } finally {
      await removeDir(dir);
    }
  });
});
