// rakeserver: see docs/server.md.
export {
  REFUSAL_EXIT_CODE,
  type ServerLimits,
  SPAWN_FAILURE_EXIT_CODE,
  TIMEOUT_EXIT_CODE,
} from './connection.js';
export {
  DEFAULT_PORT,
  DEFAULT_SERVER_LIMITS,
  type ServeOptions,
  type ServerHandle,
  serve,
} from './server.js';
