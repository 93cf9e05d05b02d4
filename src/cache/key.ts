/**
 * The action cache's key (issue 21): what must be equal for a stored result to stand for
 * running the command again. A Rakefile has no targets, so the key is built from what an
 * action sends: the command, every input as the host receives it (wire path, mode, content),
 * the directory the command runs in, and the identity of the kind of host that runs it. The
 * exact encoding is documented in docs/client.md, "The action cache"; changing it changes
 * every key, so it carries a version tag.
 */
import { createHash } from 'node:crypto';

/** The first element of the encoded key: bump it when the encoding changes. */
export const KEY_VERSION = 'rake-ts-action-key/1';

/**
 * One input of an action as the host receives it. `name` is the wire path (the name the
 * file arrives under, `/`-separated, after any `cwd` placement), so two layouts that put
 * one file in two places are two keys.
 */
export interface KeyInput {
  readonly name: string;
  /** Permission bits; only the low 9 (`0o777`) are part of the key. */
  readonly mode: number;
  /** SHA-256 of the content, 64 lowercase hex digits. */
  readonly sha256: string;
}

/**
 * What kind of host runs a command, as `key=value` pairs: `os` and `arch` as the server
 * announces them, plus labels its operator sets (`cc=gcc-12`). A hit is only taken for the
 * same identity, so a result from an arm64 host never stands for an x64 one. The host's
 * address is deliberately not part of it: two machines of one kind share results, and one
 * address may be a different machine tomorrow.
 */
export type PlatformIdentity = Readonly<Record<string, string>>;

/** Everything the key covers. */
export interface KeyParts {
  /** The command as sent (the `remote-` prefix removed). */
  readonly command: string;
  /** The directory of the job directory the command runs in (extension `cwd`); '' for its root. */
  readonly cwd: string;
  readonly inputs: readonly KeyInput[];
  readonly platform: PlatformIdentity;
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The canonical text hashed for a key: a JSON array
 * `["rake-ts-action-key/1", command, cwd, [[k, v], ...], [[name, mode, sha256], ...]]`,
 * platform pairs sorted by key and inputs by name (code-unit order), mode as a 3-digit
 * octal string. JSON quoting makes it unambiguous whatever the names contain. Throws a
 * RangeError for a malformed hash or two inputs under one name (a caller's mistake).
 */
export function keyText(parts: KeyParts): string {
  const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const platform = Object.entries(parts.platform).sort(([a], [b]) => byCodeUnit(a, b));
  const inputs = [...parts.inputs].sort((a, b) => byCodeUnit(a.name, b.name));
  for (const [i, input] of inputs.entries()) {
    if (!HEX64.test(input.sha256)) {
      throw new RangeError(`input ${JSON.stringify(input.name)}: ${input.sha256} is not a SHA-256`);
    }
    if (i > 0 && inputs[i - 1]?.name === input.name) {
      throw new RangeError(`two inputs are named ${JSON.stringify(input.name)}`);
    }
  }
  return JSON.stringify([
    KEY_VERSION,
    parts.command,
    parts.cwd,
    platform,
    inputs.map((f) => [f.name, (f.mode & 0o777).toString(8).padStart(3, '0'), f.sha256]),
  ]);
}

/** The action key: SHA-256 of {@link keyText} as UTF-8, 64 lowercase hex digits. */
export function actionKey(parts: KeyParts): string {
  return createHash('sha256').update(keyText(parts), 'utf8').digest('hex');
}

/**
 * This process's own platform identity (`os`, `arch` from Node), for a server that is this
 * process (the embedded server) and for the announcement of a rakeserver.
 */
export function ownPlatform(labels: PlatformIdentity = {}): PlatformIdentity {
  return { ...labels, os: process.platform, arch: process.arch };
}
