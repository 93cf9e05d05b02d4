import type { BigIntStats, Dirent } from 'node:fs';
import { chmod, lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** Identity of a regular file's content at one moment: any change means "modified". */
interface FileStamp {
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  readonly ino: bigint;
}

/**
 * The regular files under a job directory before its command runs, by relative `/` name.
 * Output files are those that are new or whose stamp changed (PROTOCOL.md, "we do").
 */
export type TreeSnapshot = ReadonlyMap<string, FileStamp>;

/** Result of listing a tree: the files, or the fact that there were too many. */
export type TreeListing =
  | { readonly ok: true; readonly files: Map<string, FileStamp> }
  | { readonly ok: false; readonly reason: 'too-many-files'; readonly limit: number };

/**
 * Lists the regular files under `root`, recursively, by lstat: symlinks are neither
 * followed nor listed, so a job cannot make the server return `/etc/passwd`. Unreadable
 * directories are skipped. Stops at `limit` files.
 */
export async function listRegularFiles(root: string, limit: number): Promise<TreeListing> {
  const files = new Map<string, FileStamp>();
  const pending: string[] = [''];
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    let entries: Dirent[];
    try {
      entries = await readdir(join(root, rel), { withFileTypes: true });
    } catch {
      continue;
    }
    for (const entry of entries) {
      const name = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) pending.push(name);
      else if (entry.isFile()) {
        let st: BigIntStats;
        try {
          st = await lstat(join(root, name), { bigint: true });
        } catch {
          continue;
        }
        if (!st.isFile()) continue;
        if (files.size >= limit) return { ok: false, reason: 'too-many-files', limit };
        files.set(name, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino });
      }
    }
  }
  return { ok: true, files };
}

/** Names (sorted) of files in `after` that are absent from `before` or changed since. */
export function changedFiles(before: TreeSnapshot, after: TreeSnapshot): string[] {
  const out: string[] = [];
  for (const [name, stamp] of after) {
    const old = before.get(name);
    if (
      !old ||
      old.size !== stamp.size ||
      old.mtimeNs !== stamp.mtimeNs ||
      old.ctimeNs !== stamp.ctimeNs ||
      old.ino !== stamp.ino
    ) {
      out.push(name);
    }
  }
  return out.sort();
}

/**
 * Removes a job directory, even one whose command made subdirectories read-only (it makes
 * every directory writable again and retries once).
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 2 });
  } catch {
    await makeWritable(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 2 });
  }
}

async function makeWritable(dir: string): Promise<void> {
  const pending = [dir];
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    await chmod(d, 0o700).catch(() => {});
    const entries = await readdir(d, { withFileTypes: true }).catch(() => [] as Dirent[]);
    for (const e of entries) if (e.isDirectory()) pending.push(join(d, e.name));
  }
}
