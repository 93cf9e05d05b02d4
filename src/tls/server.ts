import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { encodePacket } from '../protocol/header.js';
import {
  CLIENT_CERT_REFUSED,
  DEFAULT_TLS_PORT,
  PLAIN_ON_TLS_PORT,
  type ServerTls,
  TLS_HANDSHAKE_BYTE,
  TLS_HANDSHAKE_TIMEOUT_MS,
} from './index.js';

/** What {@link listenTls} needs from the server it serves for. */
export interface TlsListenOptions {
  readonly tls: ServerTls;
  readonly host: string;
  /** A connection that sends nothing this long before its first byte is closed. */
  readonly idleTimeoutMs: number;
  /** The plain port, named in the refusal a plain peer gets; undefined when the server has none. */
  readonly plainPort: number | undefined;
  readonly log: Logger;
  /** Exit status of the refusal a plain peer gets (the server's refusal status). */
  readonly refusalExitCode: number;
  /** Takes over a connection once its handshake is done (and its client certificate checked). */
  readonly accept: (socket: TLSSocket) => void;
}

/** The TLS port of a server: listening, and where. */
export interface TlsListener {
  readonly server: Server;
  readonly port: number;
}

/**
 * Listens for TLS on its own port beside the plain one (docs/server.md, "TLS"): base-protocol
 * peers keep the plain port, untouched. The first byte of each connection is read before TLS
 * starts: a plain peer (it starts `!` or a space, never 0x16) gets a base-protocol `!F` saying
 * this port speaks TLS, in clear, and the connection closes, instead of a TLS alert it cannot
 * read or a silent hang.
 */
export async function listenTls(options: TlsListenOptions): Promise<TlsListener> {
  const { tls, log } = options;
  const mutual = tls.clientCa !== undefined;
  const secure = createTlsServer(
    {
      cert: tls.cert,
      key: tls.key,
      // Checked below rather than by a bare close: the refused client is told why.
      ...(mutual ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: false } : {}),
      handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
      // Not half-open: a client that hangs up mid-handshake (one that refused our
      // certificate) must close the socket, or the port's close waits on it.
    },
    (socket: TLSSocket) => {
      if (mutual && !socket.authorized) {
        refuseClient(socket, options);
        return;
      }
      options.accept(socket);
    },
  );
  secure.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    log.info(
      { err: err.message, code: err.code, remote: `${socket.remoteAddress}:${socket.remotePort}` },
      'TLS handshake failed',
    );
    // Not closed for us: left open, it would hold the port's close (and a descriptor) forever.
    socket.destroy();
  });
  const server = createServer((raw: Socket) => {
    raw.setTimeout(options.idleTimeoutMs);
    raw.once('timeout', () => raw.destroy());
    raw.on('error', (err) => log.debug({ err: err.message }, 'socket error before TLS'));
    raw.once('readable', () => {
      const first = raw.read(1) as Buffer | null;
      if (first === null) {
        raw.destroy();
        return;
      }
      raw.unshift(first);
      raw.setTimeout(0);
      raw.removeAllListeners('timeout');
      if (first[0] === TLS_HANDSHAKE_BYTE) {
        secure.emit('connection', raw);
        return;
      }
      refusePlain(raw, options);
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(tls.port ?? DEFAULT_TLS_PORT, options.host, () => {
      server.off('error', fail);
      ok();
    });
  });
  server.on('error', (err) => log.error({ err: err.message }, 'TLS listener error'));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : (tls.port ?? 0);
  return { server, port };
}

/**
 * Refuses a TLS client whose certificate the `--tls-client-ca` did not sign (or that sent
 * none), with a base-protocol `!F` inside TLS; nothing it sent is read, nothing runs.
 */
function refuseClient(socket: TLSSocket, options: TlsListenOptions): void {
  const why = String(socket.authorizationError ?? 'no certificate');
  options.log.info(
    { remote: `${socket.remoteAddress}:${socket.remotePort}`, why },
    'TLS client certificate refused',
  );
  const message = `${CLIENT_CERT_REFUSED} ${why}: present a certificate signed by this server's --tls-client-ca (client flags --tls-cert and --tls-key)\n`;
  socket.on('data', () => {});
  socket.on('error', () => {});
  socket.write(encodePacket({ code: '!F' }, message));
  socket.end(encodePacket({ code: '!F' }, String(options.refusalExitCode)));
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Answers a plain-text peer on the TLS port with the base protocol's failure, then closes. */
function refusePlain(raw: Socket, options: TlsListenOptions): void {
  const address = raw.address();
  const here = 'port' in address ? address.port : '?';
  const plain =
    options.plainPort === undefined
      ? 'this server serves TLS only'
      : `or use the plain port ${options.plainPort}`;
  const message = `${PLAIN_ON_TLS_PORT} port ${here} of this rakeserver speaks TLS: write the host as rakes://host:${here} in HOSTS (or pass --tls), ${plain}\n`;
  options.log.info(
    { remote: `${raw.remoteAddress}:${raw.remotePort}`, port: here },
    'plain text on the TLS port: refused',
  );
  raw.on('data', () => {});
  raw.write(encodePacket({ code: '!F' }, message));
  raw.end(encodePacket({ code: '!F' }, String(options.refusalExitCode)));
  setTimeout(() => raw.destroy(), 1000).unref();
}
