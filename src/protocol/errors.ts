/**
 * Why a peer's bytes could not be understood or accepted. Kebab-case so logs and tests can
 * match on it; one value per kind of wire fault.
 */
export type ProtocolErrorReason =
  /** The stream ended (or the peer vanished) before the bytes that were due. */
  | 'short-read'
  /** The socket failed (reset, broken pipe) while reading or writing. */
  | 'socket-error'
  /** A header's length field is not a non-negative decimal integer. */
  | 'bad-length'
  /** A header's length field is larger than the reader allows. */
  | 'length-too-large'
  /** The first two bytes of a header or request are not a code this protocol knows. */
  | 'unknown-code'
  /** A known code, but not the one that was due at this point of the conversation. */
  | 'unexpected-code'
  /** A decimal payload (file size, file count, cost, exit code) is not a number. */
  | 'bad-number'
  /** A file name that is empty, absolute, contains `..` or NUL, or is not UTF-8. */
  | 'bad-name'
  /** A value is well-formed but exceeds a configured limit (command size, file size, ...). */
  | 'limit-exceeded'
  /** The peer sent `!F` + a message where something else was due: it refused us. */
  | 'refused'
  /** An `!X` extension message that is malformed, or not negotiated on this connection. */
  | 'bad-extension'
  /** This server requires a token and the peer did not prove it knows it. */
  | 'unauthenticated'
  /** A message did not complete within its deadline (bytes trickled in, or stopped). */
  | 'too-slow';

/**
 * A wire fault, with what was expected and what arrived, so the message tells a user (or a
 * refused peer) exactly what went wrong. Thrown by every function in `src/protocol/`.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly reason: ProtocolErrorReason;
  readonly expected: string;
  readonly received: string;

  constructor(
    reason: ProtocolErrorReason,
    expected: string,
    received: string,
    options?: { cause?: unknown },
  ) {
    super(`${reason}: expected ${expected}, received ${received}`, options);
    this.reason = reason;
    this.expected = expected;
    this.received = received;
  }
}

/** True for a {@link ProtocolError}, optionally of one of the given reasons. */
export function isProtocolError(
  err: unknown,
  ...reasons: ProtocolErrorReason[]
): err is ProtocolError {
  return err instanceof ProtocolError && (reasons.length === 0 || reasons.includes(err.reason));
}

/** Renders peer bytes for an error message: printable ASCII as is, the rest escaped, capped. */
export function showBytes(bytes: Uint8Array, max = 80): string {
  let out = '';
  const n = Math.min(bytes.length, max);
  for (let i = 0; i < n; i++) {
    const b = bytes[i] as number;
    if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) out += String.fromCharCode(b);
    else out += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  const more = bytes.length > max ? `... (${bytes.length} bytes)` : '';
  return `"${out.replace(/ +$/, (s) => (s.length > 3 ? ` +${s.length} spaces` : s))}"${more}`;
}
