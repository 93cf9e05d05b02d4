import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * Removes the tree `dir` at any depth. Node's `fs.rm` walks by joining paths, so it fails
 * (ENAMETOOLONG, or a stack overflow) on a tree deeper than PATH_MAX, which any job can build
 * with `mkdir d; cd d` in a loop; such a directory then survived its job, the server's
 * shutdown and the next server's sweep (in the default `/dev/shm` workdir, RAM lost until
 * reboot: issue 17, defect 4). GNU `chmod -R` and `rm -rf` walk with descriptors (fts,
 * `openat`/`unlinkat`), so neither the depth nor a read-only directory stops them; neither
 * follows symlinks. Only the fallback: a fork and two execs, where `fs.rm` failed.
 * Rejects, saying what is left, when `dir` still exists afterwards.
 */
export async function removeDeep(dir: string): Promise<void> {
  await run('chmod', ['-R', 'u+rwx', '--', dir]).catch(() => undefined);
  const failure = await run('rm', ['-rf', '--', dir]).then(
    () => undefined,
    (err: Error) => err.message,
  );
  if (existsSync(dir)) {
    throw new Error(`cannot remove ${dir} even with rm -rf: ${failure ?? 'it is still there'}`);
  }
}

function run(program: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (err) reject(new Error(stderr.trim().split('\n').slice(-1)[0] || err.message));
      else resolve();
    });
  });
}
