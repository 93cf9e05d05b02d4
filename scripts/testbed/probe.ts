/**
 * Client-side probes of a test-bed host, for specs: can it be reached, who answers, how long a
 * round trip takes, what cost it reports. Each is bounded by a timeout and reports failure as
 * data, because "unreachable" is often the expected outcome. The cost query speaks the wire
 * format directly (not through src/protocol) so the test bed checks the server independently
 * of the client code under test.
 */
import { connect, type Socket } from 'node:net';

/** The outcome of one probe; a failure says whether the host refused, stayed silent or broke. */
export type ProbeResult<T> =
  | { readonly ok: true; readonly value: T }
  | {
      readonly ok: false;
      readonly reason: 'timeout' | 'refused' | 'closed' | 'error';
      readonly message: string;
    };

/** Milliseconds from `connect()` to the established connection: one network round trip. */
export function connectTime(
  address: string,
  port: number,
  timeoutMs: number,
): Promise<ProbeResult<number>> {
  return withSocket(address, port, timeoutMs, (socket, done, started) => {
    socket.once('connect', () => done({ ok: true, value: performance.now() - started }));
  });
}

/** The first line a host's server sends on connecting (the echo server's `<name> <addr>:<port>`). */
export function greeting(
  address: string,
  port: number,
  timeoutMs: number,
): Promise<ProbeResult<string>> {
  return withSocket(address, port, timeoutMs, (socket, done) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end >= 0) done({ ok: true, value: text.slice(0, end) });
    });
  });
}

/**
 * Milliseconds for one byte to go to the echo server and come back, measured on an
 * established connection after the greeting, so it is one round trip and nothing else.
 */
export function echoRoundTrip(
  address: string,
  port: number,
  timeoutMs: number,
): Promise<ProbeResult<number>> {
  return withSocket(address, port, timeoutMs, (socket, done) => {
    let phase: 'greeting' | 'echo' = 'greeting';
    let sent = 0;
    let text = '';
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (phase === 'greeting' && text.includes('\n')) {
        phase = 'echo';
        text = text.slice(text.indexOf('\n') + 1);
        sent = performance.now();
        socket.write('x');
      }
      if (phase === 'echo' && text.includes('x'))
        done({ ok: true, value: performance.now() - sent });
    });
  });
}

/**
 * Asks a rakeserver its cost: sends `!E0` padded to 64 bytes, expects a 64-byte `!E<len>`
 * header and `len` bytes of decimal text (docs: /work/shared/PROTOCOL.md, "cost query").
 */
export function queryCost(
  address: string,
  port: number,
  timeoutMs: number,
): Promise<ProbeResult<number>> {
  return withSocket(address, port, timeoutMs, (socket, done) => {
    let received = Buffer.alloc(0);
    socket.once('connect', () => socket.write('!E0'.padEnd(64, ' ')));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 64) return;
      const header = received.subarray(0, 64).toString('latin1');
      const match = /^!E(\d+) *$/.exec(header);
      if (match === null) {
        done({ ok: false, reason: 'error', message: `bad cost header ${JSON.stringify(header)}` });
        return;
      }
      const length = Number(match[1]);
      if (received.length < 64 + length) return;
      const text = received.subarray(64, 64 + length).toString('latin1');
      const cost = Number(text.trim());
      done(
        Number.isFinite(cost) && text.trim() !== ''
          ? { ok: true, value: cost }
          : { ok: false, reason: 'error', message: `bad cost ${JSON.stringify(text)}` },
      );
    });
  });
}

type Finish<T> = (result: ProbeResult<T>) => void;

/** Opens one connection, lets `use` decide the result, and always closes it within `timeoutMs`. */
function withSocket<T>(
  address: string,
  port: number,
  timeoutMs: number,
  use: (socket: Socket, done: Finish<T>, started: number) => void,
): Promise<ProbeResult<T>> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = connect({ host: address, port });
    let finished = false;
    const done: Finish<T> = (result) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(
      () => done({ ok: false, reason: 'timeout', message: `no answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    socket.on('error', (err: NodeJS.ErrnoException) =>
      done({
        ok: false,
        reason: err.code === 'ECONNREFUSED' ? 'refused' : 'error',
        message: err.message,
      }),
    );
    socket.on('close', () =>
      done({ ok: false, reason: 'closed', message: 'connection closed before an answer' }),
    );
    use(socket, done, started);
  });
}
