/**
 * TLS between our client and our server (issue 23; docs/server.md and docs/client.md,
 * "Certificates for a team"). Node's own `tls`, no dependency. This module loads the PEM
 * files the flags name (with errors that say which file and what to do), and turns the
 * errors of a failed handshake into sentences that name the host and the fix.
 *
 * The base protocol has no TLS: a base peer (the reference `rake-p` / `rakeserver`) only ever
 * meets our plain port, so nothing here can reach it.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { PeerCertificate } from 'node:tls';

/**
 * `node:tls`, loaded on first use: loading it costs 15-20 ms here, which a run with no TLS
 * host should not pay at every start.
 */
export function nodeTls(): typeof import('node:tls') {
  return process.getBuiltinModule('node:tls');
}

/**
 * The CA certificates a client trusts when `--tls-ca` is not given, when they are not Node's
 * own default: `bin/rake-ts.js` run as a program starts node without NODE_EXTRA_CA_CERTS
 * (Node 20 parses that bundle at every start, about 50 ms of CPU, TLS or not) and records
 * here the file it named, so a TLS connection trusts Node's bundled roots plus that file, as
 * Node itself would have. `undefined`: Node's default store is complete (the variable was not
 * set, or node loaded it itself), or the file cannot be read (Node would have warned and gone
 * on without it too).
 */
export function defaultTrust(): Buffer | undefined {
  const deferred = (process as unknown as Record<symbol, unknown>)[
    Symbol.for('rake-ts.deferred-extra-ca-certs')
  ];
  if (typeof deferred !== 'string' || deferred === '') return undefined;
  try {
    const extra = readFileSync(deferred, 'utf8');
    return Buffer.from([...nodeTls().rootCertificates, extra].join('\n'));
  } catch {
    return undefined;
  }
}

/** The port a server serves TLS on when `--tls-port` is not given: the plain port's neighbour. */
export const DEFAULT_TLS_PORT = 6239;

/** A handshake that takes longer than this is given up: the peer is no TLS server. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * The first byte of every TLS connection (a handshake record, RFC 8446 §5.1). A base-protocol
 * peer starts with `!` or a space, so one byte tells them apart.
 */
export const TLS_HANDSHAKE_BYTE = 0x16;

/**
 * The start of the `!F` message our TLS port sends a peer that spoke plain text to it; our
 * client recognises it in a cost reply and says what to do instead of "unexpected !F".
 */
export const PLAIN_ON_TLS_PORT = 'TLS required:';

/**
 * The start of the `!F` message our TLS port sends, inside TLS, to a client whose certificate
 * it does not accept (mutual TLS): a clear refusal the client can tell apart, where a bare
 * close would leave it guessing.
 */
export const CLIENT_CERT_REFUSED = 'TLS client certificate refused:';

/** A TLS set-up problem (a file that is missing, not PEM, a key that does not fit). */
export class TlsConfigError extends Error {
  override readonly name = 'TlsConfigError';
}

/**
 * A TLS connection that failed in a way a person must fix (a certificate, a CA, a port that
 * speaks the other language): the message names the host and what to do. Carried as the
 * `cause` of a job's {@link JobError}, or as a cost query's error.
 */
export class TlsError extends Error {
  override readonly name = 'TlsError';
  /** `expired`, `wrong-name`, … : for tests and logs; the message is for people. */
  readonly reason: TlsFailure;

  constructor(reason: TlsFailure, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.reason = reason;
  }
}

/** Why a TLS connection failed, one value per thing a person does about it. */
export type TlsFailure =
  | 'expired'
  | 'not-yet-valid'
  | 'wrong-name'
  | 'unknown-ca'
  | 'client-cert-refused'
  | 'plain-server'
  | 'tls-required'
  | 'handshake-timeout'
  | 'handshake-failed';

/** What a client presents and trusts; made once per run from `--tls-ca/--tls-cert/--tls-key`. */
export interface ClientTls {
  /** CA certificates to trust instead of the system store (`--tls-ca`). */
  readonly ca?: Buffer;
  /** The client's certificate and key, for servers that require one (mutual TLS). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** Every host is TLS (`--tls`), not only those written `rakes://`. */
  readonly all?: boolean;
}

/** What a server presents and whom it asks for a certificate. */
export interface ServerTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Clients must present a certificate signed by this CA (mutual TLS). */
  readonly clientCa?: Buffer;
  /** The TLS port (default {@link DEFAULT_TLS_PORT}; 0 = any free port). */
  readonly port?: number;
}

async function readPem(flag: string, file: string, base: string): Promise<Buffer> {
  const path = resolve(base, file);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new TlsConfigError(`${flag} ${file}: cannot read it (${code}): name a PEM file`);
  }
  if (!bytes.includes('-----BEGIN ')) {
    throw new TlsConfigError(
      `${flag} ${file}: not a PEM file (no "-----BEGIN" line): give the PEM form (openssl x509 -outform PEM)`,
    );
  }
  return bytes;
}

/** Checks that a certificate, key and CA make a context, with the flags named on failure. */
function tryContext(
  flags: string,
  options: Parameters<typeof import('node:tls').createSecureContext>[0],
): void {
  try {
    nodeTls().createSecureContext(options);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new TlsConfigError(
      `${flags}: ${message}: check that the key belongs to the certificate and both are PEM`,
    );
  }
}

/**
 * Reads the client's TLS files (paths relative to `base`). Rejects with a
 * {@link TlsConfigError} naming the flag and file when one cannot be used.
 */
export async function loadClientTls(
  files: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined },
  base: string,
  all = false,
): Promise<ClientTls> {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new TlsConfigError(
      '--tls-cert and --tls-key go together: give both (the certificate and its private key) or neither',
    );
  }
  const ca = files.ca === undefined ? undefined : await readPem('--tls-ca', files.ca, base);
  const cert = files.cert === undefined ? undefined : await readPem('--tls-cert', files.cert, base);
  const key = files.key === undefined ? undefined : await readPem('--tls-key', files.key, base);
  if (ca !== undefined) tryContext(`--tls-ca ${files.ca}`, { ca });
  if (cert !== undefined && key !== undefined) {
    tryContext(`--tls-cert ${files.cert} --tls-key ${files.key}`, { cert, key });
  }
  return {
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    ...(all ? { all } : {}),
  };
}

/** Reads the server's TLS files; rejects with a {@link TlsConfigError} naming the flag and file. */
export async function loadServerTls(
  files: { cert: string; key: string; clientCa?: string | undefined; port?: number | undefined },
  base: string,
): Promise<ServerTls> {
  const cert = await readPem('--tls-cert', files.cert, base);
  const key = await readPem('--tls-key', files.key, base);
  const clientCa =
    files.clientCa === undefined
      ? undefined
      : await readPem('--tls-client-ca', files.clientCa, base);
  tryContext(`--tls-cert ${files.cert} --tls-key ${files.key}`, { cert, key });
  if (clientCa !== undefined) tryContext(`--tls-client-ca ${files.clientCa}`, { ca: clientCa });
  return {
    cert,
    key,
    ...(clientCa === undefined ? {} : { clientCa }),
    ...(files.port === undefined ? {} : { port: files.port }),
  };
}

/** What `rake-ts hosts` shows of a server's certificate. */
export interface CertificateInfo {
  /** `CN=build1.example.org, O=Team`: the subject as people read it. */
  readonly subject: string;
  /** `CN=Team CA`. */
  readonly issuer: string;
  /** When it stops being valid (ISO 8601). */
  readonly validTo: string;
  /** Whole days left (negative once expired). */
  readonly daysLeft: number;
}

/** Within this many days of its end, a certificate is shown with a warning. */
export const EXPIRY_WARNING_DAYS = 14;

function names(fields: object | undefined): string {
  if (fields === undefined) return '';
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`)
    .join(', ');
}

/** The parts of a peer certificate a person checks, `now` in ms since the epoch. */
export function certificateInfo(cert: PeerCertificate, now = Date.now()): CertificateInfo {
  const end = new Date(cert.valid_to);
  return {
    subject: names(cert.subject),
    issuer: names(cert.issuer),
    validTo: end.toISOString(),
    daysLeft: Math.floor((end.getTime() - now) / 86_400_000),
  };
}

/** `CN=a until 2027-01-05` and, within {@link EXPIRY_WARNING_DAYS}, a warning. */
export function describeCertificate(info: CertificateInfo): string {
  const day = info.validTo.slice(0, 10);
  if (info.daysLeft < 0) return `${info.subject} EXPIRED ${day}`;
  const warning =
    info.daysLeft < EXPIRY_WARNING_DAYS
      ? ` (WARNING: expires in ${info.daysLeft} day${info.daysLeft === 1 ? '' : 's'}: renew it)`
      : '';
  return `${info.subject} until ${day}${warning}`;
}

const UNKNOWN_CA = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
]);

/** Alerts a server sends when it does not accept the client's certificate. */
const CLIENT_REFUSED = new Set([
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED',
  'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR',
  'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED',
]);

/** What OpenSSL says when the bytes that came back are not TLS records. */
const NOT_TLS = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_UNKNOWN_PROTOCOL',
  'ERR_SSL_RECORD_LAYER_FAILURE',
  'ERR_SSL_HTTP_REQUEST',
]);

function codeOf(err: unknown): string | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'ECONNRESET' && code !== 'EPIPE') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Where a client's TLS connection got to when it failed. */
export interface HandshakeState {
  /** The TCP connection was up (a refusal before that is no TLS matter). */
  readonly tcpConnected: boolean;
  /** The handshake completed. */
  readonly secured: boolean;
  /** The server's certificate, when the handshake got that far (for its dates and names). */
  readonly peer?: PeerCertificate | undefined;
}

const FIX_CERT = 'renew the certificate on the server (docs/server.md, "Certificates for a team")';

/**
 * The failure of a TLS connection to `host` (`host:port`) as a {@link TlsError} a person can
 * act on, or undefined when it is no TLS matter (refused, reset after the handshake, a wire fault).
 */
export function explainTlsFailure(
  err: unknown,
  host: string,
  state: HandshakeState,
): TlsError | undefined {
  if (err instanceof TlsError) return err;
  if (!state.tcpConnected) return undefined;
  const code = codeOf(err);
  const detail = err instanceof Error ? err.message : String(err);
  if (code === 'CERT_HAS_EXPIRED') {
    const end = state.peer?.valid_to === undefined ? '' : ` on ${state.peer.valid_to}`;
    return new TlsError(
      'expired',
      `the TLS certificate of ${host} expired${end}: ${FIX_CERT}, or check this machine's clock`,
      err,
    );
  }
  if (code === 'CERT_NOT_YET_VALID') {
    return new TlsError(
      'not-yet-valid',
      `the TLS certificate of ${host} is not valid yet: check the clocks of this machine and the server`,
      err,
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const reason = (err as { reason?: unknown }).reason;
    return new TlsError(
      'wrong-name',
      `the TLS certificate of ${host} is not for that name (${typeof reason === 'string' ? reason : detail}): write the host as the certificate names it, or reissue the certificate with this name in its subjectAltName`,
      err,
    );
  }
  if (code !== undefined && UNKNOWN_CA.has(code)) {
    return new TlsError(
      'unknown-ca',
      `the TLS certificate of ${host} is signed by a CA this client does not trust (${code}): pass the team's CA certificate with --tls-ca FILE`,
      err,
    );
  }
  if (code !== undefined && CLIENT_REFUSED.has(code)) {
    return new TlsError(
      'client-cert-refused',
      `${host} refused this client's certificate (mutual TLS: ${code}): pass --tls-cert and --tls-key with a certificate signed by the CA the server names in --tls-client-ca`,
      err,
    );
  }
  if (code !== undefined && NOT_TLS.has(code)) {
    return new TlsError(
      'plain-server',
      `${host} answered in plain text, not TLS: that port serves the base protocol; write the host without rakes:// (and without --tls), or use the server's --tls-port`,
      err,
    );
  }
  if (state.secured) return undefined;
  if (code?.startsWith('ERR_SSL_')) {
    return new TlsError('handshake-failed', `TLS with ${host} failed: ${detail}`, err);
  }
  // Closed or reset during the handshake: what a plain server does with a ClientHello.
  return new TlsError(
    'plain-server',
    `${host} closed the connection during the TLS handshake: it is probably a plain port (base protocol); write the host without rakes:// (and without --tls), or use the server's --tls-port`,
    err,
  );
}
