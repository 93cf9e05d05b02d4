// Socket write-batching shared by client and server: writes made in one tick leave in one
// system call (`write`), a message the peer does not wait for rides with the next write
// (`hold`), and `drained` waits for a full socket buffer to empty.
import type { Writable } from 'node:stream';
import { ProtocolError } from './errors.js';

/** Sockets whose corked writes go out when this tick ends (see {@link write}). */
const flushing = new WeakSet<Writable>();

/**
 * Writes `buf`, waiting for the socket to drain when its buffer is full. Writes made in
 * the same tick (a conversation answering requests that arrived together, such as a
 * pipelined `!N!Z!M`) go out in one system call: the socket is corked until the tick ends.
 * So does anything {@link hold} queued before.
 */
export async function write(socket: Writable, buf: Uint8Array): Promise<void> {
  if (socket.destroyed) {
    throw new ProtocolError('socket-error', 'an open connection', 'a closed connection');
  }
  if (!flushing.has(socket)) {
    flushing.add(socket);
    socket.cork();
    process.nextTick(flush, socket);
  }
  if (!socket.write(buf)) await drained(socket);
}

/**
 * Writes `buf` at once, when nothing else is waiting to go on `socket` this tick: a message
 * that is the only one its tick sends (a job's command on a kept connection) leaves in its
 * own system call without the wait for the tick's end and the cork around it. With writes
 * of this tick pending, or one held back ({@link hold}), it is a {@link write}.
 */
export async function writeAlone(socket: Writable, buf: Uint8Array): Promise<void> {
  if (flushing.has(socket) || socket.writableCorked > 0) return write(socket, buf);
  if (socket.destroyed) {
    throw new ProtocolError('socket-error', 'an open connection', 'a closed connection');
  }
  if (!socket.write(buf)) await drained(socket);
}

/**
 * Queues `buf` without sending it: it leaves with the next {@link write} to `socket`, or
 * when the socket is ended. For a message the peer does not wait for (the server's `ok` to
 * a client that sent its whole job behind the hello): one system call and one wake-up of
 * the peer fewer.
 */
export function hold(socket: Writable, buf: Uint8Array): void {
  if (socket.destroyed) return;
  socket.cork();
  socket.write(buf);
}

function flush(socket: Writable): void {
  flushing.delete(socket);
  while (socket.writableCorked > 0) socket.uncork();
}

/** Resolves when `socket` drains; rejects if it closes or fails first. */
export function drained(socket: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      socket.off('error', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = (err?: unknown) => {
      cleanup();
      reject(
        new ProtocolError(
          'socket-error',
          'an open connection',
          err instanceof Error ? err.message : 'the connection closed',
          { cause: err },
        ),
      );
    };
    if (socket.destroyed) return onClose();
    socket.on('drain', onDrain);
    socket.on('close', onClose);
    socket.on('error', onClose);
  });
}
