import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, type MessageShape } from '@bufbuild/protobuf';
import { anyPack, type Duration, durationMs, timestampNow } from '@bufbuild/protobuf/wkt';
import {
  type Metadata,
  Server,
  ServerCredentials,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  status,
  type UntypedHandleCall,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Token } from '../protocol/token.js';
import { runJob } from '../server/job.js';
import type { JobDirs } from '../server/jobdirs.js';
import type { Launcher } from '../server/launcher.js';
import { removeTree } from '../server/outputs.js';
import { type JobSlots, type SlotHold, SlotWaitAborted } from '../server/slots.js';
import { type BlobWriter, Cas } from './cas.js';
import { digestKey, digestProblem, encodeMessage, makeDigest } from './digest.js';
import {
  type Action,
  ActionCache,
  type ActionResult,
  ActionResultSchema,
  ActionSchema,
  BatchReadBlobsResponse_ResponseSchema,
  BatchReadBlobsResponseSchema,
  BatchUpdateBlobsResponse_ResponseSchema,
  BatchUpdateBlobsResponseSchema,
  Capabilities,
  type Command,
  CommandSchema,
  ContentAddressableStorage,
  type Digest,
  DigestFunction_Value,
  type Directory,
  DirectorySchema,
  ExecutedActionMetadataSchema,
  ExecuteOperationMetadataSchema,
  type ExecuteRequest,
  type ExecuteResponse,
  ExecuteResponseSchema,
  Execution,
  ExecutionStage_Value,
  FindMissingBlobsResponseSchema,
  GetTreeResponseSchema,
  OutputDirectorySchema,
  OutputFileSchema,
  OutputSymlinkSchema,
  ServerCapabilitiesSchema,
  SymlinkAbsolutePathStrategy_Value,
  TreeSchema,
} from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';
import {
  ByteStream,
  QueryWriteStatusResponseSchema,
  type ReadRequest,
  ReadResponseSchema,
  type WriteRequest,
  WriteResponseSchema,
} from './gen/google/bytestream/bytestream_pb.js';
import {
  type Operation,
  OperationSchema,
  Operations,
} from './gen/google/longrunning/operations_pb.js';
import {
  PreconditionFailure_ViolationSchema,
  PreconditionFailureSchema,
  type Status,
  StatusSchema,
} from './gen/google/rpc/status_pb.js';
import { serviceDefinition } from './grpc.js';
import { captureTree, fetchInputTree, materialize, pathProblem } from './tree.js';

/** The REAPI server's share of a rakeserver: the parts it has in common with our protocol. */
export interface ReapiContext {
  readonly logger: Logger;
  /** Where the store and job directories go (the rakeserver's workdir). */
  readonly workdir: string;
  readonly launcher: Launcher;
  readonly slots: JobSlots;
  readonly jobDirs: JobDirs;
  /** Counts an action in the cost our protocol's clients see. */
  manage(delta: 1 | -1): void;
  /** Server default: kill a job after this long (0 = never); an Action's timeout wins. */
  readonly jobTimeoutMs: number;
  readonly maxOutputBytes: number;
  /** When set, every call must carry `authorization: Bearer <token>`. */
  readonly token: Token | undefined;
  /** Bytes the content-addressable store keeps. */
  readonly casBytes: number;
  /**
   * Test-only (no CLI flag): behave as a farm that refuses the working directory asked for as
   * `""` and takes it as `"."` (docs/remote-execution.md, "The working directory as an
   * output"). An output directory or path `""` fails the action with the error Buildfarm gives
   * an invalid output path: FAILED_PRECONDITION, `Action HASH/SIZE is invalid: …`, and a
   * PreconditionFailure violation of type `INVALID` whose subject is the path; a `"."` is
   * answered as `"."`, not as `""`. So the client's fallback is specced against a real server.
   */
  readonly refuseEmptyOutputPath?: boolean;
}

/** Buildfarm's description of an output directory its validation refuses (NodeInstance). */
export const BUILDFARM_OUTPUT_ANCESTOR = 'An output directory is an ancestor to another output';

/** Options for {@link startReapiServer}. */
export interface ReapiListen {
  readonly host: string;
  /** 0 = any free port. */
  readonly port: number;
  /** TLS credentials, or insecure (plain HTTP/2) when undefined. */
  readonly credentials?: ServerCredentials;
}

/** A running REAPI endpoint. */
export interface ReapiServerHandle {
  readonly port: number;
  readonly cas: Cas;
  /** Results kept by the ActionCache (for tests and logs). */
  readonly actionCacheSize: () => number;
  /** Stops accepting calls, cancels running actions, and waits for them. */
  close(): Promise<void>;
}

/** Largest total of blobs in one Batch call, told to clients in the capabilities. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/** gRPC message limit: a batch of MAX_BATCH_BYTES plus its framing. */
const MAX_MESSAGE_BYTES = MAX_BATCH_BYTES + 1024 * 1024;
/** ByteStream Read chunk. */
const READ_CHUNK = 64 * 1024;
/** stdout/stderr up to this size also go inline in an ActionResult. */
const INLINE_OUTPUT_BYTES = 64 * 1024;
/** Finished operations kept for a late WaitExecution, at most. */
const KEPT_OPERATIONS = 1000;
/** ActionCache entries kept, least recently used dropped first. */
const ACTION_CACHE_ENTRIES = 10_000;

/** One execution: its latest Operation, whoever watches it, and how to cancel it. */
interface RunningExecution {
  readonly name: string;
  latest: Operation;
  readonly watchers: Set<(op: Operation) => void>;
  readonly abort: AbortController;
}

/** An error for grpc-js: a status code and a message saying what and what to do. */
function rpcError(code: status, details: string): Error & { code: status; details: string } {
  return Object.assign(new Error(details), { code, details });
}

function statusOf(code: status, message: string, details: Status['details'] = []): Status {
  return create(StatusSchema, { code, message, details });
}

/**
 * Starts rakeserver's REAPI v2 endpoint (`--reapi-port`): Capabilities, the CAS with
 * ByteStream, Execution with WaitExecution, the ActionCache, and CancelOperation. Jobs run in
 * the same job directories, through the same launcher and job slots as our protocol's.
 */
export async function startReapiServer(
  ctx: ReapiContext,
  listen: ReapiListen,
): Promise<ReapiServerHandle> {
  const log = ctx.logger.child({ part: 'reapi' });
  const cas = await Cas.open(
    join(ctx.workdir, 'reapi-cas'),
    ctx.casBytes,
    log.child({ part: 'cas' }),
  );
  const actionCache = new Map<string, ActionResult>();
  const executions = new Map<string, RunningExecution>();
  const finished: string[] = [];
  const running = new Set<Promise<void>>();
  const worker = `rakeserver@${hostname()}`;
  let nextJob = 1;
  let closing = false;

  const authorized = (metadata: Metadata): boolean => {
    if (ctx.token === undefined) return true;
    const header = metadata.get('authorization')[0];
    if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false;
    const nonce = randomUUID();
    return ctx.token.verify(nonce, new Token(header.slice('Bearer '.length).trim()).proof(nonce));
  };
  const denied = () =>
    rpcError(
      status.UNAUTHENTICATED,
      'this rakeserver requires a token: send the header "authorization: Bearer <token>" (rake-ts: --executor-header; Bazel: --remote_header)',
    );

  /** Wraps a unary handler: auth, then the handler's result or its thrown rpcError. */
  const unary =
    <Req, Res>(fn: (req: Req) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, cb: (err: Error | null, res?: Res) => void) => {
      if (!authorized(call.metadata)) return cb(denied());
      fn(call.request).then(
        (res) => cb(null, res),
        (err: unknown) => cb(asRpcError(err, log)),
      );
    };

  const checkDigest = (d: Digest | undefined, what: string): Digest => {
    const bad = digestProblem(d);
    if (bad || d === undefined) throw rpcError(status.INVALID_ARGUMENT, `${what}: ${bad}`);
    return d;
  };
  const checkFunction = (fn: DigestFunction_Value) => {
    if (fn !== DigestFunction_Value.UNKNOWN && fn !== DigestFunction_Value.SHA256) {
      throw rpcError(
        status.INVALID_ARGUMENT,
        `digest function ${DigestFunction_Value[fn] ?? fn} is not supported: rakeserver uses SHA256`,
      );
    }
  };

  // --- Capabilities ---
  const capabilities = {
    getCapabilities: unary(async () =>
      create(ServerCapabilitiesSchema, {
        cacheCapabilities: {
          digestFunctions: [DigestFunction_Value.SHA256],
          actionCacheUpdateCapabilities: { updateEnabled: true },
          maxBatchTotalSizeBytes: BigInt(MAX_BATCH_BYTES),
          symlinkAbsolutePathStrategy: SymlinkAbsolutePathStrategy_Value.DISALLOWED,
        },
        executionCapabilities: {
          digestFunction: DigestFunction_Value.SHA256,
          execEnabled: true,
        },
        lowApiVersion: { major: 2 },
        highApiVersion: { major: 2 },
      }),
    ),
  };

  // --- CAS ---
  const casService = {
    findMissingBlobs: unary(
      async (req: MessageShape<typeof ContentAddressableStorage.method.findMissingBlobs.input>) => {
        checkFunction(req.digestFunction);
        const missing = req.blobDigests.filter((d) => {
          checkDigest(d, 'FindMissingBlobs');
          return !cas.has(d);
        });
        return create(FindMissingBlobsResponseSchema, { missingBlobDigests: missing });
      },
    ),
    batchUpdateBlobs: unary(
      async (req: MessageShape<typeof ContentAddressableStorage.method.batchUpdateBlobs.input>) => {
        checkFunction(req.digestFunction);
        const responses = [];
        for (const r of req.requests) {
          const digest = checkDigest(r.digest, 'BatchUpdateBlobs');
          if (r.compressor !== 0) {
            responses.push(
              create(BatchUpdateBlobsResponse_ResponseSchema, {
                digest,
                status: statusOf(
                  status.INVALID_ARGUMENT,
                  'compressed blobs are not supported: send them uncompressed',
                ),
              }),
            );
            continue;
          }
          const put = await cas.put(r.data, digest);
          responses.push(
            create(BatchUpdateBlobsResponse_ResponseSchema, {
              digest,
              status: put.ok
                ? statusOf(status.OK, '')
                : statusOf(
                    put.reason === 'mismatch' ? status.INVALID_ARGUMENT : status.RESOURCE_EXHAUSTED,
                    put.message,
                  ),
            }),
          );
        }
        return create(BatchUpdateBlobsResponseSchema, { responses });
      },
    ),
    batchReadBlobs: unary(
      async (req: MessageShape<typeof ContentAddressableStorage.method.batchReadBlobs.input>) => {
        checkFunction(req.digestFunction);
        let total = 0n;
        for (const d of req.digests) total += checkDigest(d, 'BatchReadBlobs').sizeBytes;
        if (total > BigInt(MAX_BATCH_BYTES)) {
          throw rpcError(
            status.INVALID_ARGUMENT,
            `BatchReadBlobs asks for ${total} bytes, over the ${MAX_BATCH_BYTES} the capabilities allow: read large blobs with ByteStream`,
          );
        }
        const responses = [];
        for (const digest of req.digests) {
          const data = await cas.read(digest);
          responses.push(
            create(BatchReadBlobsResponse_ResponseSchema, {
              digest,
              ...(data === undefined
                ? {
                    status: statusOf(
                      status.NOT_FOUND,
                      `blob ${digestKey(digest)} is not in this server's store`,
                    ),
                  }
                : { data, status: statusOf(status.OK, '') }),
            }),
          );
        }
        return create(BatchReadBlobsResponseSchema, { responses });
      },
    ),
    getTree: (
      call: ServerWritableStream<
        MessageShape<typeof ContentAddressableStorage.method.getTree.input>,
        unknown
      >,
    ) => {
      if (!authorized(call.metadata)) return call.emit('error', denied());
      void (async () => {
        const root = checkDigest(call.request.rootDigest, 'GetTree');
        const directories: Directory[] = [];
        const pending = [root];
        const seen = new Set<string>();
        for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
          if (seen.has(digestKey(d))) continue;
          seen.add(digestKey(d));
          const bytes = await cas.read(d);
          if (bytes === undefined) {
            if (d === root)
              throw rpcError(
                status.NOT_FOUND,
                `directory ${digestKey(d)} is not in this server's store`,
              );
            continue;
          }
          const dir = fromBinary(DirectorySchema, bytes);
          directories.push(dir);
          for (const sub of dir.directories) if (sub.digest) pending.push(sub.digest);
        }
        call.write(create(GetTreeResponseSchema, { directories }));
        call.end();
      })().catch((err: unknown) => call.emit('error', asRpcError(err, log)));
    },
  };

  // --- ByteStream ---
  const parseRead = (name: string): Digest => {
    const m = /(?:^|\/)blobs\/([0-9a-f]{64})\/(\d+)$/.exec(name);
    if (!m?.[1] || !m[2]) {
      throw rpcError(
        status.INVALID_ARGUMENT,
        `resource name "${name}" is not "{instance}/blobs/{hash}/{size}"`,
      );
    }
    return makeDigest(m[1], BigInt(m[2]));
  };
  const parseWrite = (name: string): Digest => {
    const m =
      /(?:^|\/)uploads\/[^/]+\/(compressed-blobs\/[^/]+|blobs)\/([0-9a-f]{64})\/(\d+)(?:\/.*)?$/.exec(
        name,
      );
    if (!m?.[2] || !m[3]) {
      throw rpcError(
        status.INVALID_ARGUMENT,
        `resource name "${name}" is not "{instance}/uploads/{uuid}/blobs/{hash}/{size}"`,
      );
    }
    if (m[1] !== 'blobs')
      throw rpcError(
        status.INVALID_ARGUMENT,
        'compressed blobs are not supported: send them uncompressed',
      );
    return makeDigest(m[2], BigInt(m[3]));
  };
  const byteStream = {
    read: (call: ServerWritableStream<ReadRequest, unknown>) => {
      if (!authorized(call.metadata)) return call.emit('error', denied());
      void (async () => {
        const digest = parseRead(call.request.resourceName);
        const size = Number(digest.sizeBytes);
        const offset = Number(call.request.readOffset);
        const limit = Number(call.request.readLimit);
        if (offset < 0 || offset > size || limit < 0) {
          throw rpcError(
            status.OUT_OF_RANGE,
            `read_offset ${offset} / read_limit ${limit} outside the blob's ${size} bytes`,
          );
        }
        const end = limit === 0 ? size : Math.min(size, offset + limit);
        if (size === 0 || end === offset) {
          if (!cas.has(digest))
            throw rpcError(
              status.NOT_FOUND,
              `blob ${digestKey(digest)} is not in this server's store`,
            );
          call.write(create(ReadResponseSchema, {}));
          call.end();
          return;
        }
        const stream = cas.readStream(digest, offset, end);
        if (stream === undefined)
          throw rpcError(
            status.NOT_FOUND,
            `blob ${digestKey(digest)} is not in this server's store`,
          );
        call.on('cancelled', () => stream.destroy());
        for await (const chunk of stream) {
          for (let i = 0; i < (chunk as Buffer).length; i += READ_CHUNK) {
            const part = (chunk as Buffer).subarray(i, i + READ_CHUNK);
            if (!call.write(create(ReadResponseSchema, { data: part }))) {
              await new Promise((ok) => call.once('drain', ok));
            }
          }
        }
        call.end();
      })().catch((err: unknown) => call.emit('error', asRpcError(err, log)));
    },
    write: (
      call: ServerReadableStream<WriteRequest, unknown>,
      cb: (err: Error | null, res?: unknown) => void,
    ) => {
      if (!authorized(call.metadata)) return cb(denied());
      let writer: BlobWriter | undefined;
      let settled = false;
      const settle = (err: Error | null, res?: unknown) => {
        if (settled) return;
        settled = true;
        if (err) void writer?.abort();
        cb(err, res);
      };
      let chain = Promise.resolve();
      call.on('data', (req: WriteRequest) => {
        chain = chain
          .then(async () => {
            if (settled) return;
            if (writer === undefined) {
              const digest = parseWrite(req.resourceName);
              if (cas.has(digest)) {
                // Already held: say so at once, as the spec allows, and ignore the rest.
                return settle(
                  null,
                  create(WriteResponseSchema, { committedSize: digest.sizeBytes }),
                );
              }
              writer = cas.writer(digest);
            }
            if (Number(req.writeOffset) !== writer.written) {
              throw rpcError(
                status.INVALID_ARGUMENT,
                `write_offset ${req.writeOffset} but ${writer.written} bytes were received: resume from QueryWriteStatus's committed_size`,
              );
            }
            if (writer.written + req.data.length > Number(writer.expect.sizeBytes)) {
              throw rpcError(
                status.INVALID_ARGUMENT,
                `more bytes than the ${writer.expect.sizeBytes} the resource name says`,
              );
            }
            await writer.write(req.data);
            if (req.finishWrite) {
              const put = await writer.finish();
              if (!put.ok) {
                throw rpcError(
                  put.reason === 'mismatch' ? status.INVALID_ARGUMENT : status.RESOURCE_EXHAUSTED,
                  put.message,
                );
              }
              settle(null, create(WriteResponseSchema, { committedSize: put.digest.sizeBytes }));
            }
          })
          .catch((err: unknown) => settle(asRpcError(err, log)));
      });
      call.on('end', () => {
        void chain.then(() =>
          settle(
            rpcError(
              status.INVALID_ARGUMENT,
              'the Write stream ended without finish_write: the blob was not stored',
            ),
          ),
        );
      });
      call.on('error', () => settle(rpcError(status.CANCELLED, 'stream broken')));
    },
    queryWriteStatus: unary(
      async (req: MessageShape<typeof ByteStream.method.queryWriteStatus.input>) => {
        const digest = parseWrite(req.resourceName);
        const complete = cas.has(digest);
        return create(QueryWriteStatusResponseSchema, {
          committedSize: complete ? digest.sizeBytes : 0n,
          complete,
        });
      },
    ),
  };

  // --- ActionCache ---
  const cachedResult = (digest: Digest): ActionResult | undefined => {
    const key = digestKey(digest);
    const result = actionCache.get(key);
    if (result === undefined) return undefined;
    // Only a result whose every blob is still held is a hit.
    const blobs = [
      ...result.outputFiles.map((f) => f.digest),
      ...result.outputDirectories.map((d) => d.treeDigest),
      result.stdoutDigest,
      result.stderrDigest,
    ];
    if (!blobs.every((b) => b === undefined || cas.has(b))) {
      actionCache.delete(key);
      return undefined;
    }
    actionCache.delete(key);
    actionCache.set(key, result);
    return result;
  };
  const remember = (digest: Digest, result: ActionResult) => {
    const key = digestKey(digest);
    actionCache.delete(key);
    actionCache.set(key, result);
    while (actionCache.size > ACTION_CACHE_ENTRIES) {
      const oldest = actionCache.keys().next().value;
      if (oldest === undefined) break;
      actionCache.delete(oldest);
    }
  };
  const actionCacheService = {
    getActionResult: unary(
      async (req: MessageShape<typeof ActionCache.method.getActionResult.input>) => {
        checkFunction(req.digestFunction);
        const digest = checkDigest(req.actionDigest, 'GetActionResult');
        const result = cachedResult(digest);
        if (result === undefined)
          throw rpcError(status.NOT_FOUND, `no cached result for action ${digestKey(digest)}`);
        return result;
      },
    ),
    updateActionResult: unary(
      async (req: MessageShape<typeof ActionCache.method.updateActionResult.input>) => {
        checkFunction(req.digestFunction);
        const digest = checkDigest(req.actionDigest, 'UpdateActionResult');
        const result = req.actionResult ?? create(ActionResultSchema, {});
        remember(digest, result);
        return result;
      },
    ),
  };

  // --- Execution ---
  const publish = (exec: RunningExecution, op: Operation) => {
    exec.latest = op;
    for (const w of exec.watchers) w(op);
    if (op.done) {
      finished.push(exec.name);
      while (finished.length > KEPT_OPERATIONS) {
        const old = finished.shift();
        if (old !== undefined) executions.delete(old);
      }
    }
  };
  const stageOp = (
    exec: RunningExecution,
    actionDigest: Digest,
    stage: ExecutionStage_Value,
  ): Operation =>
    create(OperationSchema, {
      name: exec.name,
      metadata: anyPack(
        ExecuteOperationMetadataSchema,
        create(ExecuteOperationMetadataSchema, { stage, actionDigest }),
      ),
      done: false,
    });
  const doneOp = (
    exec: RunningExecution,
    actionDigest: Digest,
    response: ExecuteResponse,
  ): Operation =>
    create(OperationSchema, {
      name: exec.name,
      metadata: anyPack(
        ExecuteOperationMetadataSchema,
        create(ExecuteOperationMetadataSchema, {
          stage: ExecutionStage_Value.COMPLETED,
          actionDigest,
        }),
      ),
      done: true,
      result: { case: 'response', value: anyPack(ExecuteResponseSchema, response) },
    });

  /** Sends an execution's operations to a stream until it is done or the stream ends. */
  const follow = (exec: RunningExecution, call: ServerWritableStream<unknown, unknown>) => {
    const send = (op: Operation) => {
      call.write(op);
      if (op.done) {
        exec.watchers.delete(send);
        call.end();
      }
    };
    call.on('cancelled', () => exec.watchers.delete(send));
    exec.watchers.add(send);
    send(exec.latest);
  };

  const missingStatus = (missing: readonly Digest[]): Status =>
    statusOf(
      status.FAILED_PRECONDITION,
      `${missing.length} blob(s) the action needs are not in this server's store: upload them and execute again`,
      [
        anyPack(
          PreconditionFailureSchema,
          create(PreconditionFailureSchema, {
            violations: missing.map((d) =>
              create(PreconditionFailure_ViolationSchema, {
                type: 'MISSING',
                subject: `blobs/${digestKey(d)}`,
              }),
            ),
          }),
        ),
      ],
    );

  /** Runs one action to its ExecuteResponse. Never rejects. */
  const runAction = async (
    exec: RunningExecution,
    req: ExecuteRequest,
    actionDigest: Digest,
  ): Promise<ExecuteResponse> => {
    const queued = timestampNow();
    const fail = (code: status, message: string, result?: ActionResult): ExecuteResponse =>
      create(ExecuteResponseSchema, {
        status: statusOf(code, message),
        ...(result === undefined ? {} : { result }),
      });
    const actionBytes = await cas.read(actionDigest);
    if (actionBytes === undefined)
      return create(ExecuteResponseSchema, { status: missingStatus([actionDigest]) });
    let action: Action;
    let command: Command;
    try {
      action = fromBinary(ActionSchema, actionBytes);
    } catch (err) {
      return fail(
        status.INVALID_ARGUMENT,
        `action ${digestKey(actionDigest)} is not an Action: ${String(err)}`,
      );
    }
    const commandDigest = action.commandDigest;
    const rootDigest = action.inputRootDigest;
    const bad = digestProblem(commandDigest) ?? digestProblem(rootDigest);
    if (bad || commandDigest === undefined || rootDigest === undefined) {
      return fail(status.INVALID_ARGUMENT, `action ${digestKey(actionDigest)}: ${bad}`);
    }
    if (!req.skipCacheLookup && !action.doNotCache) {
      const hit = cachedResult(actionDigest);
      if (hit)
        return create(ExecuteResponseSchema, {
          result: hit,
          cachedResult: true,
          status: statusOf(status.OK, ''),
        });
    }
    const commandBytes = await cas.read(commandDigest);
    const fetched = await fetchInputTree(cas, rootDigest);
    const missing = [
      ...(commandBytes === undefined ? [commandDigest] : []),
      ...(fetched.ok ? [] : (fetched.missing ?? [])),
    ];
    if (missing.length > 0)
      return create(ExecuteResponseSchema, { status: missingStatus(missing) });
    if (!fetched.ok)
      return fail(status.INVALID_ARGUMENT, 'invalid' in fetched ? fetched.invalid : '');
    try {
      command = fromBinary(CommandSchema, commandBytes ?? new Uint8Array(0));
    } catch (err) {
      return fail(
        status.INVALID_ARGUMENT,
        `command ${digestKey(commandDigest)} is not a Command: ${String(err)}`,
      );
    }
    const script = shellScript(command);
    if (typeof script !== 'string') return fail(status.INVALID_ARGUMENT, script.problem);
    const outputs = [
      ...command.outputFiles.map((p) => ({ p, kind: 'file' as const })),
      ...command.outputDirectories.map((p) => ({ p, kind: 'dir' as const })),
      ...command.outputPaths.map((p) => ({ p, kind: 'path' as const })),
    ];
    for (const o of outputs) {
      const problem = pathProblem(o.p, o.kind !== 'file');
      if (problem) return fail(status.INVALID_ARGUMENT, `output ${problem}`);
    }
    if (ctx.refuseEmptyOutputPath && outputs.some((o) => o.p === '')) {
      log.info({ action: digestKey(actionDigest) }, 'refused the output path ""');
      return create(ExecuteResponseSchema, {
        status: statusOf(
          status.FAILED_PRECONDITION,
          `Action ${digestKey(actionDigest)} is invalid: ${BUILDFARM_OUTPUT_ANCESTOR}.`,
          [
            anyPack(
              PreconditionFailureSchema,
              create(PreconditionFailureSchema, {
                violations: [
                  create(PreconditionFailure_ViolationSchema, {
                    type: 'INVALID',
                    subject: '',
                    description: BUILDFARM_OUTPUT_ANCESTOR,
                  }),
                ],
              }),
            ),
          ],
        ),
      });
    }

    let slot: SlotHold | undefined;
    try {
      slot = await ctx.slots.acquire(exec.abort.signal);
    } catch (err) {
      if (err instanceof SlotWaitAborted)
        return fail(status.CANCELLED, 'the operation was cancelled while queued');
      throw err;
    }
    const dir = ctx.jobDirs.take(nextJob++);
    try {
      publish(exec, stageOp(exec, actionDigest, ExecutionStage_Value.EXECUTING));
      const workerStart = timestampNow();
      const laid = await materialize(cas, fetched.tree, dir);
      if (laid)
        return create(ExecuteResponseSchema, {
          status: statusOf(status.FAILED_PRECONDITION, laid),
        });
      const wd = join(dir, command.workingDirectory);
      for (const o of outputs) {
        // The spec: the server makes the parents of every output path (not the path itself).
        await mkdir(join(wd, o.p, '..'), { recursive: true });
      }
      const inputsFetched = timestampNow();
      const timeoutMs = action.timeout ? durationMs(action.timeout as Duration) : ctx.jobTimeoutMs;
      const outcome = await runJob(
        {
          command: script,
          cwd: dir,
          signal: exec.abort.signal,
          timeoutMs,
          maxOutputBytes: ctx.maxOutputBytes,
          // A queued job of our protocol's may be chained to start as this one ends.
          started: (job) => slot?.running(job),
        },
        ctx.launcher,
      );
      const executed = timestampNow();
      if (outcome.reason === 'aborted')
        return fail(status.CANCELLED, 'the operation was cancelled');
      if (outcome.reason === 'spawn-error') {
        return fail(
          status.INTERNAL,
          `rakeserver could not start /bin/sh: ${outcome.error.message}`,
        );
      }
      if (outcome.reason === 'refused') return fail(status.INVALID_ARGUMENT, outcome.message);
      if (outcome.reason === 'lost') {
        return fail(
          status.UNAVAILABLE,
          `rakeserver lost the job: ${outcome.message}; execute it again`,
        );
      }
      if (outcome.reason === 'output-limit') {
        return fail(
          status.RESOURCE_EXHAUSTED,
          `the job's ${outcome.stream} exceeded ${ctx.maxOutputBytes} bytes; its processes were killed`,
        );
      }
      const result = create(ActionResultSchema, {});
      const stdout =
        outcome.reason === 'exited' ? Buffer.concat(outcome.stdout as Buffer[]) : Buffer.alloc(0);
      const stderr = outcome.stderr;
      for (const [data, which] of [
        [stdout, 'stdout'],
        [stderr, 'stderr'],
      ] as const) {
        if (data.length === 0) continue;
        const put = await cas.put(data);
        if (!put.ok) return fail(status.RESOURCE_EXHAUSTED, put.message);
        if (which === 'stdout') {
          result.stdoutDigest = put.digest;
          if (data.length <= INLINE_OUTPUT_BYTES) result.stdoutRaw = data;
        } else {
          result.stderrDigest = put.digest;
          if (data.length <= INLINE_OUTPUT_BYTES) result.stderrRaw = data;
        }
      }
      const uploadStart = timestampNow();
      for (const o of outputs) {
        const full = join(wd, o.p);
        const st = await lstat(full).catch(() => undefined);
        if (st === undefined) continue;
        const path = o.p === '.' && !ctx.refuseEmptyOutputPath ? '' : o.p;
        if (st.isSymbolicLink()) {
          const target = await readlink(full);
          const link = create(OutputSymlinkSchema, { path, target });
          if (o.kind === 'file') result.outputFileSymlinks.push(link);
          else if (o.kind === 'dir') result.outputDirectorySymlinks.push(link);
          else result.outputSymlinks.push(link);
        } else if (st.isFile() && o.kind !== 'dir') {
          const put = await cas.adoptFile(full);
          if (!put.ok) return fail(status.RESOURCE_EXHAUSTED, put.message);
          result.outputFiles.push(
            create(OutputFileSchema, {
              path,
              digest: put.digest,
              isExecutable: (st.mode & 0o100) !== 0,
            }),
          );
        } else if (st.isDirectory() && o.kind !== 'file') {
          const captured = await captureTree(cas, full);
          if (captured.problem) return fail(status.RESOURCE_EXHAUSTED, captured.problem);
          const put = await cas.put(encodeMessage(TreeSchema, captured.tree).bytes);
          if (!put.ok) return fail(status.RESOURCE_EXHAUSTED, put.message);
          result.outputDirectories.push(
            create(OutputDirectorySchema, { path, treeDigest: put.digest }),
          );
        }
      }
      result.exitCode = outcome.reason === 'exited' ? outcome.exitCode : 128 + 9;
      result.executionMetadata = create(ExecutedActionMetadataSchema, {
        worker,
        queuedTimestamp: queued,
        workerStartTimestamp: workerStart,
        inputFetchStartTimestamp: workerStart,
        inputFetchCompletedTimestamp: inputsFetched,
        executionStartTimestamp: inputsFetched,
        executionCompletedTimestamp: executed,
        outputUploadStartTimestamp: uploadStart,
        outputUploadCompletedTimestamp: timestampNow(),
        workerCompletedTimestamp: timestampNow(),
      });
      if (outcome.reason === 'timeout') {
        return fail(
          status.DEADLINE_EXCEEDED,
          `the action ran over its ${timeoutMs} ms timeout and was killed`,
          result,
        );
      }
      if (result.exitCode === 0 && !action.doNotCache) remember(actionDigest, result);
      return create(ExecuteResponseSchema, { result, status: statusOf(status.OK, '') });
    } finally {
      slot.release();
      await ctx.jobDirs.give(dir).catch(() => removeTree(dir));
    }
  };

  const execution = {
    execute: (call: ServerWritableStream<ExecuteRequest, unknown>) => {
      if (!authorized(call.metadata)) return call.emit('error', denied());
      if (closing)
        return call.emit(
          'error',
          rpcError(status.UNAVAILABLE, 'rakeserver is shutting down: retry on another server'),
        );
      const req = call.request;
      let actionDigest: Digest;
      try {
        checkFunction(req.digestFunction);
        actionDigest = checkDigest(req.actionDigest, 'Execute');
      } catch (err) {
        return call.emit('error', asRpcError(err, log));
      }
      const name = `operations/${randomUUID()}`;
      const exec: RunningExecution = {
        name,
        latest: create(OperationSchema, { name }),
        watchers: new Set(),
        abort: new AbortController(),
      };
      exec.latest = stageOp(exec, actionDigest, ExecutionStage_Value.QUEUED);
      executions.set(name, exec);
      follow(exec, call);
      ctx.manage(1);
      const started = performance.now();
      const job = runAction(exec, req, actionDigest)
        .catch((err: unknown) => {
          log.error({ err, operation: name }, 'action failed inside the server');
          return create(ExecuteResponseSchema, {
            status: statusOf(
              status.INTERNAL,
              `rakeserver failed running the action: ${String(err)}`,
            ),
          });
        })
        .then((response) => {
          ctx.manage(-1);
          log.info(
            {
              operation: name,
              action: digestKey(actionDigest),
              exitCode: response.result?.exitCode,
              status: response.status?.code ?? 0,
              cached: response.cachedResult,
              ms: Math.round(performance.now() - started),
            },
            'action done',
          );
          publish(exec, doneOp(exec, actionDigest, response));
        });
      running.add(job);
      void job.finally(() => running.delete(job));
    },
    waitExecution: (
      call: ServerWritableStream<
        MessageShape<typeof Execution.method.waitExecution.input>,
        unknown
      >,
    ) => {
      if (!authorized(call.metadata)) return call.emit('error', denied());
      const exec = executions.get(call.request.name);
      if (exec === undefined) {
        return call.emit(
          'error',
          rpcError(
            status.NOT_FOUND,
            `no operation "${call.request.name}" on this server (finished long ago, or the server restarted): execute the action again`,
          ),
        );
      }
      follow(exec, call);
    },
  };

  const operations = {
    getOperation: unary(async (req: MessageShape<typeof Operations.method.getOperation.input>) => {
      const exec = executions.get(req.name);
      if (exec === undefined)
        throw rpcError(status.NOT_FOUND, `no operation "${req.name}" on this server`);
      return exec.latest;
    }),
    cancelOperation: unary(
      async (req: MessageShape<typeof Operations.method.cancelOperation.input>) => {
        const exec = executions.get(req.name);
        if (exec === undefined)
          throw rpcError(status.NOT_FOUND, `no operation "${req.name}" on this server`);
        exec.abort.abort();
        return {};
      },
    ),
  };

  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  const add = (service: Parameters<typeof serviceDefinition>[0], impl: Record<string, unknown>) =>
    server.addService(serviceDefinition(service), impl as Record<string, UntypedHandleCall>);
  add(Capabilities, capabilities);
  add(ContentAddressableStorage, casService);
  add(ByteStream, byteStream);
  add(ActionCache, actionCacheService);
  add(Execution, execution);
  add(Operations, operations);

  const port = await new Promise<number>((ok, fail) => {
    const address = listen.host.includes(':')
      ? `[${listen.host}]:${listen.port}`
      : `${listen.host}:${listen.port}`;
    server.bindAsync(
      address,
      listen.credentials ?? ServerCredentials.createInsecure(),
      (err, bound) =>
        err ? fail(new Error(`REAPI: cannot listen on ${address}: ${err.message}`)) : ok(bound),
    );
  });
  log.info({ host: listen.host, port, casBytes: ctx.casBytes }, 'REAPI listening');

  return {
    port,
    cas,
    actionCacheSize: () => actionCache.size,
    async close() {
      closing = true;
      for (const exec of executions.values()) if (!exec.latest.done) exec.abort.abort();
      await Promise.all(running);
      await new Promise<void>((ok) => {
        server.tryShutdown(() => ok());
        setTimeout(() => {
          server.forceShutdown();
          ok();
        }, 2000).unref();
      });
    },
  };
}

/** An error as grpc-js sends it: ours as they are, anything else as INTERNAL. */
function asRpcError(err: unknown, log: Logger): Error {
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'number') return err;
  log.error({ err }, 'REAPI handler failed');
  return rpcError(
    status.INTERNAL,
    `rakeserver: ${err instanceof Error ? err.message : String(err)}`,
  );
}

/** A POSIX shell word for `s`. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The `/bin/sh -c` script that runs a Command exactly: its working directory, its
 * environment variables on top of the server's, then `exec` of its argument vector (no
 * shell parsing of the arguments themselves).
 */
export function shellScript(command: Command): string | { problem: string } {
  if (command.arguments.length === 0) return { problem: 'the command has no arguments' };
  const wd = command.workingDirectory;
  const problem = pathProblem(wd, true);
  if (problem) return { problem: `working_directory: ${problem}` };
  const parts: string[] = [];
  if (wd !== '' && wd !== '.') parts.push(`cd ${shellQuote(wd)} || exit 127`);
  for (const v of command.environmentVariables) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(v.name)) {
      return { problem: `environment variable name "${v.name}" is not a portable shell name` };
    }
    parts.push(`export ${v.name}=${shellQuote(v.value)}`);
  }
  parts.push(`exec ${command.arguments.map(shellQuote).join(' ')}`);
  return parts.join('\n');
}
