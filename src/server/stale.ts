import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { removeTree } from './outputs.js';

/**
 * The tag every directory a server makes carries in its name: `p<pid>`. A server killed
 * with SIGKILL cannot remove its directories (its jobs die with its spawn helper, which
 * sees its stdin close); the next server to start in the same place finds them by this tag
 * and removes those whose process is gone.
 */
export const OWNER_TAG = `p${process.pid}`;

/**
 * Names this module may remove: job and spare directories, stdout spools, workdirs, spawn
 * sockets' dirs.
 */
const OWNED = /^(?:job-\d+-|spare-|spool-|rakeserver-|rakeserver-spawn-)p(\d+)-/;

/**
 * Removes, in `dir`, the directories that dead servers left behind: names tagged with a
 * pid (see {@link OWNER_TAG}) that no longer runs, owned by this user. Never throws;
 * resolves the number removed. (A server in another pid namespace that shares this
 * directory would look dead: give each its own `--workdir`.)
 */
export async function removeStale(dir: string, log: Logger): Promise<number> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  const uid = process.getuid?.();
  const stale: string[] = [];
  for (const name of names) {
    const pid = Number(OWNED.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || alive(pid)) continue;
    const path = join(dir, name);
    try {
      const st = statSync(path);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
    } catch {
      continue;
    }
    stale.push(path);
  }
  let removed = 0;
  for (const path of stale) {
    try {
      await removeTree(path);
      removed++;
    } catch (err) {
      log.warn({ dir: path, err }, 'cannot remove a directory a dead server left');
    }
  }
  if (removed > 0) log.info({ dir, removed }, 'removed directories dead servers left');
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
