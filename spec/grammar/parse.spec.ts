// parseRakefile, readRakefile, formatDiagnostic and the pieces behind them, case by case.
// The fixture table (fixtures.spec.ts) covers whole files; this covers the decisions.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type Diagnostic, formatDiagnostic, formatDiagnostics } from '../../grammar/diagnostics.js';
import { parseHostEntry } from '../../grammar/hosts.js';
import { rakefileToJson } from '../../grammar/json.js';
import { classifyLine, createRakefileLexer } from '../../grammar/lexer.js';
import { parseRakefile, parseText, readRakefile } from '../../grammar/parse.js';
import { RakefileParser } from '../../grammar/parser.js';
import { printRakefile } from '../../grammar/print.js';

function model(text: string) {
  const result = parseRakefile(text, { file: 'Rakefile' });
  if (!result.ok) assert.fail(formatDiagnostics(result.diagnostics, text));
  return result.rakefile;
}

function codes(text: string | Uint8Array): string[] {
  const result = parseRakefile(text, { file: 'Rakefile' });
  return result.ok ? [] : result.diagnostics.map((d) => d.code);
}

describe('the lexer and parser definitions', () => {
  it('pass chevrotain validations (skipped at run time)', () => {
    assert.doesNotThrow(() => createRakefileLexer({ validate: true }));
    assert.doesNotThrow(() => new RakefileParser({ validate: true }));
  });
});

describe('line classification (indentation)', () => {
  const cases: [string, string][] = [
    ['\techo hi', 'action'],
    ['\t\trequires a.c', 'requires'],
    ['\t\t\trequires a.c', 'invalid:too-many-tabs'],
    ['\t\techo hi', 'invalid:expected-requires'],
    ['\trequires a.c', 'invalid:requires-one-tab'],
    ['    echo hi', 'action'],
    ['    requires a.c', 'requires'],
    ['  \t requires a.c', 'requires'],
    ['\t  echo hi', 'action'],
    [' \t\t\techo', 'invalid:too-many-tabs'],
    ['  build:', 'invalid:indented-top-level'],
    ['  PORT = 1', 'invalid:indented-top-level'],
    ['  remote-:', 'action'],
    ['\tbuild:', 'action'],
    ['  cc -c a.c:b', 'action'],
    ['\tremote-', 'invalid:remote-without-command'],
    ['\tremote-  # later', 'invalid:remote-without-command'],
    ['\trequiresx', 'action'],
    ['PORT = 1', 'port'],
    ['PORT:', 'header'],
    ['HOSTS=a', 'hosts'],
    ['build :', 'header'],
    ['build', 'invalid:unknown-line'],
    ['   ', 'blank'],
    ['\t# echo', 'blank'],
    ['', 'blank'],
  ];
  for (const [line, expected] of cases) {
    it(`${JSON.stringify(line)} is ${expected}`, () => {
      const c = classifyLine(`${line}\n`, 0);
      assert.equal(typeof c === 'string' ? c : `invalid:${c.code}`, expected);
    });
  }
});

describe('HOSTS entries', () => {
  const good: [string, string, number | undefined][] = [
    ['hostname1', 'hostname1', undefined],
    ['hostname3:6333', 'hostname3', 6333],
    ['127.0.1.2:6328', '127.0.1.2', 6328],
    ['[::1]:6238', '::1', 6238],
    ['[::1]', '::1', undefined],
    ['build_box-2.example.com:1', 'build_box-2.example.com', 1],
    ['host:00080', 'host', 80],
  ];
  for (const [entry, host, port] of good) {
    it(`reads ${entry}`, () => assert.deepEqual(parseHostEntry(entry), { ok: true, host, port }));
  }
  for (const entry of [
    'h:',
    ':1',
    'h:0',
    'h:65536',
    'h:x',
    '::1',
    '[::1',
    '[x]',
    '[::1]:',
    '1.2.3.256',
    '-h',
    'a/b',
  ]) {
    it(`rejects ${entry}`, () => assert.equal(parseHostEntry(entry).ok, false));
  }
});

describe('parseRakefile', () => {
  it('applies PORT to hosts without a port, whether HOSTS comes first or not', () => {
    for (const text of [
      'PORT = 7000\nHOSTS = a b:1\nx:\n\tremote-y\n',
      'HOSTS = a b:1\nPORT = 7000\nx:\n\tremote-y\n',
    ]) {
      assert.deepEqual(
        model(text).hosts.map((h) => `${h.host}:${h.port}`),
        ['a:7000', 'b:1'],
      );
    }
  });

  it('defaults PORT to 6238', () => {
    assert.equal(model('HOSTS = a\nx:\n\tremote-y\n').port, 6238);
    assert.equal(model('HOSTS = a\nx:\n\tremote-y\n').hosts[0]?.port, 6238);
  });

  it('reads the same from a string and from bytes', () => {
    const text = 'HOSTS = a\nx:\n\tremote-cc -c é.c\n\t\trequires é.c\n';
    assert.deepEqual(
      model(text),
      (() => {
        const r = parseRakefile(new TextEncoder().encode(text), { file: 'Rakefile' });
        assert.ok(r.ok);
        return r.rakefile;
      })(),
    );
  });

  it('treats # as the start of a comment, in commands too', () => {
    assert.equal(model('x:\n\techo a # b\n').actionsets[0]?.actions[0]?.command, 'echo a');
  });

  it('handles thousands of actions in one actionset', () => {
    const lines = ['HOSTS = a', 'all:'];
    for (let i = 0; i < 5000; i++) lines.push(`\tremote-cc -c f${i}.c`, `\t\trequires f${i}.c`);
    const r = model(lines.join('\n'));
    const actions = r.actionsets[0]?.actions ?? [];
    assert.equal(actions.length, 5000);
    assert.deepEqual(actions[4999]?.requires[0]?.position, {
      file: 'Rakefile',
      line: 10002,
      column: 12,
    });
  });

  it('parses a long actionset cut into pieces as it parses it whole', () => {
    const lines = ['HOSTS = a', 'all:'];
    for (let i = 0; i < 3000; i++) lines.push(`\tremote-cc -c f${i}.c`, `\t\trequires f${i}.c`);
    const text = lines.join('\n');
    const whole = parseText(text, 'Rakefile', text.length);
    // Only one piece's tokens are alive at a time: the pieces are cut inside the actionset.
    const parse = RakefileParser.prototype.parse;
    let largest = 0;
    RakefileParser.prototype.parse = function (tokens) {
      largest = Math.max(largest, tokens.length);
      return parse.call(this, tokens);
    };
    try {
      assert.deepEqual(parseText(text, 'Rakefile', 256), whole);
    } finally {
      RakefileParser.prototype.parse = parse;
    }
    assert.ok(largest < 200, `a piece of ${largest} tokens`);
    assert.equal(whole.ok && whole.rakefile.actionsets.length, 1);
  });

  it('reports a run of misplaced actions once, however many pieces it spans', () => {
    const lines = ['x:', '\techo', 'PORT = 1'];
    for (let i = 0; i < 500; i++) lines.push(`\techo ${i}`, `\t\trequires f${i}.c`);
    lines.push('y:', '\t\trequires early.c', '\techo');
    const text = lines.join('\n');
    for (const piece of [64, 1000, text.length]) {
      const r = parseText(text, 'Rakefile', piece);
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.deepEqual(
        r.diagnostics.map((d) => [d.code, d.position.line, d.message]),
        [
          ['action-before-actionset', 4, 'action outside any actionset (and 499 more after it)'],
          ['requires-before-action', 1005, '`requires` line before any action of actionset `y`'],
        ],
      );
    }
  });

  it('reports every error at once, in file order', () => {
    const text = 'PORT = x\nfoo\nbuild:\n\t\t\tdeep\n\techo\nbuild:\n\techo\n';
    assert.deepEqual(codes(text), [
      'invalid-port',
      'unknown-line',
      'too-many-tabs',
      'repeated-actionset',
    ]);
  });

  it('reports one requires-before-action per actionset, and none under a rejected action', () => {
    assert.deepEqual(codes('x:\n\t\trequires a\n\t\trequires b\n\techo\n'), [
      'requires-before-action',
    ]);
    assert.deepEqual(codes('x:\n\tremote-\n\t\trequires a\n\techo\n'), ['remote-without-command']);
  });

  it('does not call an actionset empty when its lines were rejected', () => {
    assert.deepEqual(codes('x:\n\t\t\tdeep\n'), ['too-many-tabs']);
  });

  it('does not pile action-before-actionset on a broken header', () => {
    assert.deepEqual(codes('my set:\n\techo a\n\techo b\n'), ['unknown-line']);
  });

  it('rejects files that are not text', () => {
    assert.deepEqual(codes(Uint8Array.from([0x78, 0x3a, 0x0a, 0x09, 0xff, 0x0a])), ['not-text']);
    assert.deepEqual(codes('x:\n\techo \0\n'), ['not-text']);
  });

  it('strips a byte-order mark from a string too', () => {
    assert.equal(model('\uFEFFx:\n\techo\n').actionsets[0]?.position.column, 1);
  });
});

describe('readRakefile', () => {
  it('turns a missing file or a directory into a cannot-read diagnostic', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rake-ts-'));
    try {
      for (const path of [join(dir, 'nope'), dir]) {
        const r = await readRakefile(path, { file: 'Rakefile' });
        assert.equal(r.ok, false);
        if (!r.ok) assert.equal(r.diagnostics[0]?.code, 'cannot-read');
        if (!r.ok)
          assert.match(
            formatDiagnostic(r.diagnostics[0] as Diagnostic),
            /^Rakefile: error: cannot read/,
          );
      }
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});

describe('formatDiagnostic', () => {
  const d: Diagnostic = {
    code: 'too-many-tabs',
    position: { file: 'Rakefile', line: 2, column: 1 },
    message: 'line indented with 3 tabs',
    hint: 'indent actions with one tab and their `requires` lines with two',
    length: 3,
  };

  it('shows the line, tabs as four spaces, and carets under the fault', () => {
    assert.equal(
      formatDiagnostic(d, 'x:\n\t\t\tdeep\n'),
      [
        'Rakefile:2:1: error: line indented with 3 tabs [too-many-tabs]',
        '            deep',
        '^^^^^^^^^^^^',
        'hint: indent actions with one tab and their `requires` lines with two',
      ].join('\n'),
    );
  });

  it('aligns the caret after tabs and wide characters', () => {
    const e: Diagnostic = { ...d, position: { file: 'R', line: 1, column: 4 }, length: 2 };
    assert.equal(formatDiagnostic(e, '\t😀xyz').split('\n')[2], '       ^^');
    const f: Diagnostic = { ...d, position: { file: 'R', line: 1, column: 3 }, length: 1 };
    assert.equal(formatDiagnostic(f, '中éx').split('\n')[2], '   ^');
  });

  it('prints only the first and last lines without the source', () => {
    assert.equal(formatDiagnostic(d).split('\n').length, 2);
  });
});

describe('printRakefile and rakefileToJson', () => {
  it('print canonical text', () => {
    const text =
      'HOSTS=a:6238 [::1]:9 b\nPORT=6238\nx:\n    remote-cc  -c a.c   \n  requires  a.c b.c\n';
    assert.equal(
      printRakefile(model(text)),
      'PORT = 6238\nHOSTS = a [::1]:9 b\n\nx:\n\tremote-cc  -c a.c\n\t\trequires a.c b.c\n',
    );
  });

  it('give JSON with schemaVersion first and a stable key order', () => {
    const json = rakefileToJson(model('HOSTS = a\nx:\n\tremote-y\n\t\trequires z\n')) as Record<
      string,
      unknown
    >;
    assert.deepEqual(Object.keys(json), [
      'schemaVersion',
      'ok',
      'file',
      'port',
      'hosts',
      'actionsets',
    ]);
    assert.equal(json.schemaVersion, 1);
  });
});
