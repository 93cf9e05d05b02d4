import type { SecureContext, TLSSocket } from 'node:tls';
import {
  type CertificateInfo,
  type ClientTls,
  certificateInfo,
  defaultTrust,
  explainTlsFailure,
  type HandshakeState,
  nodeTls,
  TLS_HANDSHAKE_TIMEOUT_MS,
  TlsError,
} from './index.js';

/** One TLS connection being opened: the socket, and a promise of its completed handshake. */
export interface TlsDial {
  readonly socket: TLSSocket;
  /** Resolves once the handshake is over and the server's certificate verified. */
  readonly ready: Promise<void>;
  /** The failure of this connection as a person's sentence, when it is a TLS matter. */
  explain(err: unknown): TlsError | undefined;
}

/**
 * Opens the TLS connections of one run (one transport): one secure context for all of them,
 * and per host the last session ticket, so every connection after the first resumes the
 * session (an abbreviated handshake: no certificate sent or verified again). Verification is
 * always on: there is no switch to skip it.
 */
export class TlsDialer {
  readonly #config: ClientTls;
  #context: SecureContext | undefined;
  readonly #sessions = new Map<string, Buffer>();
  readonly #certificates = new Map<string, CertificateInfo>();
  /** Handshakes completed, and how many of them resumed a session (benchmarks, tests). */
  readonly stats = { handshakes: 0, resumed: 0 };

  constructor(config: ClientTls = {}) {
    this.#config = config;
  }

  /** The certificate a host presented on its last handshake (`rake-ts hosts`). */
  certificate(key: string): CertificateInfo | undefined {
    return this.#certificates.get(key);
  }

  /** Connects to `host:port`; `key` names the host in messages and keys its session. */
  dial(host: string, port: number, key: string): TlsDial {
    const { connect, createSecureContext } = nodeTls();
    if (this.#context === undefined) {
      const ca = this.#config.ca ?? defaultTrust();
      this.#context = createSecureContext({
        ...(ca === undefined ? {} : { ca }),
        ...(this.#config.cert === undefined ? {} : { cert: this.#config.cert }),
        ...(this.#config.key === undefined ? {} : { key: this.#config.key }),
      });
    }
    const session = this.#sessions.get(key);
    const socket = connect({
      host,
      port,
      secureContext: this.#context,
      rejectUnauthorized: true,
      ...(session === undefined ? {} : { session }),
    });
    socket.on('session', (s: Buffer) => this.#sessions.set(key, s));
    const state: { tcpConnected: boolean; secured: boolean } = {
      tcpConnected: false,
      secured: false,
    };
    let timer: NodeJS.Timeout | undefined;
    socket.once('connect', () => {
      state.tcpConnected = true;
      timer = setTimeout(() => {
        socket.destroy(
          new TlsError(
            'handshake-timeout',
            `${key} did not complete a TLS handshake within ${TLS_HANDSHAKE_TIMEOUT_MS / 1000} s: it is probably a plain port (base protocol) waiting for a command; write the host without rakes:// (and without --tls), or use the server's --tls-port`,
          ),
        );
      }, TLS_HANDSHAKE_TIMEOUT_MS);
    });
    socket.once('close', () => clearTimeout(timer));
    const peer = () => {
      try {
        const cert = socket.getPeerCertificate();
        return cert && Object.keys(cert).length > 0 ? cert : undefined;
      } catch {
        return undefined;
      }
    };
    const ready = new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        socket.off('secureConnect', onSecure);
        reject(err);
      };
      const onSecure = () => {
        clearTimeout(timer);
        socket.off('error', onError);
        state.secured = true;
        this.stats.handshakes++;
        if (socket.isSessionReused()) this.stats.resumed++;
        const cert = peer();
        if (cert !== undefined) this.#certificates.set(key, certificateInfo(cert));
        resolve();
      };
      socket.once('secureConnect', onSecure);
      socket.once('error', onError);
    });
    // Awaited by the conversation; a failure it never reaches must not go unhandled.
    ready.catch(() => {});
    return {
      socket,
      ready,
      explain: (err) => {
        const handshake: HandshakeState = { ...state, peer: peer() };
        return explainTlsFailure(err, key, handshake);
      },
    };
  }
}
