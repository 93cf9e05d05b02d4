/**
 * The typed model a Rakefile parses to. This is the contract between the language
 * (grammar/) and everything that runs a build (src/client, src/cli). `rake-ts check --json`
 * prints exactly this shape, so changing it is a breaking change: see docs/rakefile.md.
 */

/** Where a node came from, so every diagnostic and every event can point at the source. */
export interface SourcePosition {
  /** The path the Rakefile was read from, as given (or `<stdin>` / a caller-chosen label). */
  readonly file: string;
  /** 1-based line number. */
  readonly line: number;
  /** 1-based column, counted in characters (a tab is one column). */
  readonly column: number;
}

/** One server named in `HOSTS`; its port is the host's own `host:port` or the file's `PORT`. */
export interface HostSpec {
  /** Host name or address as written, without brackets for IPv6 (`::1`, not `[::1]`). */
  readonly host: string;
  readonly port: number;
  /** Written `rakes://host:port`: the client talks TLS to it (base-protocol tools cannot). */
  readonly tls?: true;
  readonly position: SourcePosition;
}

/** A file an action needs, as written after `requires`, relative to the Rakefile's folder. */
export interface Requirement {
  readonly path: string;
  readonly position: SourcePosition;
}

/** One command line in an actionset. */
export interface Action {
  /** The shell command, with any `remote-` prefix removed and trailing blanks trimmed. */
  readonly command: string;
  /** True when the line began with `remote-`: it runs on the cheapest host. */
  readonly remote: boolean;
  readonly requires: readonly Requirement[];
  readonly position: SourcePosition;
  /**
   * True when the action's line ends with the comment `# rake-ts: no-cache` (see
   * {@link NO_CACHE_MARK}): `--cache` never answers it from the cache nor stores its result,
   * for commands whose effect is not their outputs (`date > stamp`, a deploy). A comment, so
   * base-protocol tools read the Rakefile unchanged. Absent otherwise.
   */
  readonly noCache?: true;
}

/** The comment that exempts an action from the action cache, on the action's own line. */
export const NO_CACHE_MARK = '# rake-ts: no-cache';

/**
 * True when `comment` (from its `#` to the end of the line) is the no-cache mark: `#`, any
 * blanks, `rake-ts:`, any blanks, `no-cache`, then the end or a blank (text may follow).
 */
export function isNoCacheComment(comment: string): boolean {
  return /^#[ \t]*rake-ts:[ \t]*no-cache(?:[ \t]|$)/.test(comment);
}

/** A named group of actions that run in parallel; actionsets run one after another. */
export interface Actionset {
  readonly name: string;
  readonly actions: readonly Action[];
  readonly position: SourcePosition;
}

/** A whole, valid Rakefile. Parsing yields either this or diagnostics, never half of one. */
export interface Rakefile {
  readonly file: string;
  /** Default server port: the `PORT` line, or 6238. */
  readonly port: number;
  readonly hosts: readonly HostSpec[];
  readonly actionsets: readonly Actionset[];
}

/** The port used when a Rakefile has no `PORT` line. */
export const DEFAULT_PORT = 6238;
