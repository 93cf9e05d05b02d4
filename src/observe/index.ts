// Consumers of a run's events: log records, live progress, a Chrome trace, an HTML report.
// All of them read the RakeEvent stream and nothing else. See docs/observability.md.

export { describeSilentHost, formatHostNotes } from './host-notes.js';
export {
  type EventRecord,
  eventRecord,
  logEvent,
  logEvents,
  type RecordLevel,
  summaryFields,
} from './log-events.js';
export {
  ETA_AFTER,
  eventsShownBy,
  formatFailure,
  formatRecap,
  ProgressDisplay,
  type ProgressMode,
  type ProgressOptions,
  progressMode,
  showProgress,
} from './progress.js';
export { type ReportOptions, renderReport } from './report.js';
export {
  formatBytes,
  formatSummaryLine,
  type HostStats,
  hostStats,
  type RunTotals,
  runTotals,
} from './summary.js';
export {
  type ActionOutcome,
  type ActionSpan,
  type ActionsetSpan,
  buildTimeline,
  PHASES,
  type PhaseName,
  type PhaseSpan,
  type Timeline,
  TimelineBuilder,
} from './timeline.js';
export { type ChromeTrace, chromeTrace, type TraceEvent } from './trace.js';
