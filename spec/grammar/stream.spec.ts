// The parsed Rakefile as Observable<ActionsetStream> (grammar/stream.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { concatMap, firstValueFrom, map, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { parseRakefile } from '../../grammar/parse.js';
import { actionsetStreams, RakefileError, readActionsets } from '../../grammar/stream.js';

const TEXT = 'HOSTS = a\nfirst:\n\tremote-cc -c a.c\n\techo b\nsecond:\n\tremote-ld\n';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => assert.deepEqual(actual, expected));
}

describe('actionsetStreams', () => {
  it('emits the actionsets in file order, each with its actions as a stream', () => {
    const parsed = parseRakefile(TEXT, { file: 'Rakefile' });
    assert.ok(parsed.ok);
    scheduler().run(({ expectObservable }) => {
      const names = actionsetStreams(parsed.rakefile).pipe(map((s) => s.actionset.name));
      expectObservable(names).toBe('(ab|)', { a: 'first', b: 'second' });
      const commands = actionsetStreams(parsed.rakefile).pipe(
        concatMap((s) => s.actions.pipe(map((a) => a.command))),
      );
      expectObservable(commands).toBe('(abc|)', { a: 'cc -c a.c', b: 'echo b', c: 'ld' });
    });
  });
});

describe('readActionsets', () => {
  it('reads the file when subscribed, not before', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rake-ts-stream-'));
    try {
      const path = join(dir, 'Rakefile');
      const streams = readActionsets(path, { file: 'Rakefile' });
      writeFileSync(path, TEXT);
      const names = await firstValueFrom(
        streams.pipe(
          map((s) => s.actionset.name),
          toArray(),
        ),
      );
      assert.deepEqual(names, ['first', 'second']);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('errors with every diagnostic, and emits no actionset, for a wrong file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rake-ts-stream-'));
    try {
      const path = join(dir, 'Rakefile');
      writeFileSync(path, 'ok:\n\techo\nPORT = 0\nbad\n');
      const seen: string[] = [];
      const error = await new Promise<unknown>((resolve) => {
        readActionsets(path, { file: 'Rakefile' }).subscribe({
          next: (s) => seen.push(s.actionset.name),
          error: resolve,
          complete: () => resolve(undefined),
        });
      });
      assert.deepEqual(seen, []);
      assert.ok(error instanceof RakefileError);
      assert.deepEqual(
        error.diagnostics.map((d) => d.code),
        ['invalid-port', 'unknown-line'],
      );
      assert.equal(error.message, 'Rakefile:3:8: PORT `0` is out of range (and 1 more)');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
