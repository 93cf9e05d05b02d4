import { lstat, mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { type Any, anyUnpack, type Timestamp, timestampMs } from '@bufbuild/protobuf/wkt';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Observable, type SchedulerLike } from 'rxjs';
import type { PlannedAction } from '../client/action.js';
import { trackCleanup } from '../client/cleanup.js';
import {
  type FailureReason,
  type FarmTimings,
  NO_PHASES,
  type PhaseTimings,
  type RakeEvent,
} from '../client/events.js';
import { outputRefusal } from '../client/landing.js';
import { ActionOutput } from '../client/output.js';
import { uniqueSuffix } from '../util/unique.js';
import {
  describeServiceError,
  type ExecutorTarget,
  isServiceError,
  ReapiClient,
  TRANSIENT_CODES,
} from './client.js';
import { digestKey, encodeMessage } from './digest.js';
import {
  type ActionResult,
  type Digest,
  type Directory,
  DirectorySchema,
  type ExecutedActionMetadata,
  TreeSchema,
} from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';
import { PreconditionFailureSchema } from './gen/google/rpc/status_pb.js';
import { buildAction, type HashCache } from './inputs.js';
import { pathProblem } from './tree.js';

/** How rake-ts uses a farm: `--executor` and the flags that go with it. */
export interface ExecutorOptions {
  readonly target: ExecutorTarget;
  /** `--platform KEY=VALUE`: the workers' properties the actions ask for. */
  readonly platform: ReadonlyArray<readonly [string, string]>;
  /** `--cache`: look up the ActionCache first, and let the farm answer from its cache. */
  readonly cache: boolean;
  /** Where outputs land (the Rakefile's directory). */
  readonly outputDir: string;
  readonly scheduler: SchedulerLike;
  readonly logger: Logger;
  /** Tries of one call on a transient code (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED); default 4. */
  readonly tries?: number;
  /** First backoff after a transient failure, doubled each time (default 200 ms). */
  readonly backoffMs?: number;
  /** Absolute paths no output may replace (the Rakefile). */
  readonly refusedFiles?: readonly string[];
  /** Passed to the Action (0/undefined = the farm's default). */
  readonly timeoutMs?: number | undefined;
}

function span(a: Timestamp | undefined, b: Timestamp | undefined): number {
  return a && b ? Math.max(0, Math.round(timestampMs(b) - timestampMs(a))) : 0;
}

/** The farm's timings, from an ActionResult's metadata. */
export function farmTimings(
  meta: ExecutedActionMetadata | undefined,
  cached: boolean,
): FarmTimings {
  return {
    worker: meta?.worker ?? '',
    queuedMs: span(meta?.queuedTimestamp, meta?.workerStartTimestamp),
    inputFetchMs: span(meta?.inputFetchStartTimestamp, meta?.inputFetchCompletedTimestamp),
    executionMs: span(meta?.executionStartTimestamp, meta?.executionCompletedTimestamp),
    outputUploadMs: span(meta?.outputUploadStartTimestamp, meta?.outputUploadCompletedTimestamp),
    cached,
  };
}

/**
 * Whether a farm refused an action for its output directory `""` (the working directory):
 * FAILED_PRECONDITION or INVALID_ARGUMENT with a PreconditionFailure violation of type
 * `INVALID` on the subject `""` (Buildfarm's form for an invalid output path), or, without
 * such a detail, a message about the output directory or path (the only output rake-ts asks
 * for). Then the action is asked again with `"."`.
 */
export function refusesEmptyOutputPath(s: {
  readonly code: number;
  readonly message: string;
  readonly details?: readonly Any[];
}): boolean {
  if (s.code !== status.FAILED_PRECONDITION && s.code !== status.INVALID_ARGUMENT) return false;
  for (const d of s.details ?? []) {
    const failure = anyUnpack(d, PreconditionFailureSchema);
    if (failure?.violations.some((v) => v.type === 'INVALID' && v.subject === '')) return true;
  }
  return /\boutput (directory|director(y|ies)|path)s?\b/i.test(s.message);
}

/** A failure of one action, as data, on its way to an `action-failed` event. */
class ActionFailure extends Error {
  constructor(
    readonly reason: FailureReason,
    message: string,
    readonly extra: { stderr?: string; exitStatus?: number } = {},
  ) {
    super(message);
  }
}

/**
 * Runs a Rakefile's remote actions on a REAPI v2 farm (`--executor`): one Action per
 * action (`/bin/sh -c <command>`, its `requires` files as the input root, the working
 * directory captured as `output_directories: [""]`), uploads what the farm lacks, Execute
 * (resumed by WaitExecution when the stream breaks), then the new or changed files written
 * into the Rakefile's directory, each atomically. See docs/remote-execution.md.
 */
export class ReapiExecutor {
  readonly client: ReapiClient;
  readonly #o: ExecutorOptions;
  readonly #host: string;
  readonly #hashes: HashCache = new Map();
  #capabilities: Promise<unknown> | undefined;
  /**
   * How this farm takes the working directory as the output directory: `""` until it
   * refuses that (then `"."` for the rest of the run, every action after it asked so at once).
   */
  #outputRoot: '' | '.' = '';

  constructor(options: ExecutorOptions) {
    this.#o = options;
    this.client = new ReapiClient(options.target);
    this.#host = `${options.target.tls ? 'grpcs' : 'grpc'}://${options.target.address}`;
  }

  /** The farm as events name it: `grpc://host:port`. */
  get host(): string {
    return this.#host;
  }

  close(): void {
    this.client.close();
  }

  /**
   * The farm refused the output directory `""`: this action and every later one of the run
   * ask for `"."` instead (said once, at warn).
   */
  #refuseEmptyRoot(message: string): void {
    if (this.#outputRoot === '.') return;
    this.#outputRoot = '.';
    this.#o.logger.warn(
      { farm: this.#host, answer: message },
      'the farm refuses the output directory "" (the working directory): asking for "." for the rest of the run',
    );
  }

  /** Calls `fn`, again after a backoff while it fails with a transient code. */
  async #retry<T>(what: string, fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    const tries = this.#o.tries ?? 4;
    let wait = this.#o.backoffMs ?? 200;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (
          signal.aborted ||
          attempt >= tries ||
          !isServiceError(err) ||
          !TRANSIENT_CODES.has(err.code)
        )
          throw err;
        this.#o.logger.debug(
          { what, code: status[err.code], attempt, waitMs: wait },
          'REAPI call retried',
        );
        await new Promise((ok) => setTimeout(ok, wait));
        wait *= 2;
      }
    }
  }

  /**
   * One action's events. `fallback` runs it elsewhere (the local server) when the farm cannot
   * be reached at all (`--fallback`). Never errors; unsubscribing cancels the operation.
   */
  run(action: PlannedAction, fallback?: Observable<RakeEvent>): Observable<RakeEvent> {
    return new Observable<RakeEvent>((sub) => {
      const { scheduler } = this.#o;
      const abort = new AbortController();
      const started = scheduler.now();
      const phases = { ...NO_PHASES } as { -readonly [K in keyof PhaseTimings]: number };
      let reached = false;
      let fellBack: { unsubscribe(): void } | undefined;
      sub.next({
        type: 'host-chosen',
        time: started,
        action: action.ref,
        host: this.#host,
        reason: 'only-host',
        costs: [],
        attempt: 1,
      });
      const work = async () => {
        const t0 = performance.now();
        this.#capabilities ??= this.client.capabilities();
        try {
          await this.#retry(
            'GetCapabilities',
            () => this.#capabilities as Promise<unknown>,
            abort.signal,
          );
        } catch (err) {
          this.#capabilities = undefined;
          throw err;
        }
        reached = true;
        phases.connect = Math.round(performance.now() - t0);
        const lookUp = this.#o.cache && action.ref.noCache !== true;
        let built: Awaited<ReturnType<typeof buildAction>>;
        let result: ActionResult | undefined;
        let cached = false;
        // Twice at most: again with "." when the farm refuses the output directory "".
        for (;;) {
          const root = this.#outputRoot;
          built = await buildAction(
            action.ref.command,
            action.files.map((f) => ({ name: f.name, path: f.path })),
            {
              platform: this.#o.platform,
              ...(this.#o.timeoutMs ? { timeoutMs: this.#o.timeoutMs } : {}),
              // `# rake-ts: no-cache`: the farm neither answers it from nor stores it in its cache.
              ...(action.ref.noCache ? { doNotCache: true } : {}),
              cache: this.#hashes,
              outputRoot: root,
            },
          );
          const digest = built.actionDigest;
          if (lookUp) {
            result = await this.#retry(
              'GetActionResult',
              () => this.client.cachedResult(digest),
              abort.signal,
            );
            cached = result !== undefined;
          }
          if (result !== undefined) break;
          const t1 = performance.now();
          const blobs = [...built.blobs.values()];
          const missing = await this.#retry(
            'FindMissingBlobs',
            () => this.client.findMissing(blobs.map((b) => b.digest)),
            abort.signal,
          );
          const toSend = missing
            .map((d) => built.blobs.get(digestKey(d)))
            .filter((b) => b !== undefined);
          await this.#retry('upload', () => this.client.upload(toSend), abort.signal);
          const bytes = toSend.reduce((n, b) => n + Number(b.digest.sizeBytes), 0);
          phases.upload += Math.round(performance.now() - t1);
          sub.next({
            type: 'upload-done',
            time: scheduler.now(),
            action: action.ref,
            host: this.#host,
            files: toSend.length,
            bytes,
            ms: phases.upload,
          });
          const t2 = performance.now();
          let response: Awaited<ReturnType<ReapiClient['execute']>>;
          try {
            response = await this.#retry(
              'Execute',
              () =>
                this.client.execute(digest, {
                  skipCacheLookup: !lookUp,
                  signal: abort.signal,
                }),
              abort.signal,
            );
          } catch (err) {
            if (
              root === '' &&
              isServiceError(err) &&
              refusesEmptyOutputPath({ code: err.code, message: err.details || err.message })
            ) {
              this.#refuseEmptyRoot(err.details || err.message);
              continue;
            }
            throw err;
          }
          phases.run += Math.round(performance.now() - t2);
          const code = response.status?.code ?? status.OK;
          if (code !== status.OK) {
            const message = response.status?.message ?? '';
            if (
              root === '' &&
              refusesEmptyOutputPath({ code, message, details: response.status?.details ?? [] })
            ) {
              this.#refuseEmptyRoot(message);
              continue;
            }
            const why = `${status[code] ?? code}: ${message} (${this.#host})`;
            if (code === status.DEADLINE_EXCEEDED)
              throw new ActionFailure(
                'timeout',
                `the farm stopped the action at its timeout: ${why}`,
              );
            throw new ActionFailure(
              TRANSIENT_CODES.has(code) ? 'host-lost' : 'protocol-error',
              `the farm could not run the action: ${why}`,
            );
          }
          result = response.result;
          cached = response.cachedResult;
          break;
        }
        if (result === undefined)
          throw new ActionFailure(
            'protocol-error',
            `the farm answered without a result (${this.#host})`,
          );
        const stdout = await this.#stream(result.stdoutRaw, result.stdoutDigest);
        const stderr = Buffer.from(
          await this.#stream(result.stderrRaw, result.stderrDigest),
        ).toString();
        if (result.exitCode !== 0) {
          throw new ActionFailure(
            'exit-non-zero',
            `exited with status ${result.exitCode} on ${this.#host}`,
            {
              stderr,
              exitStatus: result.exitCode,
            },
          );
        }
        const t3 = performance.now();
        const written = await this.#writeOutputs(result, built.inputs.files, abort.signal);
        phases.download = Math.round(performance.now() - t3);
        const t = scheduler.now();
        if (stdout.length > 0) {
          const out = ActionOutput.of(stdout);
          sub.next({ type: 'output', time: t, action: action.ref, host: this.#host, stdout: out });
        }
        sub.next({
          type: 'action-succeeded',
          time: t,
          action: action.ref,
          host: this.#host,
          exitStatus: 0,
          files: written.files,
          downloadBytes: written.bytes,
          ...(stderr ? { stderr } : {}),
          phases: { ...phases },
          attempts: 1,
          ms: t - started,
          farm: farmTimings(result.executionMetadata, cached),
        });
        sub.complete();
      };
      work().catch((err: unknown) => {
        if (sub.closed || abort.signal.aborted) return;
        if (!reached && fallback !== undefined) {
          this.#o.logger.warn(
            { farm: this.#host, err: describeServiceError(err, this.#host) },
            'farm unreachable: running on the local server',
          );
          fellBack = fallback.subscribe(sub);
          return;
        }
        const failure =
          err instanceof ActionFailure
            ? err
            : new ActionFailure(
                !reached
                  ? 'no-host'
                  : isServiceError(err) &&
                      (TRANSIENT_CODES.has(err.code) || err.code === status.CANCELLED)
                    ? 'host-lost'
                    : 'protocol-error',
                `REAPI ${describeServiceError(err, this.#host)}`,
              );
        const t = scheduler.now();
        sub.next({
          type: 'action-failed',
          time: t,
          action: action.ref,
          reason: failure.reason,
          ...(reached ? { host: this.#host } : {}),
          position: action.ref.position,
          message: failure.message,
          stderr: failure.extra.stderr ?? '',
          ...(failure.extra.exitStatus === undefined
            ? {}
            : { exitStatus: failure.extra.exitStatus }),
          phases: { ...phases },
          attempts: 1,
          ms: t - started,
        });
        sub.complete();
      });
      return () => {
        fellBack?.unsubscribe();
        abort.abort();
      };
    });
  }

  async #stream(raw: Uint8Array, digest: Digest | undefined): Promise<Uint8Array> {
    if (raw.length > 0 || digest === undefined || digest.sizeBytes === 0n) return raw;
    return this.client.read(digest);
  }

  /**
   * Writes the action's new or changed files (the output tree less the inputs it was sent
   * unchanged) under the output directory, each to a temporary name then renamed.
   */
  async #writeOutputs(
    result: ActionResult,
    inputs: ReadonlyMap<string, Digest>,
    signal: AbortSignal,
  ): Promise<{ files: string[]; bytes: number }> {
    const wanted: Array<{ path: string; digest: Digest; executable: boolean }> = [];
    for (const f of result.outputFiles) {
      if (f.digest) wanted.push({ path: f.path, digest: f.digest, executable: f.isExecutable });
    }
    for (const d of result.outputDirectories) {
      if (!d.treeDigest) continue;
      const tree = fromBinary(TreeSchema, await this.client.read(d.treeDigest));
      const base = d.path === '.' ? '' : d.path;
      const children = new Map<string, Directory>();
      for (const c of tree.children)
        children.set(digestKey(encodeMessage(DirectorySchema, c).digest), c);
      const walk = (dir: Directory, at: string, depth: number) => {
        if (depth > 64)
          throw new ActionFailure(
            'bad-output',
            `the output tree is deeper than 64 directories (${this.#host})`,
          );
        for (const f of dir.files) {
          if (f.digest)
            wanted.push({
              path: at === '' ? f.name : `${at}/${f.name}`,
              digest: f.digest,
              executable: f.isExecutable,
            });
        }
        for (const sub of dir.directories) {
          const child = sub.digest ? children.get(digestKey(sub.digest)) : undefined;
          if (child === undefined) {
            throw new ActionFailure(
              'bad-output',
              `the output tree lacks directory "${sub.name}" (${this.#host})`,
            );
          }
          walk(child, at === '' ? sub.name : `${at}/${sub.name}`, depth + 1);
        }
      };
      if (tree.root) walk(tree.root, base, 0);
    }
    const files: string[] = [];
    let bytes = 0;
    const root = resolve(this.#o.outputDir);
    // First every check (nothing is written if one output is refused), then each file to a
    // temporary name, then all renamed into place together (as src/client/landing.ts does).
    const landing: Array<{ w: (typeof wanted)[number]; dest: string }> = [];
    for (const w of wanted) {
      const same = inputs.get(w.path);
      if (same && same.hash === w.digest.hash && same.sizeBytes === w.digest.sizeBytes) continue;
      const dest = resolve(root, w.path);
      const problem =
        pathProblem(w.path, false) ??
        (dest.startsWith(root + sep) && relative(root, dest) !== ''
          ? outputRefusal(w.path, root, this.#o.refusedFiles ?? [])
          : 'outside the Rakefile directory');
      if (problem) throw new ActionFailure('bad-output', `refused output "${w.path}": ${problem}`);
      landing.push({ w, dest });
    }
    const staged: Array<{ tmp: string; dest: string }> = [];
    try {
      for (const { w, dest } of landing) {
        if (signal.aborted) throw new ActionFailure('bad-output', 'cancelled');
        const data = await this.client.read(w.digest);
        await mkdir(dirname(dest), { recursive: true });
        const existing = await lstat(dest).catch(() => undefined);
        if (existing?.isSymbolicLink() || existing?.isDirectory()) {
          throw new ActionFailure(
            'bad-output',
            `refused output "${w.path}": a ${existing.isDirectory() ? 'directory' : 'symlink'} is there`,
          );
        }
        const tmp = join(dirname(dest), `.${uniqueSuffix()}.rake-part`);
        staged.push({ tmp, dest });
        await writeFile(tmp, data, { mode: w.executable ? 0o755 : 0o644, flag: 'wx' });
        files.push(w.path);
        bytes += data.length;
      }
      for (const { tmp, dest } of staged) await rename(tmp, dest);
    } catch (err) {
      for (const { tmp } of staged) trackCleanup(unlink(tmp));
      if (err instanceof ActionFailure) throw err;
      throw new ActionFailure(
        'bad-output',
        `cannot write the outputs: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    return { files, bytes };
  }
}
