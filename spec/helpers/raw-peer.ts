import { connect, type Socket } from 'node:net';

/** A 64-byte header from its text (`'!C7'`), right-padded with spaces, as PROTOCOL.md says. */
export function hdr(text: string): Buffer {
  if (text.length > 64) throw new RangeError(`header text longer than 64: ${text}`);
  return Buffer.from(text.padEnd(64, ' '), 'latin1');
}

/** A header followed by its payload: `pkt('!C', 'echo hi')` = `!C7` + pad + `echo hi`. */
export function pkt(code: string, payload: string | Buffer = ''): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return Buffer.concat([hdr(`${code}${body.length}`), body]);
}

/**
 * A raw-socket test peer: sends exact bytes and checks exact bytes back, with no code shared
 * with `src/protocol/`, so golden transcripts test the implementation rather than echo it.
 * Every wait is bounded (default 5 s).
 */
export class RawPeer {
  readonly socket: Socket;
  #buffer: Buffer = Buffer.alloc(0);
  #ended = false;
  #waiter: (() => void) | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  /** Connects to a server on loopback. */
  static connect(port: number, host = '127.0.0.1'): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, allowHalfOpen: true });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.setNoDelay(true);
        resolve(new RawPeer(socket));
      });
    });
  }

  /** Writes bytes (strings as UTF-8) and waits until they are handed to the kernel. */
  send(...parts: Array<Buffer | string>): Promise<void> {
    const data = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
    return new Promise((resolve, reject) =>
      this.socket.write(data, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Reads exactly `n` bytes; rejects on end of stream or timeout, saying what did arrive. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buffer.length < n) {
      if (this.#ended) {
        throw new Error(`peer: wanted ${n} bytes, stream ended after ${this.#show(this.#buffer)}`);
      }
      if (!(await this.#wait(deadline))) {
        throw new Error(`peer: wanted ${n} bytes, timed out with ${this.#show(this.#buffer)}`);
      }
    }
    const out = this.#buffer.subarray(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  /** Reads a 64-byte header and returns it as text with the padding trimmed. */
  async header(timeoutMs = 5000): Promise<string> {
    return (await this.read(64, timeoutMs)).toString('latin1').trimEnd();
  }

  /** Reads a header and its payload: `{ head: '!SS  3', payload }`. */
  async packet(timeoutMs = 5000): Promise<{ head: string; payload: Buffer }> {
    const head = await this.header(timeoutMs);
    const m = /^(!E|!C|!R|!D|!F|!S...)\s*(\d+)$/.exec(head);
    if (!m) throw new Error(`peer: not a header: ${JSON.stringify(head)}`);
    const isAnnounce = head.startsWith('!SSIF');
    return {
      head,
      payload: isAnnounce ? Buffer.alloc(0) : await this.read(Number(m[2]), timeoutMs),
    };
  }

  /** Everything until the server closes its side (bounded). */
  async readToEnd(timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#ended) {
      if (!(await this.#wait(deadline))) throw new Error('peer: server did not close in time');
    }
    const out = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    return out;
  }

  /** Waits until the server has closed (bounded); true if it did. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#ended) if (!(await this.#wait(deadline))) return false;
    return true;
  }

  /** Bytes received but not read yet. */
  get pending(): Buffer {
    return this.#buffer;
  }

  /** Closes our side gracefully (FIN). */
  end(): void {
    this.socket.end();
  }

  /** Drops the connection at once (the peer "vanishes"). */
  destroy(): void {
    this.socket.destroy();
  }

  /** Sends a file on request, as a filestream sender answering `!N`, `!Z`, `!T`. */
  async serveFile(name: string, content: Buffer): Promise<void> {
    await this.expect('!N');
    await this.send(pkt('!S!NF', name));
    await this.expect('!Z');
    await this.send(pkt('!S!ZF', String(content.length)));
    await this.expect('!T');
    await this.send(content);
  }

  /**
   * Receives a filestream whose `!SSIF<count>` header was already read: pulls each file with
   * `!N`, `!Z`, `!T` (2-byte requests, or padded to 64 with `padded`).
   */
  async pullFiles(
    count: number,
    padded = false,
  ): Promise<Array<{ name: string; content: Buffer }>> {
    const req = (r: string) => (padded ? hdr(r) : Buffer.from(r));
    const files: Array<{ name: string; content: Buffer }> = [];
    for (let i = 0; i < count; i++) {
      await this.send(req('!N'));
      const name = await this.packet();
      if (!name.head.startsWith('!S!NF')) throw new Error(`peer: wanted !S!NF, got ${name.head}`);
      await this.send(req('!Z'));
      const size = await this.packet();
      if (!size.head.startsWith('!S!ZF')) throw new Error(`peer: wanted !S!ZF, got ${size.head}`);
      await this.send(req('!T'));
      const content = await this.read(Number(size.payload.toString('latin1')));
      files.push({ name: name.payload.toString('utf8'), content });
    }
    return files;
  }

  /** Reads exactly `text.length` bytes and throws unless they equal `text`. */
  async expect(text: string | Buffer, timeoutMs = 5000): Promise<void> {
    const want = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
    const got = await this.read(want.length, timeoutMs);
    if (!got.equals(want)) {
      throw new Error(`peer: expected ${this.#show(want)}, got ${this.#show(got)}`);
    }
  }

  #show(b: Buffer): string {
    return JSON.stringify(b.subarray(0, 200).toString('latin1'));
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  #wait(deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const ms = deadline - Date.now();
      if (ms <= 0) return resolve(false);
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        resolve(false);
      }, ms);
      this.#waiter = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }
}
