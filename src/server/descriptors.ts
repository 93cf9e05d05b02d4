import { readFileSync } from 'node:fs';

/**
 * What a server assumes when it cannot read its descriptor limit (no `/proc`): the usual
 * soft `ulimit -n` of Linux and macOS shells.
 */
export const FALLBACK_DESCRIPTOR_LIMIT = 1024;

/** Descriptors kept back from connections: the listener, logs, the spawn helper, the cache. */
const RESERVED_DESCRIPTORS = 64;

/** Descriptors a running job may hold at once: its three pipes, an output file, a spare. */
const DESCRIPTORS_PER_JOB = 8;

/**
 * This process's open-file limit (`ulimit -n`; Node raises the soft limit to the hard one at
 * start), from `/proc/self/limits`, and where the number came from.
 */
export function descriptorLimit(limitsFile = '/proc/self/limits'): {
  readonly limit: number;
  readonly source: string;
} {
  try {
    const text = readFileSync(limitsFile, 'utf8');
    const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
    if (m?.[1] !== undefined && m[1] !== 'unlimited') {
      return { limit: Number(m[1]), source: limitsFile };
    }
  } catch {
    // No /proc (macOS): the usual default below.
  }
  return { limit: FALLBACK_DESCRIPTOR_LIMIT, source: 'fallback' };
}

/**
 * The default `--max-connections`: what the descriptor limit leaves after a reserve and
 * the jobs' own descriptors, halved (a connection holds its socket, and a file while it
 * streams one), and never under 16. 20 000 descriptors and 2 job slots: 9 960; 256: 88.
 */
export function defaultMaxConnections(descriptors: number, maxJobs: number): number {
  const spare = descriptors - RESERVED_DESCRIPTORS - DESCRIPTORS_PER_JOB * maxJobs;
  return Math.max(16, Math.floor(spare / 2));
}
