import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A server that speaks only the base protocol the way the reference Python `rakeserver`
 * does (PROTOCOL.md), written with no code from src/: cost = live connection count + 1
 * (so idle is 1), commands split on spaces and run without a shell, success as
 * `!SSI <len>` + stdout followed by a filestream of every file not uploaded (possibly 0),
 * failure as two `!F` packets, 2-byte `!N`/`!Z`/`!T` requests. Names it receives are
 * written as given, with no directories created (as the reference does).
 *
 * Test knobs: `stallDownloadAfter` sends only that many bytes of an output file and then
 * stalls (to interrupt a client mid-download); `dropJobs` closes job connections right
 * after the command arrives (a host that dies mid-job); `renameOutput` announces output
 * files under other names (a hostile server).
 */
export interface BaseServer {
  readonly port: number;
  /** Commands received, in order. */
  readonly commands: string[];
  /** File names received with `!R`, in order. */
  readonly received: string[];
  close(): Promise<void>;
}

export async function startBaseServer(
  options: {
    stallDownloadAfter?: number;
    dropJobs?: boolean;
    /** Changes the name an output file is announced under (a hostile server). */
    renameOutput?: (name: string) => string;
  } = {},
): Promise<BaseServer> {
  const root = await mkdtemp(join(tmpdir(), 'rake-base-'));
  const commands: string[] = [];
  const received: string[] = [];
  const sockets = new Set<Socket>();
  let live = 0;
  let nextDir = 0;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    live++;
    socket.on('close', () => {
      sockets.delete(socket);
      live--;
    });
    socket.on('error', () => {});
    const dir = join(root, String(nextDir++));
    void converse(socket, dir).catch(() => socket.destroy());
  });

  async function converse(socket: Socket, dir: string): Promise<void> {
    const io = new Bytes(socket);
    const uploaded = new Set<string>();
    for (;;) {
      const head = await io.header();
      if (head === undefined) return;
      const code = head.slice(0, 2);
      // The reference reads `!E` and ignores the rest of a cost query header (PROTOCOL.md):
      // an annex in its padding (our client's offer) changes nothing.
      const field = head.slice(2).trim();
      const length = Number((code === '!E' ? field.split(/\s+/)[0] : field) || '0');
      if (code === '!E' && length === 0) {
        socket.write(packet('!E', String(live)));
      } else if (code === '!R') {
        await mkdir(dir, { recursive: true });
        const announce = await io.header();
        const count = Number(announce?.slice(5).trim());
        for (let i = 0; i < count; i++) {
          socket.write('!N');
          const name = (await io.exact(Number((await io.header())?.slice(5).trim()))).toString();
          socket.write('!Z');
          const size = Number(
            (await io.exact(Number((await io.header())?.slice(5).trim()))).toString(),
          );
          socket.write('!T');
          await writeFile(join(dir, name), await io.exact(size));
          received.push(name);
          uploaded.add(name);
        }
      } else if (code === '!C' || code === '!E') {
        const command = (await io.exact(length)).toString();
        commands.push(command);
        if (options.dropJobs) {
          socket.destroy();
          return;
        }
        await mkdir(dir, { recursive: true });
        const [program, ...args] = command.split(' ').filter((s) => s !== '');
        const result = await execute(program ?? '', args, dir);
        if (result.code !== 0) {
          socket.write(packet('!F', result.stderr));
          socket.write(packet('!F', String(result.code)));
          continue;
        }
        socket.write(Buffer.concat([header(`!SSI ${result.stdout.length}`), result.stdout]));
        const outputs: string[] = [];
        for (const name of await readdir(dir).catch(() => [])) {
          if (!uploaded.has(name) && (await stat(join(dir, name))).isFile()) outputs.push(name);
        }
        socket.write(header(`!SSIF${outputs.length}`));
        for (const name of outputs) {
          await io.expect('!N');
          socket.write(packet('!S!NF', options.renameOutput?.(name) ?? name));
          const content = await readFile(join(dir, name));
          await io.expect('!Z');
          socket.write(packet('!S!ZF', String(content.length)));
          await io.expect('!T');
          if (
            options.stallDownloadAfter !== undefined &&
            content.length > options.stallDownloadAfter
          ) {
            socket.write(content.subarray(0, options.stallDownloadAfter));
            return; // stall: the client must give up or be interrupted
          }
          socket.write(content);
        }
      } else if (code === '!D') {
        await rm(dir, { recursive: true, force: true });
        socket.end();
        return;
      }
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    commands,
    received,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(root, { recursive: true, force: true });
    },
  };
}

function header(text: string): Buffer {
  return Buffer.from(text.padEnd(64, ' '), 'latin1');
}

function packet(code: string, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  return Buffer.concat([header(`${code}${body.length}`), body]);
}

function execute(
  program: string,
  args: string[],
  cwd: string,
): Promise<{ code: number; stdout: Buffer; stderr: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) =>
      resolve({ code: 127, stdout: Buffer.alloc(0), stderr: Buffer.from(e.message) }),
    );
    child.on('close', (code) =>
      resolve({ code: code ?? 1, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }),
    );
  });
}

/** Exact reads over a socket (the framing, written independently of src/protocol). */
class Bytes {
  #buf = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | undefined;

  constructor(socket: Socket) {
    socket.on('data', (b: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, b]);
      this.#wake?.();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake?.();
    });
  }

  async exact(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#ended) throw new Error('ended');
      await new Promise<void>((r) => {
        this.#wake = r;
      });
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** A 64-byte header as text, or undefined at a clean end of stream. */
  async header(): Promise<string | undefined> {
    while (this.#buf.length === 0) {
      if (this.#ended) return undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
      });
    }
    return (await this.exact(64)).toString('latin1');
  }

  async expect(text: string): Promise<void> {
    const got = (await this.exact(text.length)).toString('latin1');
    if (got !== text) throw new Error(`expected ${text}, got ${got}`);
  }
}
