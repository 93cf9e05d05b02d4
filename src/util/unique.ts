import { randomBytes } from 'node:crypto';

/**
 * Random per process, so names from two processes (or two runs) never meet. Drawn at the
 * first name, not as the module loads: a client that makes no name then never loads
 * `node:crypto` (scripts/bundle.mjs, `LAZY_BUILTINS`).
 */
let prefix: string | undefined;
let counter = 0;

/**
 * A name suffix unique within this process and, by its random prefix, across processes:
 * for temporary files and job directories, which are still created exclusively (`O_EXCL`,
 * `mkdir`), so uniqueness is about never colliding, not about secrecy. One `randomBytes` per
 * name used to cost about 0.1 ms of server CPU each here, three times per job.
 */
export function uniqueSuffix(): string {
  prefix ??= randomBytes(4).toString('hex');
  counter += 1;
  return `${prefix}${counter.toString(36)}`;
}
