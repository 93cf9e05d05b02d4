/** The Rakefile language: parse, check, print. See docs/rakefile.md. */

export type { ParseResult } from './analyze.js';
export type { Diagnostic, DiagnosticCode } from './diagnostics.js';
export { formatDiagnostic, formatDiagnostics } from './diagnostics.js';
export { diagnosticsToJson, JSON_SCHEMA_VERSION, rakefileToJson } from './json.js';
export type {
  Action,
  Actionset,
  HostSpec,
  Rakefile,
  Requirement,
  SourcePosition,
} from './model.js';
export { DEFAULT_PORT } from './model.js';
export type { ParseOptions, ReadResult } from './parse.js';
export { parseRakefile, readRakefile } from './parse.js';
export { printRakefile } from './print.js';
export type { ActionsetStream } from './stream.js';
export { actionsetStreams, RakefileError, readActionsets } from './stream.js';
