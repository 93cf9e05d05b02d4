// The program as a whole: --help with examples for every command, --version, shell
// completion.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';

async function rake(argv: string[]) {
  let stdout = '';
  let stderr = '';
  const sink = (add: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        add(chunk.toString());
        cb();
      },
    });
  const code = await main(argv, {
    stdout: sink((s) => {
      stdout += s;
    }),
    stderr: sink((s) => {
      stderr += s;
    }),
    cwd: process.cwd(),
  });
  return { code, stdout, stderr };
}

describe('rake-ts as a whole', () => {
  for (const command of [[], ['check'], ['serve'], ['hosts'], ['completion']]) {
    it(`prints help with examples: rake-ts ${command.join(' ')} --help`, async () => {
      const r = await rake([...command, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /\nExamples:\n {2}rake-ts/);
    });
  }

  it('lists every command in the top-level help', async () => {
    const r = await rake(['--help']);
    for (const c of ['check', 'serve', 'hosts', 'completion']) {
      assert.match(r.stdout, new RegExp(`rake-ts ${c}\\b`));
    }
    for (const f of [
      '--progress',
      '--trace',
      '--report',
      '--log-format',
      '--log-level',
      '--log-file',
    ]) {
      assert.ok(r.stdout.includes(f), f);
    }
  });

  it('prints its version', async () => {
    const pkg = JSON.parse(
      await readFile(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as {
      version: string;
    };
    const r = await rake(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  it('prints a completion script, and completes commands and flags', async () => {
    const script = await rake(['completion']);
    assert.equal(script.code, 0, script.stderr);
    assert.match(script.stdout, /###-begin-rake-ts-completions-###/);
    assert.match(script.stdout, /rake-ts --get-yargs-completions/);
    const commands = await rake(['--get-yargs-completions', 'rake-ts', 'ho']);
    assert.ok(commands.stdout.split('\n').includes('hosts'), commands.stdout);
    const flags = await rake(['--get-yargs-completions', 'rake-ts', 'hosts', '--']);
    assert.ok(flags.stdout.split('\n').includes('--json'), flags.stdout);
  });
});
