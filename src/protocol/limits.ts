/**
 * Upper bounds on what a peer may make us read or write. A base-mode peer has no way to
 * learn these, so they are generous; they exist so a hostile or broken peer cannot make us
 * allocate, or write, without bound. Both client and server pass them to the reader and
 * the filestream receiver.
 */
export interface ProtocolLimits {
  /** Largest value any header's length field may hold (checked while decoding). */
  readonly maxLength: number;
  /** Largest command payload (`!C` / `!E` with a payload), in bytes. */
  readonly maxCommandBytes: number;
  /** Largest number of files announced by one `!SSIF<count>`. */
  readonly maxFiles: number;
  /** Largest single file in a filestream, in bytes. */
  readonly maxFileSize: number;
  /** Longest file name in a filestream, in UTF-8 bytes. */
  readonly maxNameBytes: number;
}

/** The defaults: generous for builds, small enough that nothing is unbounded. */
export const DEFAULT_LIMITS: ProtocolLimits = {
  maxLength: 2 ** 40,
  maxCommandBytes: 1024 * 1024,
  maxFiles: 100_000,
  maxFileSize: 64 * 1024 ** 3,
  maxNameBytes: 4096,
};

/** Longest decimal text accepted where a number is the payload (size, count, cost, exit). */
export const MAX_DECIMAL_PAYLOAD = 20;

/** Fills in defaults for any limit the caller did not give. */
export function withDefaults(limits?: Partial<ProtocolLimits>): ProtocolLimits {
  return { ...DEFAULT_LIMITS, ...limits };
}
