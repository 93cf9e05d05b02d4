// rakeserver: see docs/server.md.

export { type CacheLease, type CacheStats, InputCache, type InsertResult } from './cache.js';
export type { ServerLimits } from './context.js';
export type { SpawnerChoice } from './launcher.js';
export { REFUSAL_EXIT_CODE, SPAWN_FAILURE_EXIT_CODE, TIMEOUT_EXIT_CODE } from './reply.js';
export {
  DEFAULT_CACHE_SIZE,
  DEFAULT_PORT,
  DEFAULT_RESULTS_SIZE,
  DEFAULT_SERVER_LIMITS,
  type ServeOptions,
  type ServerHandle,
  serve,
} from './server.js';
