/**
 * The JSON form of a model, as `rake-ts check --json` prints it. The schema is documented in
 * docs/rakefile.md ("JSON output"); `schemaVersion` changes whenever a field changes meaning
 * or goes away (new fields may be added without a bump).
 */
import type { Diagnostic } from './diagnostics.js';
import type { Rakefile, SourcePosition } from './model.js';

/** Bumped on every incompatible change to the JSON below. */
export const JSON_SCHEMA_VERSION = 1;

/** The object `check --json` prints for a valid Rakefile; keys in this order. */
export function rakefileToJson(rakefile: Rakefile): object {
  return {
    schemaVersion: JSON_SCHEMA_VERSION,
    ok: true,
    file: rakefile.file,
    port: rakefile.port,
    hosts: rakefile.hosts.map((h) => ({
      host: h.host,
      port: h.port,
      ...(h.tls ? { tls: true } : {}),
      position: positionToJson(h.position),
    })),
    actionsets: rakefile.actionsets.map((s) => ({
      name: s.name,
      position: positionToJson(s.position),
      actions: s.actions.map((a) => ({
        command: a.command,
        remote: a.remote,
        ...(a.noCache ? { noCache: true } : {}),
        requires: a.requires.map((r) => ({ path: r.path, position: positionToJson(r.position) })),
        position: positionToJson(a.position),
      })),
    })),
  };
}

/** The object `check --json` prints for an invalid Rakefile. */
export function diagnosticsToJson(file: string, diagnostics: readonly Diagnostic[]): object {
  return {
    schemaVersion: JSON_SCHEMA_VERSION,
    ok: false,
    file,
    diagnostics: diagnostics.map((d) => ({
      code: d.code,
      message: d.message,
      hint: d.hint,
      position: positionToJson(d.position),
      length: d.length ?? 1,
    })),
  };
}

function positionToJson(p: SourcePosition): { file: string; line: number; column: number } {
  return { file: p.file, line: p.line, column: p.column };
}
