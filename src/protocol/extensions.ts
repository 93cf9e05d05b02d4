import { createHmac } from 'node:crypto';
import { ProtocolError, showBytes } from './errors.js';
import { EXTENSION_CODE, encodePacket, MAX_ANNEX } from './header.js';
import { DEFAULT_LIMITS, type ProtocolLimits } from './limits.js';

/**
 * The negotiated extensions (docs/protocol.md, "Extensions"). Both ends switch one on only
 * when the other offered it, so a base-mode peer never sees a byte it does not understand.
 * - `stderr`: a successful command's stderr comes back (`!X stderr`) before the reply.
 * - `mode`: filestreams carry each file's permission bits (`!M` → `!S!MF`).
 * - `cache`: before `!R` the client lists content hashes (`!X have`), the server answers
 *   which files it lacks (`!X need`) and takes the others from its cache.
 * - `push`: filestreams are sent unasked: name, size (mode) and bytes of every file right
 *   behind the announcement, with no `!N`, `!Z`, `!M`, `!T` requests and no round trip.
 * - `cwd`: the client says in which subdirectory of the job directory the command runs
 *   (`!X cwd <dir>`), so requirements above the Rakefile's directory (`../include/x.h`)
 *   keep their places relative to it.
 * - `queue`: a job that must wait for a free slot is announced (`!X queued`), and so is the
 *   moment it starts (`!X started`), so the client tells time queued from time running.
 * - `beat` (heartbeat): while a command is queued or runs, the server sends `!X beat <ms>`
 *   every `<ms>`, so the client can tell a silent (frozen, cut off) host from a long job.
 * - `auth`: the server requires a token (challenge-response with HMAC-SHA256).
 * - `results` (the shared action cache, issue 21): a client that sends `!X lookup` right
 *   before a command asks the server to answer it from the results of jobs the server ran
 *   itself; on a hit `!X hit <key>` precedes an ordinary reply and nothing runs
 *   (`!X lookup only`: on a miss the server answers `!X miss` and runs nothing). The key is
 *   the server's own (what it received, its platform): a client names no key and stores
 *   nothing, so it cannot poison the store.
 * - `load` (issue 20): after `!X watch` the connection carries the server's load
 *   (`!X load jobs=… running=… queued=… slots=… beat=…`) whenever it changes, from every
 *   client's jobs, and at the `beat` interval while it does not, so silence means lost.
 * - `reuse` (issue 20): a job ends with its reply; the connection then takes another job
 *   (a fresh job directory, no `cwd` or `lookup` carried over), so a client keeps a pool.
 */
export type Extension =
  | 'stderr'
  | 'mode'
  | 'cache'
  | 'push'
  | 'cwd'
  | 'queue'
  | 'beat'
  | 'auth'
  | 'results'
  | 'load'
  | 'reuse';

/** Every extension this implementation knows, in the order it lists them. */
export const EXTENSIONS: readonly Extension[] = [
  'stderr',
  'mode',
  'cache',
  'push',
  'cwd',
  'queue',
  'beat',
  'auth',
  'results',
  'load',
  'reuse',
];

/** The protocol tag in the offer, the self-description and the hello. */
export const PROTOCOL_TAG = 'rake/1';

/** The annex of our client's cost query: `!E0` + spaces + `rake/1`. */
export const OFFER_ANNEX = PROTOCOL_TAG;

/** What a server says about itself in the annex of its cost reply. */
export interface PeerDescription {
  /** Always `rake/1` for now. */
  readonly protocol: string;
  /** The server's program version (`v=`), when it fit. */
  readonly version?: string;
  /** Extensions the server has switched on; `auth` means it requires a token. */
  readonly extensions: readonly Extension[];
  /** The jobs the server runs at once (`slots=`), when it said. */
  readonly slots?: number;
}

/** Largest `slots=` a description may carry; a larger one is not believed. */
export const MAX_SLOTS = 1_000_000;

/** True when a cost query's annex offers our protocol. */
export function isOffer(annex: string | undefined): boolean {
  return annex !== undefined && annex.split(' ')[0] === PROTOCOL_TAG;
}

/**
 * A server's annex: `rake/1 v=0.1.0 slots=2 ext=stderr,mode,cache,auth`. What does not fit
 * the header is left out, the version first, then the slots (and a version that is not
 * printable without spaces always).
 */
export function describeServer(
  version: string | undefined,
  extensions: readonly Extension[],
  slots?: number,
): string {
  const ext = `ext=${sortExtensions(extensions).join(',')}`;
  const v = version !== undefined && /^[!-~]+$/.test(version) ? `v=${version}` : undefined;
  const n =
    slots !== undefined && Number.isSafeInteger(slots) && slots >= 1 && slots <= MAX_SLOTS
      ? `slots=${slots}`
      : undefined;
  for (const fields of [[v, n], [n]]) {
    const annex = [PROTOCOL_TAG, ...fields.filter((f) => f !== undefined), ext].join(' ');
    if (annex.length <= MAX_ANNEX) return annex;
  }
  return `${PROTOCOL_TAG} ${ext}`; // at most 38 characters: every extension fits
}

/**
 * Reads a cost reply's annex. `undefined` (a base-mode server) when there is none or it is
 * not `rake/1`; unknown keys and extensions are ignored, so later servers can say more.
 */
export function parseServerDescription(annex: string | undefined): PeerDescription | undefined {
  if (annex === undefined) return undefined;
  const [tag, ...fields] = annex.split(' ');
  if (tag !== PROTOCOL_TAG) return undefined;
  let version: string | undefined;
  let slots: number | undefined;
  let extensions: Extension[] = [];
  for (const field of fields) {
    const eq = field.indexOf('=');
    if (eq < 0) continue;
    const key = field.slice(0, eq);
    const value = field.slice(eq + 1);
    if (key === 'v') version = value;
    else if (key === 'ext') extensions = parseExtensionList(value);
    else if (key === 'slots' && /^[1-9][0-9]{0,6}$/.test(value) && Number(value) <= MAX_SLOTS) {
      slots = Number(value);
    }
  }
  return {
    protocol: tag,
    ...(version === undefined ? {} : { version }),
    extensions,
    ...(slots === undefined ? {} : { slots }),
  };
}

/** `stderr,mode,bogus` → `['stderr', 'mode']`: unknown names are ignored. */
export function parseExtensionList(text: string): Extension[] {
  const known = new Set<string>(EXTENSIONS);
  return sortExtensions(text.split(',').filter((e): e is Extension => known.has(e)));
}

function sortExtensions(list: readonly Extension[]): Extension[] {
  return EXTENSIONS.filter((e) => list.includes(e));
}

/** One requirement named by content, in an `!X have` message. */
export interface HaveEntry {
  /** SHA-256 of the content, 64 lowercase hex digits. */
  readonly sha256: string;
  readonly size: number;
  /** Permission bits (applied by the server only when `mode` is negotiated). */
  readonly mode: number;
  /** The wire name the file would be uploaded under; never contains a newline. */
  readonly name: string;
}

/**
 * The messages an `!X<len>` packet carries: a verb, then its arguments (docs/protocol.md).
 * Text is UTF-8; `stderr` carries raw bytes after its first line.
 */
export type ExtensionMessage =
  | {
      readonly verb: 'hello';
      readonly protocol: string;
      readonly extensions: readonly Extension[];
      /** The word `platform?`: the client asks for the server's platform in the `ok`. */
      readonly wantsPlatform?: boolean;
    }
  | {
      readonly verb: 'ok';
      readonly extensions: readonly Extension[];
      /**
       * `platform=os:linux,arch:x64,cc:gcc-12`: what kind of host this is, for the action
       * cache's key; only to a hello that asked (`platform?`). Older peers ignore both words.
       */
      readonly platform?: Readonly<Record<string, string>>;
    }
  | { readonly verb: 'challenge'; readonly nonce: string }
  | { readonly verb: 'auth'; readonly proof: string }
  | { readonly verb: 'have'; readonly entries: readonly HaveEntry[] }
  | { readonly verb: 'need'; readonly names: readonly string[] }
  /** Extension `cwd`: run the command in this relative directory of the job directory. */
  | { readonly verb: 'cwd'; readonly path: string }
  /** Extension `queue`: the job waits for a free slot. */
  | { readonly verb: 'queued' }
  /** Extension `queue`: the job that was queued starts now. */
  | { readonly verb: 'started' }
  | { readonly verb: 'stderr'; readonly bytes: Buffer }
  /** Extension `beat`: the server is alive; the next beat comes within `intervalMs`. */
  | { readonly verb: 'beat'; readonly intervalMs: number }
  /**
   * Extension `results`: answer the next command from the server's results if it can;
   * `only`: and never run it (a miss is answered `!X miss`).
   */
  | { readonly verb: 'lookup'; readonly only?: true }
  /** Extension `results`: the answer to `lookup only` when nothing is stored; nothing ran. */
  | { readonly verb: 'miss' }
  /** Extension `results`: the next reply is a stored result of the key; nothing ran. */
  | { readonly verb: 'hit'; readonly key: string }
  /** Extension `load`: from now on this connection carries the server's load, and no job. */
  | { readonly verb: 'watch' }
  /** Extension `load`: the server's load now (see {@link ServerLoad}). */
  | ({ readonly verb: 'load' } & ServerLoad);

/**
 * A server's load as `!X load` says it (extension `load`): the jobs it holds from every client
 * (`jobs`: uploading, queued or running: what the cost counts, without its offset), of those
 * the ones `running` in a slot and the ones `queued` for one, its `slots` (`--max-jobs`), and
 * `beatMs`: the longest the server stays silent on this connection while nothing changes, and
 * `offset`: its `--cost-offset` (sent only when not 0; 0 when absent), which a client adds to
 * the jobs when it ranks hosts, as a cost answer includes it.
 */
export interface ServerLoad {
  readonly jobs: number;
  readonly running: number;
  readonly queued: number;
  readonly slots: number;
  readonly beatMs: number;
  readonly offset?: number;
}

/**
 * A server sends its first `beat` at most this long after it has read the command (then one
 * every interval), and a client allows 3 times this for it. A job shorter than that gets no
 * beat at all: its reply is the sign of life.
 */
export const FIRST_BEAT_WITHIN_MS = 5000;

/** Longest interval a `beat` may announce (an hour): a larger one is malformed. */
export const MAX_BEAT_INTERVAL_MS = 3_600_000;

/** The verbs, for `expected` strings. */
export type ExtensionVerb = ExtensionMessage['verb'];

const HEX64 = /^[0-9a-f]{64}$/;
const HEX32 = /^[0-9a-f]{32}$/;

/** The payload of an `!X` message (without its header). */
export function encodeExtensionPayload(msg: ExtensionMessage): Buffer {
  switch (msg.verb) {
    case 'hello':
      return Buffer.from(
        `hello ${msg.protocol} ext=${sortExtensions(msg.extensions).join(',')}${msg.wantsPlatform ? ' platform?' : ''}`,
      );
    case 'ok': {
      const platform =
        msg.platform === undefined
          ? ''
          : ` platform=${Object.entries(msg.platform)
              .filter(([k, v]) => PLATFORM_WORD.test(k) && PLATFORM_WORD.test(v))
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
              .map(([k, v]) => `${k}:${v}`)
              .join(',')}`;
      return Buffer.from(`ok ext=${sortExtensions(msg.extensions).join(',')}${platform}`);
    }
    case 'challenge':
      return Buffer.from(`challenge ${msg.nonce}`);
    case 'auth':
      return Buffer.from(`auth ${msg.proof}`);
    case 'have': {
      const lines = msg.entries.map((e) => {
        if (e.name.includes('\n') || e.name === '') {
          throw new RangeError(`a have entry cannot name ${JSON.stringify(e.name)}`);
        }
        return `${e.sha256} ${e.size} ${(e.mode & 0o777).toString(8).padStart(3, '0')} ${e.name}`;
      });
      return Buffer.from(['have', ...lines].join('\n'));
    }
    case 'need':
      return Buffer.from(['need', ...msg.names].join('\n'));
    case 'queued':
    case 'started':
      return Buffer.from(msg.verb);
    case 'cwd':
      if (msg.path.includes('\n') || msg.path === '') {
        throw new RangeError(`a cwd message cannot name ${JSON.stringify(msg.path)}`);
      }
      return Buffer.from(`cwd ${msg.path}`);
    case 'stderr':
      return Buffer.concat([Buffer.from('stderr\n'), msg.bytes]);
    case 'beat':
      return Buffer.from(`beat ${msg.intervalMs}`);
    case 'lookup':
      return Buffer.from(msg.only === true ? 'lookup only' : 'lookup');
    case 'miss':
      return Buffer.from('miss');
    case 'hit':
      if (!HEX64.test(msg.key)) throw new RangeError(`${msg.key} is not an action key`);
      return Buffer.from(`hit ${msg.key}`);
    case 'watch':
      return Buffer.from('watch');
    case 'load':
      return Buffer.from(
        `load jobs=${msg.jobs} running=${msg.running} queued=${msg.queued} slots=${msg.slots} beat=${msg.beatMs}${msg.offset ? ` offset=${msg.offset}` : ''}`,
      );
  }
}

/** An `!X<len>` packet: header and payload. */
export function encodeExtension(msg: ExtensionMessage): Buffer {
  return encodePacket({ code: EXTENSION_CODE }, encodeExtensionPayload(msg));
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses an `!X` payload. With `expected`, any other verb is `bad-extension`; so is a
 * malformed message. `limits` bound a `have` list (files, sizes, names).
 */
export function parseExtension(
  payload: Buffer,
  expected?: readonly ExtensionVerb[],
  limits: Partial<ProtocolLimits> = {},
): ExtensionMessage {
  const nl = payload.indexOf(0x0a);
  const firstEnd = nl < 0 ? payload.length : nl;
  const first = payload.toString('latin1', 0, firstEnd);
  const words = first.split(' ');
  const verb = words[0] as ExtensionVerb;
  // An answer to a challenge may hold a secret (a proof, or a token pasted by mistake):
  // its bytes are never shown, so never echoed to the peer nor logged.
  const secret = verb === 'auth' || expected?.includes('auth') === true;
  const bad = (what: string) =>
    new ProtocolError(
      'bad-extension',
      expected ? `an !X ${expected.join(' or ')} message` : 'an !X message',
      secret ? `${what} (${payload.length} bytes, not shown)` : `${what}: ${showBytes(payload)}`,
    );
  if (expected !== undefined && !expected.includes(verb))
    throw bad(secret ? 'another message' : `a ${JSON.stringify(verb)} message`);
  switch (verb) {
    case 'hello': {
      const protocol = words[1];
      if (nl >= 0 || protocol === undefined || !/^rake\/[!-~]+$/.test(protocol)) {
        throw bad('a malformed hello');
      }
      const wantsPlatform = words.slice(2).includes('platform?');
      return {
        verb,
        protocol,
        extensions: extensionsOf(words.slice(2)),
        ...(wantsPlatform ? { wantsPlatform } : {}),
      };
    }
    case 'ok': {
      if (nl >= 0) throw bad('a malformed ok');
      const platform = platformOf(words.slice(1));
      return {
        verb,
        extensions: extensionsOf(words.slice(1)),
        ...(platform === undefined ? {} : { platform }),
      };
    }
    case 'challenge': {
      const nonce = words[1] ?? '';
      if (nl >= 0 || words.length !== 2 || !HEX32.test(nonce)) throw bad('a malformed challenge');
      return { verb, nonce };
    }
    case 'auth': {
      const proof = words[1] ?? '';
      if (nl >= 0 || words.length !== 2 || !HEX64.test(proof)) throw bad('a malformed auth');
      return { verb, proof };
    }
    case 'have':
      if (first !== 'have') throw bad('a malformed have');
      return { verb, entries: parseHave(payload, nl, limits, bad) };
    case 'need': {
      if (first !== 'need') throw bad('a malformed need');
      const names = nl < 0 ? [] : decodeText(payload.subarray(nl + 1), bad).split('\n');
      if (names.some((n) => n === '')) throw bad('an empty name');
      return { verb, names };
    }
    case 'queued':
    case 'started':
      if (first !== verb || nl >= 0) throw bad(`a malformed ${verb}`);
      return { verb };
    case 'cwd': {
      // The directory is the rest of the line (it may hold spaces); its segments are the
      // receiver's to check (`wireNameSegments`).
      const path = nl >= 0 || first.length <= 4 ? '' : decodeText(payload.subarray(4), bad);
      if (path === '' || first[3] !== ' ') throw bad('a malformed cwd');
      return { verb, path };
    }
    case 'stderr':
      if (first !== 'stderr' || nl < 0) throw bad('a malformed stderr');
      return { verb, bytes: payload.subarray(nl + 1) };
    case 'beat': {
      const ms = /^beat ([1-9]\d{0,6})$/.exec(first)?.[1];
      if (nl >= 0 || ms === undefined || Number(ms) > MAX_BEAT_INTERVAL_MS) {
        throw bad('a malformed beat');
      }
      return { verb, intervalMs: Number(ms) };
    }
    case 'lookup':
      if ((first !== 'lookup' && first !== 'lookup only') || nl >= 0) {
        throw bad('a malformed lookup');
      }
      return first === 'lookup only' ? { verb, only: true } : { verb };
    case 'miss':
      if (first !== 'miss' || nl >= 0) throw bad('a malformed miss');
      return { verb };
    case 'hit': {
      const key = words[1] ?? '';
      if (nl >= 0 || words.length !== 2 || !HEX64.test(key)) throw bad('a malformed hit');
      return { verb, key };
    }
    case 'watch':
      if (first !== 'watch' || nl >= 0) throw bad('a malformed watch');
      return { verb };
    case 'load': {
      if (nl >= 0) throw bad('a malformed load');
      const load = loadOf(words, 1);
      if (load === undefined) throw bad('a malformed load');
      return { verb, ...load };
    }
    default:
      throw bad('an unknown verb');
  }
}

/** The keys of `!X load`, in the order they are sent (`offset` only when not 0). */
const LOAD_KEYS = ['jobs', 'running', 'queued', 'slots', 'beat', 'offset'] as const;

/**
 * `jobs=3 running=2 queued=1 slots=2 beat=5000` → its load; `undefined` when a key is
 * missing, twice or not a decimal, or `slots`/`beat` is 0 (unknown keys are ignored: a later
 * server may say more). The words from `from` on are read: a load stream says one per job
 * that starts or ends.
 */
function loadOf(words: readonly string[], from: number): ServerLoad | undefined {
  /** Each key's value, by its place in LOAD_KEYS. */
  const seen: (number | undefined)[] = [];
  for (let i = from; i < words.length; i++) {
    const word = words[i] as string;
    const eq = word.indexOf('=');
    const k = eq < 0 ? -1 : (LOAD_KEYS as readonly string[]).indexOf(word.slice(0, eq));
    if (k < 0) continue;
    const value = word.slice(eq + 1);
    if (seen[k] !== undefined || !/^(0|[1-9]\d{0,8})$/.test(value)) return undefined;
    seen[k] = Number(value);
  }
  const jobs = seen[0];
  const running = seen[1];
  const queued = seen[2];
  const slots = seen[3];
  const beat = seen[4];
  const offset = seen[5];
  if (
    jobs === undefined ||
    running === undefined ||
    queued === undefined ||
    slots === undefined ||
    beat === undefined ||
    slots === 0 ||
    beat === 0 ||
    beat > MAX_BEAT_INTERVAL_MS
  ) {
    return undefined;
  }
  return { jobs, running, queued, slots, beatMs: beat, ...(offset ? { offset } : {}) };
}

/** A platform key or value: letters, digits and `._+-` (no separator of the `ok` word). */
export const PLATFORM_WORD = /^[A-Za-z0-9._+-]{1,64}$/;

/** `platform=os:linux,arch:x64` → its pairs; `undefined` when absent or malformed. */
function platformOf(words: readonly string[]): Record<string, string> | undefined {
  const field = words.find((w) => w.startsWith('platform='));
  if (field === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const pair of field.slice('platform='.length).split(',')) {
    const i = pair.indexOf(':');
    const k = pair.slice(0, i);
    const v = pair.slice(i + 1);
    if (i < 0 || !PLATFORM_WORD.test(k) || !PLATFORM_WORD.test(v) || k in out) return undefined;
    out[k] = v;
  }
  return out;
}

function extensionsOf(words: readonly string[]): Extension[] {
  const field = words.find((w) => w.startsWith('ext='));
  return field === undefined ? [] : parseExtensionList(field.slice(4));
}

function decodeText(bytes: Uint8Array, bad: (what: string) => ProtocolError): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw bad('names that are not UTF-8');
  }
}

function parseHave(
  payload: Buffer,
  nl: number,
  limits: Partial<ProtocolLimits>,
  bad: (what: string) => ProtocolError,
): HaveEntry[] {
  if (nl < 0) return [];
  const maxFiles = limits.maxFiles ?? DEFAULT_LIMITS.maxFiles;
  const maxFileSize = limits.maxFileSize ?? DEFAULT_LIMITS.maxFileSize;
  const maxNameBytes = limits.maxNameBytes ?? DEFAULT_LIMITS.maxNameBytes;
  const lines = decodeText(payload.subarray(nl + 1), bad).split('\n');
  if (lines.length > maxFiles) {
    throw new ProtocolError(
      'limit-exceeded',
      `at most ${maxFiles} files in a have list`,
      `${lines.length} files`,
    );
  }
  const names = new Set<string>();
  return lines.map((line) => {
    const m = /^([0-9a-f]{64}) (\d{1,20}) ([0-7]{1,4}) (.+)$/.exec(line);
    if (!m) throw bad(`a malformed have line ${JSON.stringify(line.slice(0, 120))}`);
    const size = Number(m[2]);
    const name = m[4] as string;
    if (!(size <= maxFileSize)) {
      throw new ProtocolError(
        'limit-exceeded',
        `a file of at most ${maxFileSize} bytes`,
        `${m[2]} bytes`,
      );
    }
    if (Buffer.byteLength(name) > maxNameBytes) {
      throw new ProtocolError(
        'limit-exceeded',
        `a name of at most ${maxNameBytes} bytes`,
        `${Buffer.byteLength(name)} bytes`,
      );
    }
    if (names.has(name)) throw bad(`a name listed twice: ${JSON.stringify(name)}`);
    names.add(name);
    return { sha256: m[1] as string, size, mode: Number.parseInt(m[3] as string, 8), name };
  });
}

/**
 * The proof a client sends for a challenge: HMAC-SHA256 keyed with the token over
 * `rake/1 auth <nonce hex>`, as 64 hex digits. The token itself never crosses the wire.
 */
export function authProof(token: Uint8Array, nonce: string): string {
  return createHmac('sha256', token).update(`${PROTOCOL_TAG} auth ${nonce}`).digest('hex');
}
