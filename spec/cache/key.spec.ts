// The action key (issue 21): each part it covers changes it, order does not, and the encoding
// is the one docs/client.md documents.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { actionKey, type KeyParts, keyText, ownPlatform } from '../../src/cache/key.js';

const T = { timeout: 10_000 };
const H1 = 'a'.repeat(64);
const H2 = 'b'.repeat(64);

const BASE: KeyParts = {
  command: 'cc -c square.c',
  cwd: '',
  inputs: [
    { name: 'square.c', mode: 0o644, sha256: H1 },
    { name: 'allfunctions.h', mode: 0o644, sha256: H2 },
  ],
  platform: { os: 'linux', arch: 'x64' },
};

describe('action key', () => {
  it('is the SHA-256 of the documented JSON text', T, () => {
    const text = keyText(BASE);
    assert.equal(
      text,
      `["rake-ts-action-key/1","cc -c square.c","",[["arch","x64"],["os","linux"]],[["allfunctions.h","644","${H2}"],["square.c","644","${H1}"]]]`,
    );
    assert.equal(actionKey(BASE), createHash('sha256').update(text).digest('hex'));
    assert.match(actionKey(BASE), /^[0-9a-f]{64}$/);
  });

  it('changes with each part', T, () => {
    const k = actionKey(BASE);
    const [sq, h] = BASE.inputs as [KeyParts['inputs'][0], KeyParts['inputs'][0]];
    const variants: Record<string, KeyParts> = {
      command: { ...BASE, command: 'cc -O2 -c square.c' },
      'command whitespace': { ...BASE, command: 'cc -c  square.c' },
      cwd: { ...BASE, cwd: 'build' },
      'input wire path': { ...BASE, inputs: [{ ...sq, name: 'src/square.c' }, h] },
      'input mode': { ...BASE, inputs: [{ ...sq, mode: 0o755 }, h] },
      'input content': { ...BASE, inputs: [{ ...sq, sha256: 'c'.repeat(64) }, h] },
      'an input more': {
        ...BASE,
        inputs: [...BASE.inputs, { name: 'extra.h', mode: 0o644, sha256: H1 }],
      },
      'an input less': { ...BASE, inputs: [sq] },
      'platform os': { ...BASE, platform: { os: 'darwin', arch: 'x64' } },
      'platform arch': { ...BASE, platform: { os: 'linux', arch: 'arm64' } },
      'platform label': { ...BASE, platform: { os: 'linux', arch: 'x64', cc: 'gcc-12' } },
    };
    const seen = new Map<string, string>([[k, 'base']]);
    for (const [part, parts] of Object.entries(variants)) {
      const v = actionKey(parts);
      assert.notEqual(v, k, `${part} must change the key`);
      assert.equal(seen.get(v), undefined, `${part} gives the key of ${seen.get(v)}`);
      seen.set(v, part);
    }
  });

  it('does not depend on the order inputs or platform labels are given in', T, () => {
    const reordered: KeyParts = {
      ...BASE,
      inputs: [...BASE.inputs].reverse(),
      platform: { arch: 'x64', os: 'linux' },
    };
    assert.equal(actionKey(reordered), actionKey(BASE));
  });

  it('keeps names with separators apart (JSON quoting)', T, () => {
    const a: KeyParts = { ...BASE, command: 'a","b' };
    const b: KeyParts = { ...BASE, command: 'a', cwd: 'b' };
    assert.notEqual(actionKey(a), actionKey(b));
  });

  it('refuses a malformed hash and a name given twice', T, () => {
    assert.throws(
      () => actionKey({ ...BASE, inputs: [{ name: 'x', mode: 0o644, sha256: 'nothex' }] }),
      /"x": nothex is not a SHA-256/,
    );
    const dup = { name: 'x', mode: 0o644, sha256: H1 };
    assert.throws(() => actionKey({ ...BASE, inputs: [dup, dup] }), /two inputs are named "x"/);
  });

  it("this process's platform is Node's os and arch, over any label of the same name", T, () => {
    assert.deepEqual(ownPlatform({ cc: 'gcc-12', os: 'fake' }), {
      cc: 'gcc-12',
      os: process.platform,
      arch: process.arch,
    });
  });

  it('docs/client.md shows the encoding this code uses', T, () => {
    const doc = readFileSync(new URL('../../docs/client.md', import.meta.url), 'utf8');
    assert.ok(doc.includes('"rake-ts-action-key/1"'), 'docs/client.md names the key version');
    assert.ok(doc.includes(keyText(BASE)), 'docs/client.md carries the example key text');
  });
});
