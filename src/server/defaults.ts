// The server's defaults that a program needs before it starts a server (its --help, its
// checks): kept apart from server.ts so that loading them does not load the whole server.

/** The port the reference rakeserver listens on: one constant with the Rakefile's default PORT. */
export { DEFAULT_PORT } from '../../grammar/model.js';

/** Default bound of the input cache (`--cache-size`). */
export const DEFAULT_CACHE_SIZE = 512 * 1024 * 1024;

/** Default bound of the shared action cache's results (`--results-size`, extension `results`). */
export const DEFAULT_RESULTS_SIZE = 256 * 1024 * 1024;

export { isLoopback } from '../util/loopback.js';
