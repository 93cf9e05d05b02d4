/**
 * The rake-ts package API. The Rakefile language lives in grammar/ (docs/rakefile.md);
 * other parts of the package add their exports here.
 */

export type {
  Action,
  Actionset,
  ActionsetStream,
  Diagnostic,
  DiagnosticCode,
  HostSpec,
  ParseOptions,
  ParseResult,
  Rakefile,
  ReadResult,
  Requirement,
  SourcePosition,
} from '../grammar/index.js';
export {
  actionsetStreams,
  DEFAULT_PORT,
  diagnosticsToJson,
  formatDiagnostic,
  formatDiagnostics,
  JSON_SCHEMA_VERSION,
  parseRakefile,
  printRakefile,
  RakefileError,
  rakefileToJson,
  readActionsets,
  readRakefile,
} from '../grammar/index.js';

// Running a Rakefile: run() turns it into an Observable<RakeEvent> (docs/client.md).
export {
  type ActionRef,
  type ChoiceReason,
  type CostSeen,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_COST_TIMEOUT_MS,
  DEFAULT_JOBS,
  DEFAULT_RETRIES,
  type Endpoint,
  type FailureReason,
  formatPlan,
  type PhaseTimings,
  type Plan,
  planRun,
  type RakeEvent,
  type RakeEventOf,
  type RakeEventType,
  type RunOptions,
  type RunSummary,
  run,
  whenSettled,
} from './client/index.js';

// Watching a run: log records, progress, a Chrome trace, an HTML report (docs/observability.md).
export {
  type ActionSpan,
  buildTimeline,
  type ChromeTrace,
  chromeTrace,
  eventRecord,
  formatSummaryLine,
  hostStats,
  logEvent,
  logEvents,
  ProgressDisplay,
  type ProgressOptions,
  renderReport,
  showProgress,
  type Timeline,
} from './observe/index.js';
