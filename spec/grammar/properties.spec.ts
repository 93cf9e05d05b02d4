// Property tests (fast-check). (1) Any model, printed and parsed back, is the same model;
// so is any harmless rewriting of that text (CRLF, BOM, comments, blank lines, trailing
// blanks, spaces for tabs). (2) Random byte mutations of valid files never make the parser
// throw: the result is a model or a non-empty list of well-formed diagnostics.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type Diagnostic, formatDiagnostics } from '../../grammar/diagnostics.js';
import type { Action, Actionset, HostSpec, Rakefile, Requirement } from '../../grammar/model.js';
import { parseRakefile, parseText } from '../../grammar/parse.js';
import { printRakefile } from '../../grammar/print.js';

// ---- generators -------------------------------------------------------------------------

/** Characters a word may hold: printable ASCII but `#`, some Latin, CJK and an emoji. */
const wordChar = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789') },
  { weight: 4, arbitrary: fc.constantFrom(...'ABCXYZ-_./$"\'*;|&<>()[]{}!?,+@%^~`\\') },
  { weight: 2, arbitrary: fc.constantFrom(':', '=') },
  { weight: 1, arbitrary: fc.constantFrom('é', 'ü', '中', '😀') },
);
const word = fc.array(wordChar, { minLength: 1, maxLength: 10 }).map((cs) => cs.join(''));
const nameChar = wordChar.filter((c) => c !== ':' && c !== '=');
const actionsetName = fc.array(nameChar, { minLength: 1, maxLength: 12 }).map((cs) => cs.join(''));

/** A command: words joined by single spaces. Local ones cannot look like `remote-` or `requires`. */
const command = (remote: boolean) =>
  fc
    .array(word, { minLength: 1, maxLength: 5 })
    .map((ws) => ws.join(' '))
    .filter((c) => remote || (!c.startsWith('remote-') && !/^requires(\s|$)/.test(c)));

const position = { file: 'Rakefile', line: 0, column: 0 };

const requirement: fc.Arbitrary<Requirement> = word.map((path) => ({ path, position }));

const action: fc.Arbitrary<Action> = fc.boolean().chain((remote) =>
  fc.record({
    command: command(remote),
    remote: fc.constant(remote),
    requires: fc.array(requirement, { maxLength: 4 }),
    position: fc.constant(position),
  }),
);

const hostSpec = (defaultPort: number): fc.Arbitrary<HostSpec> =>
  fc.record({
    host: fc.oneof(fc.domain(), fc.ipV4(), fc.ipV6(), fc.constant('localhost')),
    port: fc.oneof(fc.constant(defaultPort), fc.integer({ min: 1, max: 65535 })),
    position: fc.constant(position),
  });

/** Any valid model: unique actionset names, each with actions; hosts when anything is remote. */
const rakefile: fc.Arbitrary<Rakefile> = fc
  .record({
    port: fc.integer({ min: 1, max: 65535 }),
    names: fc.uniqueArray(actionsetName, { minLength: 1, maxLength: 5 }),
    actions: fc.array(fc.array(action, { minLength: 1, maxLength: 6 }), {
      minLength: 5,
      maxLength: 5,
    }),
  })
  .chain(({ port, names, actions }) => {
    const actionsets: Actionset[] = names.map((name, i) => ({
      name,
      actions: actions[i] ?? [],
      position,
    }));
    const anyRemote = actionsets.some((s) => s.actions.some((a) => a.remote));
    return fc
      .array(hostSpec(port), { minLength: anyRemote ? 1 : 0, maxLength: 4 })
      .map((hosts): Rakefile => ({ file: 'Rakefile', port, hosts, actionsets }));
  });

/** The model without positions (which depend on the exact text). */
function shape(r: Rakefile) {
  return {
    file: r.file,
    port: r.port,
    hosts: r.hosts.map((h) => ({ host: h.host, port: h.port })),
    actionsets: r.actionsets.map((s) => ({
      name: s.name,
      actions: s.actions.map((a) => ({
        command: a.command,
        remote: a.remote,
        requires: a.requires.map((q) => q.path),
      })),
    })),
  };
}

function parsed(text: string | Uint8Array): Rakefile {
  const result = parseRakefile(text, { file: 'Rakefile' });
  if (!result.ok) {
    const source = typeof text === 'string' ? text : new TextDecoder().decode(text);
    assert.fail(`expected a model, got:\n${formatDiagnostics(result.diagnostics, source)}`);
  }
  return result.rakefile;
}

// ---- harmless rewritings ----------------------------------------------------------------

/** How one line of canonical text is rewritten without changing what it means. */
interface LineNoise {
  readonly trailing: string;
  readonly comment: string;
  readonly spaces: boolean;
  readonly before: string;
}

/** How a whole file is rewritten. */
interface Noise {
  readonly crlf: boolean;
  readonly bom: boolean;
  readonly finalNewline: boolean;
  readonly portStyle: string;
  readonly lines: fc.Stream<LineNoise>;
}

const lineNoise: fc.Arbitrary<LineNoise> = fc.record({
  trailing: fc.constantFrom('', ' ', '\t', '  \t '),
  comment: fc.constantFrom('', ' # a comment', '\t#\tremote-cc -c old.c', '#'),
  spaces: fc.boolean(),
  before: fc.constantFrom('', '\n', '\t\n', '   \n', '#\techo commented out\n', '# note\n'),
});

const noise: fc.Arbitrary<Noise> = fc.record({
  crlf: fc.boolean(),
  bom: fc.boolean(),
  finalNewline: fc.boolean(),
  portStyle: fc.constantFrom('PORT = ', 'PORT=', 'PORT  = ', 'PORT\t=\t'),
  lines: fc.infiniteStream(lineNoise),
});

function rewrite(text: string, n: Noise): string {
  const lines = text.replace(/\n$/, '').split('\n');
  const it = n.lines[Symbol.iterator]();
  const out = lines.map((line) => {
    const v = it.next().value as LineNoise;
    let l = line.startsWith('PORT = ') ? n.portStyle + line.slice('PORT = '.length) : line;
    // Spaces for tabs are unambiguous on remote actions and on requires lines.
    if (v.spaces && l.startsWith('\t\trequires')) l = `    ${l.slice(2)}`;
    if (v.spaces && l.startsWith('\tremote-')) l = `  ${l.slice(1)}`;
    return `${v.before}${l}${v.trailing}${v.comment}`;
  });
  let body = out.join('\n') + (n.finalNewline ? '\n' : '');
  if (n.crlf) body = body.replace(/\n/g, '\r\n');
  return (n.bom ? '\uFEFF' : '') + body;
}

describe('printing and parsing back', () => {
  it('gives the same model', () => {
    fc.assert(
      fc.property(rakefile, (model) => {
        const text = printRakefile(model);
        const back = parsed(text);
        assert.deepEqual(shape(back), shape(model));
        assert.equal(printRakefile(back), text);
      }),
      { numRuns: 300 },
    );
  });

  it('gives the same model after harmless rewriting', () => {
    fc.assert(
      fc.property(rakefile, noise, (model, n) => {
        const text = rewrite(printRakefile(model), n);
        assert.deepEqual(shape(parsed(text)), shape(model));
        assert.deepEqual(shape(parsed(new TextEncoder().encode(text))), shape(model));
      }),
      { numRuns: 300 },
    );
  });

  it('gives positions that point at what they name', () => {
    fc.assert(
      fc.property(rakefile, (model) => {
        const text = printRakefile(model);
        const lines = text.split('\n');
        const at = (p: { line: number; column: number }, length: number) =>
          Array.from(lines[p.line - 1] ?? '')
            .slice(p.column - 1, p.column - 1 + length)
            .join('');
        const back = parsed(text);
        for (const set of back.actionsets) {
          assert.equal(at(set.position, Array.from(set.name).length), set.name);
          for (const a of set.actions) {
            const shown = `${a.remote ? 'remote-' : ''}${a.command}`;
            assert.equal(at(a.position, Array.from(shown).length), shown);
            for (const r of a.requires)
              assert.equal(at(r.position, Array.from(r.path).length), r.path);
          }
        }
      }),
      { numRuns: 100 },
    );
  });
});

// ---- mutations --------------------------------------------------------------------------

/** Bytes worth inserting: the format's own punctuation, whitespace, and non-text. */
const interestingByte = fc.oneof(
  fc.constantFrom(...[9, 10, 13, 32, 35, 58, 61, 91, 93, 0, 0xff, 0xc3, 0xa9, 0xef, 0xbb, 0xbf]),
  fc.integer({ min: 0, max: 255 }),
);

type Mutation =
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'insert'; at: number; bytes: number[] }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'duplicate'; at: number; length: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: interestingByte }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.array(interestingByte, { minLength: 1, maxLength: 4 }),
  }),
  fc.record({
    kind: fc.constant('delete' as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 20 }),
  }),
  fc.record({
    kind: fc.constant('duplicate' as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 40 }),
  }),
);

function mutate(bytes: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let b = Array.from(bytes);
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    switch (m.kind) {
      case 'set':
        if (at < b.length) b[at] = m.byte;
        break;
      case 'insert':
        b.splice(at, 0, ...m.bytes);
        break;
      case 'delete':
        b.splice(at, m.length);
        break;
      case 'duplicate':
        b = [
          ...b.slice(0, at + m.length),
          ...b.slice(at, at + m.length),
          ...b.slice(at + m.length),
        ];
        break;
    }
  }
  return Uint8Array.from(b);
}

const CODES = new Set([
  'not-text',
  'cannot-read',
  'empty-file',
  'no-actionsets',
  'unknown-line',
  'too-many-tabs',
  'expected-requires',
  'requires-one-tab',
  'indented-top-level',
  'remote-without-command',
  'header-trailing-text',
  'invalid-port',
  'invalid-host',
  'no-hosts',
  'repeated-setting',
  'repeated-actionset',
  'requires-before-action',
  'action-before-actionset',
  'remote-without-hosts',
  'empty-actionset',
]);

function checkDiagnostic(d: Diagnostic, lineCount: number): void {
  assert.ok(CODES.has(d.code), `unknown code ${d.code}`);
  assert.ok(d.message.length > 0 && d.hint.length > 0);
  assert.ok(d.position.line >= 1 && d.position.line <= lineCount, `line ${d.position.line}`);
  assert.ok(d.position.column >= 1);
  assert.ok((d.length ?? 1) >= 1);
}

describe('lexing and parsing in pieces', () => {
  // Pieces start at a setting or header line at least `block` characters on: the result
  // must not depend on where they are.
  it('gives the same result wherever the pieces end', () => {
    fc.assert(
      fc.property(
        rakefile,
        noise,
        fc.array(mutation, { maxLength: 4 }),
        fc.integer({ min: 1, max: 200 }),
        (model, n, mutations, block) => {
          const bytes = mutate(
            new TextEncoder().encode(rewrite(printRakefile(model), n)),
            mutations,
          );
          const text = new TextDecoder()
            .decode(bytes)
            .replace(/^\uFEFF/, '')
            .replaceAll('\0', '');
          assert.deepEqual(parseText(text, 'Rakefile', block), parseText(text, 'Rakefile'));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('mutated Rakefiles', () => {
  it('never make the parser throw', () => {
    fc.assert(
      fc.property(
        rakefile,
        noise,
        fc.array(mutation, { minLength: 1, maxLength: 6 }),
        (model, n, mutations) => {
          const bytes = mutate(
            new TextEncoder().encode(rewrite(printRakefile(model), n)),
            mutations,
          );
          const text = new TextDecoder().decode(bytes);
          for (const input of [bytes, text]) {
            const result = parseRakefile(input, { file: 'Rakefile' });
            if (result.ok) {
              assert.ok(result.rakefile.actionsets.length > 0);
              continue;
            }
            assert.ok(result.diagnostics.length > 0);
            const lineCount = text.split('\n').length;
            for (const d of result.diagnostics) checkDiagnostic(d, lineCount);
            assert.equal(typeof formatDiagnostics(result.diagnostics, text), 'string');
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
