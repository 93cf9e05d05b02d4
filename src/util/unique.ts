/**
 * Random per process, so names from two processes (or two runs) never meet. From
 * `Math.random` (V8 seeds it per process from the system's entropy), not `node:crypto`: the
 * names are created exclusively anyway, and loading `node:crypto` (some twenty built-in
 * modules, about 6 ms of CPU) for four bytes fell on a client's first output file, inside its
 * first remote action (docs/benchmarks.md, the rtt row).
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
  prefix ??= Math.floor(Math.random() * 0x1_0000_0000)
    .toString(16)
    .padStart(8, '0');
  counter += 1;
  return `${prefix}${counter.toString(36)}`;
}
