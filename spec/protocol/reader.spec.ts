import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { FramedReader, isProtocolError, ProtocolError } from '../../src/protocol/index.js';

const pad = (s: string) => s.padEnd(64, ' ');

/** A source that delivers `parts` one chunk each, then ends (unless `end` is false). */
function source(parts: Array<string | Buffer>, end = true): PassThrough {
  const s = new PassThrough();
  let i = 0;
  const next = () => {
    const part = parts[i++];
    if (part === undefined) {
      if (end) s.end();
      return;
    }
    s.write(typeof part === 'string' ? Buffer.from(part, 'latin1') : part);
    setImmediate(next);
  };
  setImmediate(next);
  return s;
}

const bytewise = (s: string) => [...s];

function rejectsWith(p: Promise<unknown>, reason: string, fragment?: string) {
  return assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, String(err));
    assert.equal(err.reason, reason);
    if (fragment) assert.ok(err.message.includes(fragment), err.message);
    return true;
  });
}

describe('FramedReader', () => {
  it('peeks across chunks without consuming, and never past what it was asked', async () => {
    const s = new PassThrough();
    const r = new FramedReader(s);
    assert.equal(r.peek(2).length, 0);
    for (const part of ['!', 'R0', 'xyz']) s.write(Buffer.from(part, 'latin1'));
    await new Promise((ok) => setImmediate(ok));
    assert.equal(r.peek(2).toString('latin1'), '!R');
    assert.equal(r.peek(4).toString('latin1'), '!R0x');
    assert.equal(r.peek(100).toString('latin1'), '!R0xyz');
    assert.equal(r.buffered, 6);
    assert.equal((await r.readExact(6)).toString('latin1'), '!R0xyz');
  });

  it('reads exact counts across 1-byte chunks', async () => {
    const r = new FramedReader(source(bytewise('hello world')));
    assert.equal((await r.readExact(5)).toString(), 'hello');
    assert.equal((await r.readExact(6)).toString(), ' world');
    assert.equal(r.bytesRead, 11);
  });

  it('skips leading spaces before a header, even in chunks of only spaces', async () => {
    const r = new FramedReader(source(['   ', '  ', ` ${pad('!C7')}echo hi`]));
    assert.deepEqual({ ...(await r.readHeader()) }, { kind: 'plain', code: '!C', length: 7 });
    assert.equal((await r.readExact(7)).toString(), 'echo hi');
  });

  it('reads 2-byte and padded requests alike', async () => {
    const r = new FramedReader(source(['!N', pad('!Z'), '!', 'T']));
    assert.equal(await r.readRequest('!N'), '!N');
    assert.equal(await r.readRequest('!Z'), '!Z');
    assert.equal(await r.readRequest(), '!T');
  });

  it('names the request that was due and what came instead', async () => {
    await rejectsWith(
      new FramedReader(source(['!T'])).readRequest('!N'),
      'unexpected-code',
      'request !N',
    );
    await rejectsWith(new FramedReader(source(['!Q'])).readRequest(), 'unknown-code', '"!Q"');
  });

  it('turns a !F where a request was due into a refused error carrying its message', async () => {
    const r = new FramedReader(source([`${pad('!F10')}no thanks\n`]));
    await rejectsWith(r.readRequest('!N'), 'refused', 'no thanks');
  });

  it('reports a short read with the bytes expected and the bytes received', async () => {
    const r = new FramedReader(source(['!C7   ', '    ']));
    await rejectsWith(r.readHeader(), 'short-read', 'expected 64 header bytes, received 10 bytes');
    const p = new FramedReader(source(['abc']));
    await rejectsWith(p.readExact(10, 'command bytes'), 'short-read', '10 command bytes');
  });

  it('readHeaderOrEnd: null on a clean end, even after padding; short-read mid-header', async () => {
    assert.equal(await new FramedReader(source([])).readHeaderOrEnd(), null);
    assert.equal(await new FramedReader(source(['    '])).readHeaderOrEnd(), null);
    await rejectsWith(new FramedReader(source(['!D'])).readHeaderOrEnd(), 'short-read');
  });

  it('readPayload refuses an oversized length before reading', async () => {
    const r = new FramedReader(source(['abcdef']));
    await rejectsWith(r.readPayload(6, 5, 'command'), 'limit-exceeded', 'command of at most 5');
    assert.equal((await r.readExact(6)).toString(), 'abcdef');
  });

  it('reports a failing socket as socket-error', async () => {
    const s = source([], false);
    const r = new FramedReader(s);
    const pending = r.readExact(4);
    s.destroy(Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
    await rejectsWith(pending, 'socket-error', 'ECONNRESET');
  });

  it('allows one read at a time', async () => {
    const r = new FramedReader(source(['ab'], false));
    const first = r.readExact(2);
    await assert.rejects(r.readExact(1), /already in progress/);
    assert.equal((await first).toString(), 'ab');
  });

  it('pipeExact hands over exactly n bytes and leaves the rest queued', async () => {
    const r = new FramedReader(source(['0123', '456789', 'ABC']));
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(Buffer.from(c));
        cb();
      },
    });
    await r.pipeExact(8, sink);
    assert.equal(Buffer.concat(chunks).toString(), '01234567');
    assert.equal((await r.readExact(5)).toString(), '89ABC');
  });

  it('pipeExact fails when the stream ends early or the writable fails', async () => {
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    await rejectsWith(new FramedReader(source(['abc'])).pipeExact(10, sink()), 'short-read');
    const failing = new Writable({ write: (_c, _e, cb) => cb(new Error('disk full')) });
    await assert.rejects(
      new FramedReader(source(['abc', 'def'], false)).pipeExact(6, failing),
      /disk full/,
    );
  });

  it('pipeExact applies backpressure: a slow writable keeps the queue bounded', async () => {
    const total = 48 * 1024 * 1024;
    const server = createServer((s) => {
      const block = Buffer.alloc(1024 * 1024, 7);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += block.length;
          if (!s.write(block)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const port = (server.address() as { port: number }).port;
    const socket: Socket = connect(port, '127.0.0.1');
    const r = new FramedReader(socket, { highWaterMark: 1024 * 1024 });
    let received = 0;
    let maxQueued = 0;
    const slow = new Writable({
      highWaterMark: 256 * 1024,
      write(c: Buffer, _e, cb) {
        received += c.length;
        maxQueued = Math.max(maxQueued, r.buffered);
        setImmediate(cb);
      },
    });
    await r.pipeExact(total, slow);
    slow.end();
    await finished(slow);
    socket.destroy();
    server.close();
    assert.equal(received, total);
    // Paused at 1 MiB; one in-flight chunk more may arrive before the pause takes effect.
    assert.ok(maxQueued < 4 * 1024 * 1024, `queued up to ${maxQueued} bytes`);
    assert.ok(isProtocolError(new ProtocolError('short-read', 'a', 'b')));
  });
});
