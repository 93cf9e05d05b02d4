import { lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ProtocolError } from './errors.js';

/**
 * Splits a wire file name into safe relative segments. Wire names use `/`; empty and `.`
 * segments are dropped. Refuses (`bad-name`) empty names, absolute names, `..` segments
 * and NUL bytes, so a name can never reach outside the directory it is joined to.
 */
export function wireNameSegments(wireName: string): string[] {
  const shown = JSON.stringify(wireName.length > 200 ? `${wireName.slice(0, 200)}...` : wireName);
  const refuse = (why: string) =>
    new ProtocolError('bad-name', 'a relative file name inside the directory', `${why}: ${shown}`);
  if (wireName.includes('\0')) throw refuse('a name containing NUL');
  if (wireName.startsWith('/')) throw refuse('an absolute name');
  const segments = wireName.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw refuse('a name with a ".." segment');
  if (segments.length === 0) throw refuse('an empty name');
  const long = segments.find((s) => Buffer.byteLength(s) > MAX_SEGMENT_BYTES);
  if (long !== undefined) {
    throw refuse(
      `a name with a ${Buffer.byteLength(long)}-byte segment (at most ${MAX_SEGMENT_BYTES}, as file systems allow)`,
    );
  }
  return segments;
}

/** Longest name segment: NAME_MAX of Linux file systems (and of macOS's), in bytes. */
export const MAX_SEGMENT_BYTES = 255;

/** Joins a wire file name onto `dir`, refusing any name that could escape it (lexically). */
export function resolveInside(dir: string, wireName: string): string {
  return join(dir, ...wireNameSegments(wireName));
}

/**
 * Like {@link resolveInside}, and also creates the parent directories, refusing to pass
 * through a symlink or a non-directory below `dir`: a job that made `out -> /etc` cannot make
 * a received `out/passwd` land in `/etc`. The final component may be absent, a file or a
 * symlink (the receiver renames a new file over it, which replaces a symlink rather than
 * following it), but not a directory. Synchronous: a few lstat calls, cheaper on the event
 * loop than two thread-pool handoffs each.
 */
export function prepareInside(dir: string, wireName: string): string {
  const segments = wireNameSegments(wireName);
  let current = dir;
  for (const segment of segments.slice(0, -1)) {
    current = join(current, segment);
    let st = lstatSync(current, { throwIfNoEntry: false });
    if (!st) {
      try {
        mkdirSync(current);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENAMETOOLONG') throw tooLong(wireName);
        if (code !== 'EEXIST') throw err;
      }
      st = lstatSync(current);
    }
    if (!st.isDirectory()) {
      throw new ProtocolError(
        'bad-name',
        'a file name whose parents are directories',
        `${JSON.stringify(wireName)}, where ${JSON.stringify(segment)} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}`,
      );
    }
  }
  const path = join(dir, ...segments);
  // A file cannot replace a directory (rename fails with EISDIR): refuse the name instead.
  let last: ReturnType<typeof lstatSync>;
  try {
    last = lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENAMETOOLONG') throw tooLong(wireName);
    last = undefined;
  }
  if (last?.isDirectory()) {
    throw new ProtocolError(
      'bad-name',
      'a file name that is not a directory',
      `${JSON.stringify(wireName)}, which is a directory`,
    );
  }
  return path;
}

/**
 * A name whose path below the directory is longer than the file system allows (PATH_MAX).
 * Says how long the name is, never the directory: a reply must not carry a server path.
 */
function tooLong(wireName: string): ProtocolError {
  return new ProtocolError(
    'bad-name',
    'a file name short enough for the file system',
    `a name of ${Buffer.byteLength(wireName)} bytes, too long a path on this host`,
  );
}
