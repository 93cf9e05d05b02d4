// The output spool (issue 17, defect 5): an action's stdout over the threshold goes to a file
// as it arrives, never whole in memory; small ones stay in memory within a budget; released
// outputs free their memory and files; a failed read leaves no file; close() removes all.
// A real framed reader over a real stream of bytes, real files.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ActionOutput, OutputSpool } from '../../src/client/output.js';
import { FramedReader } from '../../src/protocol/reader.js';

let parent: string;
before(() => {
  parent = mkdtempSync(join(tmpdir(), 'rake-spool-'));
});
after(() => {
  rmSync(parent, { recursive: true, force: true });
});

/** A reader over `bytes`, written in 64 KiB pieces, then ended (or not, for a short read). */
function readerOf(bytes: Buffer, end = true): FramedReader {
  const source = new PassThrough();
  const reader = new FramedReader(source);
  (async () => {
    for (let i = 0; i < bytes.length; i += 65536) {
      if (!source.write(bytes.subarray(i, i + 65536))) {
        await new Promise((r) => source.once('drain', r));
      }
    }
    if (end) source.end();
  })();
  return reader;
}

describe('OutputSpool', { timeout: 30_000 }, () => {
  it('spools an output over the threshold to a file, byte for byte, and release removes it', async () => {
    const spool = new OutputSpool({ dir: parent, thresholdBytes: 1024 });
    const bytes = randomBytes(3 * 1024 * 1024 + 7);
    const out = await spool.receive(readerOf(bytes), bytes.length, 'stdout');
    assert.ok(out.file !== undefined && existsSync(out.file), 'spooled to a file');
    assert.equal(spool.inMemory, 0);
    assert.equal(out.size, bytes.length);
    assert.ok(out.buffer().equals(bytes));
    const source = out.open();
    assert.equal(typeof source.fd, 'number');
    source.close();
    out.release();
    assert.equal(existsSync(out.file), false);
    spool.close();
  });

  it('keeps small outputs in memory within its budget, then spools', async () => {
    const spool = new OutputSpool({ dir: parent, thresholdBytes: 1024, memoryBudgetBytes: 1500 });
    const a = await spool.receive(readerOf(Buffer.from('x'.repeat(1000))), 1000, 'stdout');
    assert.equal(a.file, undefined);
    assert.equal(spool.inMemory, 1000);
    // Under the threshold, but over the budget left: spooled.
    const b = await spool.receive(readerOf(Buffer.from('y'.repeat(800))), 800, 'stdout');
    assert.notEqual(b.file, undefined);
    assert.equal(b.text(), 'y'.repeat(800));
    a.release();
    a.release();
    assert.equal(spool.inMemory, 0, 'released once, counted once');
    const c = await spool.receive(readerOf(Buffer.from('z'.repeat(800))), 800, 'stdout');
    assert.equal(c.file, undefined, 'the budget is free again');
    spool.close();
    assert.equal(existsSync(b.file as string), false, 'close() removes what is left');
  });

  it('leaves no file when the stream ends before the output does', async () => {
    const spool = new OutputSpool({ dir: parent, thresholdBytes: 1024 });
    const bytes = randomBytes(200 * 1024);
    await assert.rejects(spool.receive(readerOf(bytes), bytes.length + 10, 'stdout'), /short-read/);
    const left = readdirSync(parent).flatMap((d) => readdirSync(join(parent, d)));
    assert.deepEqual(left, []);
    spool.close();
  });

  it('carries bytes that are not UTF-8 unchanged', () => {
    const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x0a]);
    const out = ActionOutput.of(bytes);
    assert.ok(out.buffer().equals(bytes));
    assert.deepEqual(JSON.parse(JSON.stringify({ out })), { out: { size: 5 } });
  });
});
