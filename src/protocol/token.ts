import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { authProof } from './extensions.js';

/** The environment variable that holds a token when no `--token-file` is given. */
export const TOKEN_ENV = 'RAKE_TOKEN';

/**
 * A shared secret. Kept as bytes behind a class so that logging or JSON-serializing it by
 * mistake prints `[token]`, never the secret.
 */
export class Token {
  readonly #bytes: Buffer;

  constructor(secret: string | Uint8Array) {
    const bytes = Buffer.from(typeof secret === 'string' ? secret.trim() : secret);
    if (bytes.length === 0) throw new TokenError('the token is empty');
    this.#bytes = bytes;
  }

  /** The proof a client sends for `nonce` (see `authProof`). */
  proof(nonce: string): string {
    return authProof(this.#bytes, nonce);
  }

  /** Compares a client's proof in constant time. */
  verify(nonce: string, proof: string): boolean {
    const want = Buffer.from(this.proof(nonce), 'hex');
    const got = Buffer.from(proof, 'hex');
    return got.length === want.length && timingSafeEqual(got, want);
  }

  toString(): string {
    return '[token]';
  }

  toJSON(): string {
    return '[token]';
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[token]';
  }
}

/** A token that cannot be read or is empty; the message never contains the secret. */
export class TokenError extends Error {
  override readonly name = 'TokenError';
}

/** A fresh challenge: 16 random bytes as 32 hex digits. */
export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

/**
 * The token from `--token-file` (whitespace around it trimmed), else from `RAKE_TOKEN`,
 * else none. Also says whether the file is readable by group or others, so the caller can
 * warn. Throws {@link TokenError} for an unreadable or empty file.
 */
export async function loadToken(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ token: Token; source: string; exposed: boolean } | undefined> {
  if (file !== undefined) {
    let text: Buffer;
    let mode: number;
    try {
      text = await readFile(file);
      mode = (await stat(file)).mode;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new TokenError(`cannot read the token file ${file} (${code})`);
    }
    try {
      return {
        token: new Token(text.toString('utf8')),
        source: `file ${file}`,
        exposed: (mode & 0o077) !== 0,
      };
    } catch {
      throw new TokenError(`the token file ${file} is empty`);
    }
  }
  const value = env[TOKEN_ENV];
  if (value === undefined || value.trim() === '') return undefined;
  return { token: new Token(value), source: `$${TOKEN_ENV}`, exposed: false };
}
