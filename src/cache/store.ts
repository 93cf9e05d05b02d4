/**
 * The local action cache (issue 21): results of successful remote actions, one file per key
 * under the user's cache directory. Several clients may use one directory at once, so an
 * entry is written under a temporary name and renamed into place (a reader sees the whole
 * old entry, the whole new one, or none); a file damaged anyway (a full disk, a crash of the
 * machine before the data reached it, a hand edit) is found on read by its hashes, taken as
 * a miss, removed and logged. The size is bounded: past `maxBytes` the least recently used
 * entries go (a hit refreshes an entry's modification time).
 *
 * An entry file: one line of JSON (the header: format, key, and size, mode and SHA-256 of
 * the stdout, of the stderr and of each output file), then the stdout's bytes, the stderr's
 * and each file's, in order. (Format 1, still read, had no stderr.)
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The header's `format`: bump it when the entry layout changes (older files are misses). */
export const ENTRY_FORMAT = 'rake-ts-cache-entry/2';
/** The format before the stderr was stored: read as an entry with an empty stderr. */
const ENTRY_FORMAT_1 = 'rake-ts-cache-entry/1';

/** Default bound of the local cache: 1 GiB. */
export const DEFAULT_LOCAL_CACHE_BYTES = 1024 * 1024 * 1024;

/** An output file of a cached action: `name` relative to the Rakefile's directory, `/`-separated. */
export interface CachedFile {
  readonly name: string;
  /** Permission bits (low 9 kept). */
  readonly mode: number;
  readonly bytes: Buffer;
}

/** What a hit restores: the action's stdout, its stderr (warnings) and its output files. */
export interface CacheEntry {
  readonly stdout: Buffer;
  /** What the successful command wrote to stderr (compiler warnings); absent = none. */
  readonly stderr?: Buffer;
  readonly files: readonly CachedFile[];
}

interface Part {
  readonly size: number;
  readonly sha256: string;
}

interface Header {
  readonly format: string;
  readonly key: string;
  readonly stdout: Part;
  /** Absent in format 1. */
  readonly stderr?: Part;
  readonly files: readonly (Part & { readonly name: string; readonly mode: number })[];
}

/** Where the cache lives by default: `$XDG_CACHE_HOME/rake-ts`, else `~/.cache/rake-ts`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  // The XDG spec: a relative path is invalid and must be ignored.
  const base = xdg?.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'rake-ts');
}

const KEY = /^[0-9a-f]{64}$/;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Something the cache wants said (a corrupt entry removed, an entry that could not be written). */
export type CacheLog = (message: string) => void;

/** The local cache in one directory; every method is synchronous and never throws on I/O. */
export class LocalCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #log: CacheLog;
  /**
   * Bytes of entries, as far as this client knows: the tally file (`entries/size`) as read at
   * its first write, plus its own writes since, so a run that stores does not stat every
   * entry of a large cache. Counted by a scan when the file is missing or unreadable, and
   * again at each eviction.
   */
  #total: number | undefined;
  /** Bytes this client added to (or removed from) the cache since it last wrote the tally. */
  #pending = 0;
  /** Directories this client has made (or found) already. */
  readonly #made = new Set<string>();

  constructor(dir: string, maxBytes: number = DEFAULT_LOCAL_CACHE_BYTES, log: CacheLog = () => {}) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.#log = log;
  }

  #path(key: string): string {
    return join(this.dir, 'entries', key.slice(0, 2), key);
  }

  /** The entry for `key`, verified, or `undefined` (a miss; a damaged entry is removed). */
  get(key: string): CacheEntry | undefined {
    if (!KEY.test(key)) throw new RangeError(`not an action key: ${key}`);
    const path = this.#path(key);
    let data: Buffer;
    try {
      const fd = openSync(path, 'r');
      try {
        const size = fstatSync(fd).size;
        data = Buffer.allocUnsafe(size);
        for (let done = 0; done < size; ) {
          const n = readSync(fd, data, done, size - done, done);
          if (n === 0) {
            data = data.subarray(0, done);
            break;
          }
          done += n;
        }
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.#log(`cache entry ${path} could not be read (${(err as Error).message}): a miss`);
      }
      return undefined;
    }
    const entry = decode(key, data);
    if (typeof entry === 'string') {
      this.#log(`cache entry ${path} is damaged (${entry}): removed, taken as a miss`);
      this.#init(); // counted with it, then it goes
      rmSync(path, { force: true });
      this.#add(-data.length);
      return undefined;
    }
    try {
      const now = new Date();
      utimesSync(path, now, now); // least recently used goes first
    } catch {
      // Removed by another client's eviction meanwhile: the bytes read are still whole.
    }
    return entry;
  }

  /**
   * Stores `entry` under `key`: written under a temporary name in the cache directory, then
   * renamed into place. An entry larger than the whole cache is not stored. Returns whether
   * it was stored.
   */
  put(key: string, entry: CacheEntry): boolean {
    const w = this.#prepare(key, entry);
    if (w === undefined) return false;
    try {
      this.#mkdir(w.tmpDir);
      this.#mkdir(w.entryDir);
      writeFileSync(w.tmp, w.data, { mode: 0o600 });
      renameSync(w.tmp, w.path);
    } catch (err) {
      rmSync(w.tmp, { force: true });
      return this.#failed(w.path, err);
    }
    return this.#stored(w.data.length);
  }

  /**
   * {@link put} with the writing off the event loop (a client storing as its jobs finish:
   * written synchronously, thousands of entries held up its sockets long enough for cost
   * queries to time out on a loaded machine). Never rejects.
   */
  async putAsync(key: string, entry: CacheEntry): Promise<boolean> {
    const w = this.#prepare(key, entry);
    if (w === undefined) return false;
    try {
      this.#mkdir(w.tmpDir);
      this.#mkdir(w.entryDir);
      await writeFile(w.tmp, w.data, { mode: 0o600 });
      await rename(w.tmp, w.path);
    } catch (err) {
      await rm(w.tmp, { force: true }).catch(() => {});
      return this.#failed(w.path, err);
    }
    return this.#stored(w.data.length);
  }

  /** What {@link put} writes where; `undefined` for an entry larger than the whole cache. */
  #prepare(key: string, entry: CacheEntry) {
    if (!KEY.test(key)) throw new RangeError(`not an action key: ${key}`);
    const data = encode(key, entry);
    if (data.length > this.maxBytes) return undefined;
    this.#init();
    const tmpDir = join(this.dir, 'tmp');
    return {
      data,
      path: this.#path(key),
      tmpDir,
      entryDir: join(this.dir, 'entries', key.slice(0, 2)),
      tmp: join(tmpDir, `${key}.${process.pid}.${randomBytes(6).toString('hex')}`),
    };
  }

  #failed(path: string, err: unknown): false {
    this.#made.clear(); // removed by hand meanwhile? made again at the next store
    this.#log(`cache entry ${path} could not be written (${(err as Error).message})`);
    return false;
  }

  #stored(bytes: number): true {
    // (An entry written over an older one of the same key counts twice until the next
    // eviction's scan; the bound is then kept a little early, never late.)
    this.#add(bytes);
    if ((this.#total ?? 0) > this.maxBytes) this.#evict();
    return true;
  }

  #mkdir(dir: string): void {
    if (this.#made.has(dir)) return;
    mkdirSync(dir, { recursive: true });
    this.#made.add(dir);
  }

  /**
   * Writes this client's additions into the tally file: read again just before, so what
   * other clients wrote meanwhile counts. Done when they reach 1 % of the bound, at an
   * eviction, and at the process's exit; two clients writing at the same instant may lose
   * one's addition (the next eviction recounts).
   */
  flush(): void {
    if (this.#pending === 0) return;
    const total = this.#readTally();
    this.#writeTally(
      total === undefined
        ? this.#scan().reduce((n, e) => n + e.size, 0)
        : Math.max(0, total + this.#pending),
    );
  }

  /** Inside `entries/`, so that removing the entries by hand removes their tally too. */
  get #tallyPath(): string {
    return join(this.dir, 'entries', 'size');
  }

  /** `delta` bytes written (or removed) by this client. */
  #add(delta: number): void {
    this.#init();
    this.#total = Math.max(0, (this.#total ?? 0) + delta);
    this.#pending += delta;
    unflushed.add(this);
    if (Math.abs(this.#pending) >= this.maxBytes / 100) this.flush();
  }

  /**
   * The tally as this client starts from: read, or counted from the entries when there is
   * none. Done before this client's first change, so a change is never both counted by the
   * scan and added (stores in flight at once would be).
   */
  #init(): void {
    if (this.#total !== undefined) return;
    const known = this.#readTally();
    if (known === undefined) this.#writeTally(this.#scan().reduce((n, e) => n + e.size, 0));
    else this.#total = known;
  }

  #readTally(): number | undefined {
    try {
      const text = readFileSync(this.#tallyPath, 'utf8');
      return /^\d{1,15}\n$/.test(text) ? Number(text) : undefined;
    } catch {
      return undefined; // none yet, or unreadable
    }
  }

  #writeTally(total: number): void {
    this.#total = total;
    this.#pending = 0;
    unflushed.delete(this);
    try {
      writeFileSync(this.#tallyPath, `${total}\n`, { mode: 0o600 });
    } catch {
      // A read-only or full cache directory: the next client counts again.
    }
  }

  #scan(): { path: string; size: number; mtimeMs: number }[] {
    const out: { path: string; size: number; mtimeMs: number }[] = [];
    const root = join(this.dir, 'entries');
    let dirs: string[];
    try {
      dirs = readdirSync(root);
    } catch {
      return out;
    }
    for (const d of dirs) {
      let names: string[];
      try {
        names = readdirSync(join(root, d));
      } catch {
        continue;
      }
      for (const name of names) {
        const path = join(root, d, name);
        try {
          const st = statSync(path);
          out.push({ path, size: st.size, mtimeMs: st.mtimeMs });
        } catch {
          // Removed by another client meanwhile.
        }
      }
    }
    return out;
  }

  /**
   * Removes least recently used entries until the cache holds at most 90 % of its bound
   * (so the next writes do not each scan again). Scans the directory: other clients' entries
   * count too.
   */
  #evict(): void {
    const entries = this.#scan().sort((a, b) => a.mtimeMs - b.mtimeMs);
    let total = entries.reduce((n, e) => n + e.size, 0);
    const target = Math.floor(this.maxBytes * 0.9);
    for (const e of entries) {
      if (total <= target) break;
      rmSync(e.path, { force: true });
      total -= e.size;
    }
    this.#writeTally(total);
  }
}

/** Caches with additions not yet in their tally file: written at the process's exit. */
const unflushed = new Set<LocalCache>();
process.on('exit', () => {
  for (const cache of unflushed) cache.flush();
});

function encode(key: string, entry: CacheEntry): Buffer {
  const stderr = entry.stderr ?? Buffer.alloc(0);
  const header: Header = {
    format: ENTRY_FORMAT,
    key,
    stdout: { size: entry.stdout.length, sha256: sha(entry.stdout) },
    stderr: { size: stderr.length, sha256: sha(stderr) },
    files: entry.files.map((f) => ({
      name: f.name,
      mode: f.mode & 0o777,
      size: f.bytes.length,
      sha256: sha(f.bytes),
    })),
  };
  return Buffer.concat([
    Buffer.from(`${JSON.stringify(header)}\n`),
    entry.stdout,
    stderr,
    ...entry.files.map((f) => f.bytes),
  ]);
}

/** The entry in `data`, or why it is not one. */
function decode(key: string, data: Buffer): CacheEntry | string {
  const nl = data.indexOf(0x0a);
  if (nl < 0) return 'no header';
  let header: Header;
  try {
    header = JSON.parse(data.subarray(0, nl).toString('utf8')) as Header;
  } catch {
    return 'the header is not JSON';
  }
  const withStderr = header.format === ENTRY_FORMAT;
  if (!withStderr && header.format !== ENTRY_FORMAT_1) return `format ${String(header.format)}`;
  if (header.key !== key) return 'it is stored under another key';
  if (!Array.isArray(header.files)) return 'no file list';
  let at = nl + 1;
  const take = (part: Part, what: string): Buffer | string => {
    if (!Number.isSafeInteger(part?.size) || part.size < 0) return `${what}: bad size`;
    if (at + part.size > data.length) return `${what}: truncated`;
    const bytes = data.subarray(at, at + part.size);
    at += part.size;
    return sha(bytes) === part.sha256 ? bytes : `${what}: content does not match its SHA-256`;
  };
  const stdout = take(header.stdout, 'stdout');
  if (typeof stdout === 'string') return stdout;
  let stderr: Buffer | undefined;
  if (withStderr) {
    const read = take(header.stderr as Part, 'stderr');
    if (typeof read === 'string') return read;
    if (read.length > 0) stderr = read;
  }
  const files: CachedFile[] = [];
  for (const f of header.files) {
    if (typeof f.name !== 'string' || !Number.isInteger(f.mode)) return 'bad file entry';
    const bytes = take(f, f.name);
    if (typeof bytes === 'string') return bytes;
    files.push({ name: f.name, mode: f.mode & 0o777, bytes });
  }
  if (at !== data.length) return `${data.length - at} bytes past the end`;
  return stderr === undefined ? { stdout, files } : { stdout, stderr, files };
}
