import { randomBytes } from 'node:crypto';

/** Random per process, so names from two processes (or two runs) never meet. */
const PREFIX = randomBytes(4).toString('hex');
let counter = 0;

/**
 * A name suffix unique within this process and, by its random prefix, across processes:
 * for temporary files and job directories, which are still created exclusively (`O_EXCL`,
 * `mkdir`), so uniqueness is about never colliding, not about secrecy. One `randomBytes` per
 * name used to cost about 0.1 ms of server CPU each here, three times per job.
 */
export function uniqueSuffix(): string {
  counter += 1;
  return `${PREFIX}${counter.toString(36)}`;
}
