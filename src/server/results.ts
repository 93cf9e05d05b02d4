/**
 * The shared action cache on the server (issue 21, extension `results`): the key of a job
 * as this server received it, and a stored result landed in a job directory. The key is
 * computed here from the job directory's files (what the client sent, or what the input
 * cache copied in), the command, its `cwd` and this server's own platform; a client never
 * names a key nor supplies a result, so it cannot make the server answer another client's
 * command with bytes the server did not produce.
 */
import { createHash } from 'node:crypto';
import { createReadStream, constants as fsc } from 'node:fs';
import { lstat, open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { actionKey, type PlatformIdentity } from '../cache/key.js';
import type { CacheEntry } from '../cache/store.js';
import { prepareInside } from '../protocol/index.js';
import { uniqueSuffix } from '../util/unique.js';

/**
 * The key of the command about to run in `dir`: every regular file there (`names`, from the
 * listing taken just before, `/`-separated, relative to `dir`) with its mode and SHA-256 as
 * read now. `undefined` when a file cannot be read or is not a regular file any more (no
 * lookup, nothing stored).
 */
export async function serverResultKey(
  dir: string,
  names: Iterable<string>,
  command: string,
  cwd: string | undefined,
  platform: PlatformIdentity,
): Promise<string | undefined> {
  const inputs: { name: string; mode: number; sha256: string }[] = [];
  try {
    for (const name of names) {
      const path = join(dir, ...name.split('/'));
      const st = await lstat(path);
      if (!st.isFile()) return undefined;
      const hash = createHash('sha256');
      for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
      inputs.push({ name, mode: st.mode & 0o777, sha256: hash.digest('hex') });
    }
    return actionKey({ command, cwd: cwd ?? '', inputs, platform });
  } catch {
    return undefined;
  }
}

/**
 * Writes a stored result's files into the job directory as the job would have left them
 * (parents made, symlinks on the way refused, mode set before any byte): each under a
 * temporary name beside its place, then renamed over it, so an existing file (an input the
 * job would have rewritten) is replaced, never written through.
 */
export async function landResult(dir: string, entry: CacheEntry): Promise<void> {
  for (const file of entry.files) {
    const path = prepareInside(dir, file.name);
    const tmp = join(dirname(path), `.rake-result-${uniqueSuffix()}`);
    const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
    const handle = await open(tmp, flags, 0o600);
    try {
      await handle.chmod(file.mode & 0o777);
      await handle.writeFile(file.bytes);
    } finally {
      await handle.close();
    }
    try {
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}
