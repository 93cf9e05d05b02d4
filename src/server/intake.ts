// Job intake: what a client sends for a job before it runs — `!X have` (inputs from the
// input cache), `!R` + filestream (requirements), `!X cwd`, `!X lookup`, and the command's
// text — and the job directory all of it lands in. One per connection; with `reuse` a job
// ends with its reply (`nextJob`) and the next one starts from nothing.
import { dirname } from 'node:path';
import {
  type ExtensionMessage,
  encodeExtension,
  type HaveEntry,
  prepareInside,
  receiveFilestream,
  wireNameSegments,
  write,
} from '../protocol/index.js';
import { ClientGone, type JobDir, type Wire } from './context.js';
import { layoutOf } from './jobdirs.js';
import { listRegularFiles, type TreeListing } from './outputs.js';
import { serverResultKey } from './results.js';

/** How long a job waits for another connection's upload of a file it also needs. */
const CACHE_WAIT_MS = 30_000;

export class JobIntake {
  readonly #wire: Wire;
  #dir: JobDir | undefined;
  /** A job directory was made (requirements, a `have` or a command came). */
  #started = false;
  /** Extension `cwd`: the job directory's subdirectory the command runs in (`!X cwd`). */
  #cwd: string | undefined;
  /**
   * Extension `results`: the next command may be answered from the stored results
   * (`lookup`), or may only be (`only`: `!X lookup only`, a miss runs nothing).
   */
  #lookup: false | 'lookup' | 'only' = false;
  /** Files the last `!X have` asked the client to upload, by wire name, to cache on arrival. */
  readonly #expected = new Map<string, { entry: HaveEntry; settle: (() => void) | undefined }>();

  constructor(wire: Wire) {
    this.#wire = wire;
  }

  /** True once this connection had a job directory (it carried a job, not only costs). */
  get started(): boolean {
    return this.#started;
  }

  /** `!X lookup`, `!X cwd`, `!X have` on an extended connection. */
  async message(msg: ExtensionMessage): Promise<void> {
    if (msg.verb === 'lookup') {
      this.#lookup = msg.only === true ? 'only' : 'lookup';
      return;
    }
    if (msg.verb === 'cwd') {
      // Extension `cwd`: where the next command runs, inside the job directory.
      this.#cwd = wireNameSegments(msg.path).join('/');
      return;
    }
    if (msg.verb !== 'have') return;
    await this.#have(msg.entries);
  }

  /** `!R<len>` and the requirements' filestream, received into the job directory. */
  async requirements(length: number): Promise<void> {
    const wire = this.#wire;
    const limits = wire.ctx.limits;
    // `!R` carries no payload in base mode; tolerate one (bounded) and ignore it.
    await wire.reader.readPayload(length, limits.maxCommandBytes, '!R payload', {
      deadlineMs: wire.payloadDeadline(length),
    });
    wire.manage(true);
    const dir = this.dir();
    const granted = wire.granted();
    const files = await receiveFilestream(wire.reader, wire.socket, {
      resolve: (name) => prepareInside(dir.path, name),
      limits,
      modes: granted.has('mode'),
      push: granted.has('push'),
    });
    if (files.length + this.#expected.size >= 64) dir.small = false;
    if (files.length > 0) dir.noFiles = false;
    dir.bare = false;
    wire.log.debug(
      { files: files.length, bytes: files.reduce((n, f) => n + f.size, 0) },
      'requirements received',
    );
    await this.#cacheUploads(files);
  }

  /** The text of a `!C<len>` (or a base client's `!E<len>`) command. */
  async command(length: number): Promise<string> {
    const wire = this.#wire;
    const payload = await wire.reader.readPayload(
      length,
      wire.ctx.limits.maxCommandBytes,
      'command',
      { deadlineMs: wire.payloadDeadline(length) },
    );
    return payload.toString('utf8');
  }

  /**
   * The connection's job directory, taken on first use. `layout`: the subdirectories its
   * files will need, when known up front (a `have` list), so a spare directory that already
   * has them can be used.
   */
  dir(layout?: readonly string[]): JobDir {
    this.#started = true;
    this.#dir ??= {
      path: this.#wire.ctx.jobDirs.take(this.#wire.id, layout),
      small: true,
      noFiles: true,
      bare: false,
    };
    return this.#dir;
  }

  /**
   * Where the command runs: the job directory, or its `!X cwd` subdirectory, made here with
   * its parents, refusing symlinks and files on the way.
   */
  runIn(dir: JobDir): string {
    if (this.#cwd === undefined) return dir.path;
    dir.bare = false;
    return dirname(prepareInside(dir.path, `${this.#cwd}/.cwd`));
  }

  /**
   * Extension `results`: the server's key of the command about to run, when the client
   * asked (`!X lookup` just before it) and this server keeps results; else `undefined`.
   * Computed before the command runs, from what the job directory holds then. `only`: the
   * client sent `!X lookup only`: the command must not run (a miss is answered `!X miss`).
   */
  async resultKey(
    dir: JobDir,
    command: string,
  ): Promise<{ key: string | undefined; only: boolean; listing?: TreeListing }> {
    const asked = this.#lookup;
    this.#lookup = false;
    const only = asked === 'only';
    const ctx = this.#wire.ctx;
    const platform = ctx.platform;
    if (asked === false || ctx.results === undefined || platform === undefined) {
      return { key: undefined, only };
    }
    const listing = await listRegularFiles(dir.path, ctx.limits.maxFiles);
    if (!listing.ok || listing.notUtf8.length > 0) return { key: undefined, only };
    const key = await serverResultKey(dir.path, listing.files.keys(), command, this.#cwd, platform);
    return { key, only, listing };
  }

  /**
   * Extension `reuse`: a job ends with its reply. Its directory is given back and nothing of
   * it (`cwd`, `lookup`, a `have`'s claims) carries over; the next `have`, `!R` or `!C` on
   * this connection starts a new job in a new directory. Without `reuse`, a later command
   * runs in the same directory, as in base mode. A directory the last job left with nothing
   * in it at all is kept for the next job (as a new one would be: empty, mode 0700), without
   * giving it back and taking it again.
   */
  async nextJob(): Promise<void> {
    this.settleExpected();
    this.#cwd = undefined;
    this.#lookup = false;
    const dir = this.#dir;
    if (dir?.bare === true && this.#wire.ctx.jobDirs.keep(dir.path)) {
      dir.small = true;
      dir.noFiles = true;
      return;
    }
    await this.removeDir();
  }

  /** Ends the claims of a `have` whose uploads did not all arrive. */
  settleExpected(): void {
    for (const { settle } of this.#expected.values()) settle?.();
    this.#expected.clear();
  }

  /** Gives the job directory back (emptied for reuse, or removed). */
  async removeDir(): Promise<void> {
    const dir = this.#dir;
    if (dir === undefined) return;
    this.#dir = undefined;
    try {
      await this.#wire.ctx.jobDirs.give(dir.path, { small: dir.small, bare: dir.bare });
    } catch (err) {
      this.#wire.log.error({ dir: dir.path, err }, 'cannot remove job directory');
    }
  }

  /**
   * `!X have`: copies every listed file the cache holds into the job directory, and
   * answers `!X need` with the others (in the order listed), which the client then uploads.
   * A file another connection is uploading right now is waited for rather than needed.
   */
  async #have(entries: readonly HaveEntry[]): Promise<void> {
    const wire = this.#wire;
    const cache = wire.ctx.cache;
    if (cache === undefined) throw new Error('have without a cache');
    wire.manage(true);
    const dir = this.dir(layoutOf(entries.map((e) => e.name)));
    this.settleExpected();
    if (entries.length >= 64) dir.small = false;
    dir.bare = false;
    if (entries.length > 0) dir.noFiles = false;
    const withMode = wire.granted().has('mode');
    const found = await Promise.all(
      entries.map(async (entry) => {
        const path = await prepareInside(dir.path, entry.name);
        const lease = await cache.lease(entry.sha256, entry.size, CACHE_WAIT_MS, wire.signal);
        if (lease === undefined) return false;
        try {
          await cache.materialize(lease, path, withMode ? entry.mode : undefined);
          return true;
        } catch (err) {
          wire.log.warn({ name: entry.name, err }, 'cannot copy a cached file: asking for it');
          return false;
        } finally {
          lease.release();
        }
      }),
    );
    if (wire.signal.aborted) throw new ClientGone('client left while its inputs were copied');
    const need: string[] = [];
    entries.forEach((entry, i) => {
      if (found[i]) return;
      need.push(entry.name);
      this.#expected.set(entry.name, { entry, settle: cache.claim(entry.sha256) });
    });
    wire.log.debug(
      { listed: entries.length, cached: entries.length - need.length, need: need.length },
      'have',
    );
    await write(wire.socket, encodeExtension({ verb: 'need', names: need }));
  }

  /**
   * Caches the uploads a `have` announced, each only if the server's own hash of the bytes
   * matches the client's claim; then lets waiting connections go on.
   */
  async #cacheUploads(
    files: readonly { name: string; path: string; size: number }[],
  ): Promise<void> {
    const cache = this.#wire.ctx.cache;
    if (cache === undefined || this.#expected.size === 0) return;
    for (const file of files) {
      const expected = this.#expected.get(file.name);
      if (expected === undefined) continue;
      this.#expected.delete(file.name);
      try {
        const result = await cache.insert(expected.entry.sha256, expected.entry.size, file.path);
        if (result === 'mismatch' || result === 'wrong-size') {
          this.#wire.log.warn(
            { name: file.name, claimed: expected.entry.sha256, result },
            'upload does not match its announced hash: not cached',
          );
        }
      } catch (err) {
        this.#wire.log.warn({ name: file.name, err }, 'cannot cache an upload');
      } finally {
        expected.settle?.();
      }
    }
    this.settleExpected();
  }
}
