// rakeserver: see docs/server.md.

export { type CacheLease, type CacheStats, InputCache, type InsertResult } from './cache.js';
export {
  REFUSAL_EXIT_CODE,
  type ServerLimits,
  SPAWN_FAILURE_EXIT_CODE,
  TIMEOUT_EXIT_CODE,
} from './connection.js';
export type { SpawnerChoice } from './launcher.js';
export {
  DEFAULT_CACHE_SIZE,
  DEFAULT_PORT,
  DEFAULT_RESULTS_SIZE,
  DEFAULT_SERVER_LIMITS,
  type ServeOptions,
  type ServerHandle,
  serve,
} from './server.js';
