import { isProtocolError } from '../protocol/errors.js';

/**
 * How a job's connection went wrong, which decides what happens next:
 * - `host-lost`: refused, reset, closed or silent before the reply; retried on another host.
 * - `protocol-error`: the peer sent bytes the protocol does not allow, or refused ours.
 * - `bad-output`: an output file could not be written inside the Rakefile's directory.
 * - `timeout`: the job outlived `jobTimeoutMs`.
 * - `requirement-collision`: two required files would arrive under one name on this host
 *   (a base-protocol host gets files outside the directory under their base names).
 */
export type JobErrorKind =
  | 'host-lost'
  | 'protocol-error'
  | 'bad-output'
  | 'timeout'
  | 'requirement-collision';

/** A failed job connection, classified; `cause` keeps the original error. */
export class JobError extends Error {
  override readonly name = 'JobError';
  readonly kind: JobErrorKind;
  /** True when the server's reply had not arrived: the command may not have run at all. */
  readonly beforeReply: boolean;

  constructor(kind: JobErrorKind, message: string, beforeReply: boolean, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.kind = kind;
    this.beforeReply = beforeReply;
  }
}

/**
 * A host that wants a token this client does not have, or refused the one it has: a
 * `protocol-error` before anything ran. The run gives that host no more work (its actions
 * go to other hosts) and names it in the summary.
 */
export class TokenRefused extends JobError {
  constructor(message: string) {
    super('protocol-error', message, true);
  }
}

/**
 * A host that refused the hello itself (not for want of a token): a `protocol-error`
 * before anything ran. On a warm connection whose cost query came first, a rake-ts server
 * from before `load` does so; the job then starts again on a new connection (`transport.ts`).
 */
export class HelloRefused extends JobError {
  constructor(message: string) {
    super('protocol-error', message, true);
  }
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
]);

/** The `code` of a Node system error, or of the errors inside an AggregateError. */
export function errorCode(err: unknown): string | undefined {
  if (err instanceof AggregateError) {
    const codes = err.errors.map(errorCode).filter((c) => c !== undefined);
    if (codes.length > 0 && codes.every((c) => c === codes[0])) return codes[0];
  }
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** True when nothing listens at the address (every address the name resolved to). */
export function isConnectionRefused(err: unknown): boolean {
  return errorCode(err) === 'ECONNREFUSED';
}

/** True for errors that mean the peer is gone or unreachable, not that it misbehaved. */
export function isConnectionError(err: unknown): boolean {
  if (isProtocolError(err, 'short-read', 'socket-error')) return true;
  const code = errorCode(err);
  return code !== undefined && CONNECTION_CODES.has(code);
}

/** A one-line description for events and logs: the system error code or the message. */
export function describeError(err: unknown): string {
  if (err instanceof AggregateError) {
    const code = errorCode(err);
    if (code !== undefined) return code;
    return err.errors.map(describeError).join('; ') || err.message;
  }
  if (err instanceof Error) {
    const code = errorCode(err);
    if (code !== undefined && CONNECTION_CODES.has(code)) return code;
    return err.message;
  }
  return String(err);
}
