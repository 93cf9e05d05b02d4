// The program as a whole: --help with examples for every command, --version, shell
// completion.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';

async function rake(argv: string[], columns?: number) {
  let stdout = '';
  let stderr = '';
  const sink = (add: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        add(chunk.toString());
        cb();
      },
    });
  const out = sink((s) => {
    stdout += s;
  });
  // main() lays the help out for the terminal's width, as yargs reads it from stdout.
  if (columns !== undefined) Object.assign(out, { columns });
  const code = await main(argv, {
    stdout: out,
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

  for (const columns of [80, 100]) {
    for (const command of [[], ['check'], ['serve'], ['hosts'], ['completion']]) {
      it(`lays out rake-ts ${command.join(' ')} --help at ${columns} columns`, async () => {
        const r = await rake([...command, '--help'], columns);
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.split('\n');
        const wide = lines.filter((l) => l.length > columns);
        assert.deepEqual(wide, [], 'no line wider than the terminal');
        // A type tag glued to the description: "errors[boolean]".
        const glued = lines.filter((l) => /\S\[(boolean|string|number|count|array)\]/.test(l));
        assert.deepEqual(glued, [], 'a space before every [type]');
        // Each example's command on one line: a line of the Examples section that starts in
        // the command column starts with the program's name, or a command was wrapped.
        const examples = lines.slice(lines.indexOf('Examples:') + 1);
        const end = examples.indexOf('');
        const wrapped = examples
          .slice(0, end < 0 ? undefined : end)
          .filter((l) => /^ {2}\S/.test(l) && !l.startsWith('  rake-ts'));
        assert.deepEqual(wrapped, [], `an example's command was wrapped:\n${r.stdout}`);
      });
    }
  }

  it('says the range a number flag must be in', async () => {
    for (const [argv, message] of [
      [['-j', '-1'], '--jobs must be a whole number, 0 or more (0 = no limit); got -1'],
      [['-j', '2.5'], '--jobs must be a whole number, 0 or more (0 = no limit); got 2.5'],
      [['--port', '70000'], '--port must be a whole number from 1 to 65535; got 70000'],
      [['--retries', '-2'], '--retries must be a whole number, 0 or more; got -2'],
    ] as const) {
      const r = await rake([...argv, '-n']);
      assert.equal(r.code, 2, r.stdout);
      assert.equal(r.stderr, `rake-ts: ${message}\nTry 'rake-ts --help'.\n`);
    }
  });

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
