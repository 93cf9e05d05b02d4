// The engine: a parsed Rakefile becomes an Observable<RakeEvent>. See docs/client.md.
export { whenSettled } from './cleanup.js';
export type { EmbeddedServer, StartServer } from './embedded.js';
export { type Endpoint, hostKey, isLoopback, parseHostList } from './endpoint.js';
export type {
  ActionRef,
  ChoiceReason,
  CostSeen,
  FailureReason,
  PhaseTimings,
  RakeEvent,
  RakeEventOf,
  RakeEventType,
  RunSummary,
} from './events.js';
export { formatPlan, type Plan, type PlannedStep, planRun } from './plan.js';
export { type CostResult, pollCosts } from './poll.js';
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_COST_TIMEOUT_MS,
  DEFAULT_JOBS,
  DEFAULT_RETRIES,
  type RunOptions,
  run,
} from './run.js';
export { effectiveCost, pickCheapestHost } from './select.js';
export type { JobProgress, JobRequest, Transport } from './transport.js';
