import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import {
  type DescMessage,
  type DescMethod,
  fromBinary,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import {
  type CallOptions,
  type ChannelCredentials,
  Client,
  type ClientReadableStream,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { trackCleanup } from '../client/cleanup.js';
import { digestKey, makeDigest } from './digest.js';
import {
  ActionCache,
  type ActionResult,
  Capabilities,
  ContentAddressableStorage,
  type Digest,
  DigestFunction_Value,
  type ExecuteOperationMetadata,
  ExecuteOperationMetadataSchema,
  type ExecuteResponse,
  ExecuteResponseSchema,
  Execution,
  type ServerCapabilities,
} from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';
import { ByteStream } from './gen/google/bytestream/bytestream_pb.js';
import { type Operation, Operations } from './gen/google/longrunning/operations_pb.js';

/** Where a farm is and how to talk to it: `--executor`, `--executor-header`, `--instance-name`. */
export interface ExecutorTarget {
  /** `host:port` as gRPC dials it. */
  readonly address: string;
  /** `grpcs://`: TLS (the system's and NODE_EXTRA_CA_CERTS's roots). */
  readonly tls: boolean;
  /** Sent with every call (e.g. `authorization: Bearer …`); names lower-case. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly instanceName: string;
}

/** Why an executor URL or header is unusable, or the parsed target. */
export function parseExecutor(
  url: string,
  headers: readonly string[] = [],
  instanceName = '',
): ExecutorTarget | { problem: string } {
  const m = /^(grpcs?):\/\/(\[[0-9a-fA-F:.]+\]|[^/:[\]]+)(?::(\d+))?\/?$/.exec(url.trim());
  if (!m?.[1] || !m[2]) {
    return {
      problem: `--executor "${url}" is not grpc://HOST:PORT or grpcs://HOST:PORT (e.g. grpc://127.0.0.1:8980)`,
    };
  }
  const tls = m[1] === 'grpcs';
  const port = m[3] === undefined ? (tls ? 443 : 80) : Number(m[3]);
  if (!(port > 0 && port < 65536))
    return { problem: `--executor "${url}": port ${m[3]} is out of range` };
  const parsed: Array<[string, string]> = [];
  for (const h of headers) {
    const i = h.indexOf(':');
    const name = i > 0 ? h.slice(0, i).trim().toLowerCase() : '';
    if (!/^[a-z0-9-_.]+$/.test(name)) {
      return {
        problem: `--executor-header "${h.split(':')[0]}…" is not "NAME: VALUE" with a header name of letters, digits, - _ .`,
      };
    }
    parsed.push([name, h.slice(i + 1).trim()]);
  }
  return { address: `${m[2]}:${port}`, tls, headers: parsed, instanceName };
}

/** gRPC codes worth another try: the farm is busy, restarting, or aborted the call. */
export const TRANSIENT_CODES: ReadonlySet<number> = new Set([
  status.UNAVAILABLE,
  status.RESOURCE_EXHAUSTED,
  status.ABORTED,
]);

/** Whether an error is a gRPC status error. */
export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'number';
}

/** A gRPC failure as one line: code name, server's message, the farm's address. */
export function describeServiceError(err: unknown, address: string): string {
  if (!isServiceError(err)) return `${String(err)} (${address})`;
  return `${status[err.code] ?? err.code}: ${err.details || err.message} (${address})`;
}

/** Blob size over which uploads and downloads use ByteStream instead of a Batch call. */
export const BATCH_BLOB_LIMIT = 1024 * 1024;
const CHUNK = 64 * 1024;

/** What an Execute stream reports as it goes. */
export interface ExecuteProgress {
  readonly operation: string;
  readonly stage: ExecuteOperationMetadata['stage'];
}

/**
 * A typed REAPI v2 client over @grpc/grpc-js with our canonical codec: the calls rake-ts
 * needs, each failing with the gRPC ServiceError (status code and message) of its call.
 */
export class ReapiClient {
  readonly target: ExecutorTarget;
  readonly #client: Client;
  readonly #metadata: Metadata;
  /** Blob batches may not exceed this (from the capabilities; 4 MiB until asked). */
  maxBatchBytes = 4 * 1024 * 1024;

  constructor(target: ExecutorTarget, creds?: ChannelCredentials) {
    this.target = target;
    this.#client = new Client(
      target.address,
      creds ?? (target.tls ? credentials.createSsl(tlsRoots()) : credentials.createInsecure()),
      {
        'grpc.max_receive_message_length': 16 * 1024 * 1024,
        'grpc.max_send_message_length': 16 * 1024 * 1024,
        'grpc.keepalive_time_ms': 30_000,
      },
    );
    this.#metadata = new Metadata();
    for (const [k, v] of target.headers) this.#metadata.add(k, v);
  }

  close(): void {
    this.#client.close();
  }

  #unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethod & { input: I; output: O },
    req: MessageShape<I>,
    options: CallOptions = {},
  ): Promise<MessageShape<O>> {
    return new Promise((ok, fail) => {
      this.#client.makeUnaryRequest(
        path(method),
        (m: MessageShape<I>) => Buffer.from(toBinary(method.input, m)),
        (b: Buffer) => fromBinary(method.output, b),
        req,
        this.#metadata,
        options,
        (err, res) => (err || res === undefined ? fail(err ?? new Error('no response')) : ok(res)),
      );
    });
  }

  #serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethod & { input: I; output: O },
    req: MessageShape<I>,
  ): ClientReadableStream<MessageShape<O>> {
    return this.#client.makeServerStreamRequest(
      path(method),
      (m: MessageShape<I>) => Buffer.from(toBinary(method.input, m)),
      (b: Buffer) => fromBinary(method.output, b),
      req,
      this.#metadata,
      {},
    );
  }

  /** The farm's capabilities; checks it does SHA-256 and remote execution. */
  async capabilities(): Promise<ServerCapabilities> {
    const caps = await this.#unary(Capabilities.method.getCapabilities, {
      $typeName: 'build.bazel.remote.execution.v2.GetCapabilitiesRequest',
      instanceName: this.target.instanceName,
    });
    const fns = caps.cacheCapabilities?.digestFunctions ?? [];
    if (fns.length > 0 && !fns.includes(DigestFunction_Value.SHA256)) {
      throw Object.assign(
        new Error(
          `the farm does not offer SHA-256 digests (it offers ${fns.map((f) => DigestFunction_Value[f]).join(', ')})`,
        ),
        { code: status.FAILED_PRECONDITION, details: 'no SHA-256' },
      );
    }
    const max = Number(caps.cacheCapabilities?.maxBatchTotalSizeBytes ?? 0n);
    if (max > 0) this.maxBatchBytes = Math.min(max, 4 * 1024 * 1024);
    return caps;
  }

  /** The blobs among `digests` the farm does not hold. */
  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    if (digests.length === 0) return [];
    const res = await this.#unary(ContentAddressableStorage.method.findMissingBlobs, {
      $typeName: 'build.bazel.remote.execution.v2.FindMissingBlobsRequest',
      instanceName: this.target.instanceName,
      blobDigests: [...digests],
      digestFunction: DigestFunction_Value.SHA256,
    });
    return res.missingBlobDigests;
  }

  /**
   * Uploads blobs: small ones in BatchUpdateBlobs calls within the batch limit, large ones
   * (over {@link BATCH_BLOB_LIMIT}) by ByteStream Write. `read` gives a blob's bytes.
   */
  async upload(
    blobs: ReadonlyArray<{ digest: Digest; read: () => Promise<Uint8Array> }>,
  ): Promise<void> {
    let batch: Array<{ digest: Digest; data: Uint8Array }> = [];
    let batchBytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const res = await this.#unary(ContentAddressableStorage.method.batchUpdateBlobs, {
        $typeName: 'build.bazel.remote.execution.v2.BatchUpdateBlobsRequest',
        instanceName: this.target.instanceName,
        requests: batch.map((b) => ({
          $typeName: 'build.bazel.remote.execution.v2.BatchUpdateBlobsRequest.Request' as const,
          digest: b.digest,
          data: b.data,
          compressor: 0,
        })),
        digestFunction: DigestFunction_Value.SHA256,
      });
      for (const r of res.responses) {
        if (r.status && r.status.code !== status.OK) {
          throw Object.assign(new Error(r.status.message), {
            code: r.status.code,
            details: `uploading ${r.digest ? digestKey(r.digest) : 'a blob'}: ${r.status.message}`,
          });
        }
      }
      batch = [];
      batchBytes = 0;
    };
    const limit = Math.min(BATCH_BLOB_LIMIT, this.maxBatchBytes - 64 * 1024);
    for (const b of blobs) {
      const size = Number(b.digest.sizeBytes);
      if (size > limit) {
        await this.write(b.digest, await b.read());
        continue;
      }
      if (batchBytes + size > limit) await flush();
      batch.push({ digest: b.digest, data: await b.read() });
      batchBytes += size + 80;
    }
    await flush();
  }

  /** ByteStream Write of one blob, in 64 KiB chunks. */
  write(digest: Digest, data: Uint8Array): Promise<void> {
    const prefix = this.target.instanceName === '' ? '' : `${this.target.instanceName}/`;
    const resourceName = `${prefix}uploads/${randomUUID()}/blobs/${digest.hash}/${digest.sizeBytes}`;
    return new Promise((ok, fail) => {
      const method = ByteStream.method.write;
      const call = this.#client.makeClientStreamRequest(
        path(method),
        (m: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, m)),
        (b: Buffer) => fromBinary(method.output, b),
        this.#metadata,
        {},
        (err, res) => {
          if (err) return fail(err);
          if (res === undefined || res.committedSize !== digest.sizeBytes) {
            return fail(
              new Error(
                `ByteStream Write of ${digestKey(digest)} committed ${res?.committedSize} bytes`,
              ),
            );
          }
          ok();
        },
      );
      const send = async () => {
        let offset = 0;
        do {
          const chunk = data.subarray(offset, offset + CHUNK);
          const more = call.write({
            $typeName: 'google.bytestream.WriteRequest',
            resourceName: offset === 0 ? resourceName : '',
            writeOffset: BigInt(offset),
            finishWrite: offset + chunk.length >= data.length,
            data: chunk,
          });
          offset += chunk.length;
          if (!more) await new Promise((r) => call.once('drain', r));
        } while (offset < data.length);
        call.end();
      };
      send().catch(fail);
    });
  }

  /** A blob's bytes: BatchReadBlobs for small ones, ByteStream Read for large ones. */
  async read(digest: Digest): Promise<Uint8Array> {
    if (digest.sizeBytes === 0n) return new Uint8Array(0);
    if (digest.sizeBytes > BigInt(BATCH_BLOB_LIMIT)) return this.#streamRead(digest);
    const res = await this.#unary(ContentAddressableStorage.method.batchReadBlobs, {
      $typeName: 'build.bazel.remote.execution.v2.BatchReadBlobsRequest',
      instanceName: this.target.instanceName,
      digests: [digest],
      acceptableCompressors: [],
      digestFunction: DigestFunction_Value.SHA256,
    });
    const r = res.responses[0];
    if (r === undefined || (r.status && r.status.code !== status.OK)) {
      throw Object.assign(new Error(r?.status?.message ?? 'no response'), {
        code: r?.status?.code ?? status.INTERNAL,
        details: `reading ${digestKey(digest)}: ${r?.status?.message ?? 'no response'}`,
      });
    }
    return r.data;
  }

  #streamRead(digest: Digest): Promise<Uint8Array> {
    const prefix = this.target.instanceName === '' ? '' : `${this.target.instanceName}/`;
    const stream = this.#serverStream(ByteStream.method.read, {
      $typeName: 'google.bytestream.ReadRequest',
      resourceName: `${prefix}blobs/${digest.hash}/${digest.sizeBytes}`,
      readOffset: 0n,
      readLimit: 0n,
    });
    return new Promise((ok, fail) => {
      const parts: Uint8Array[] = [];
      stream.on('data', (r: { data: Uint8Array }) => parts.push(r.data));
      stream.on('error', fail);
      stream.on('end', () => ok(Buffer.concat(parts)));
    });
  }

  /** The ActionCache's result for an action, or undefined on a miss. */
  async cachedResult(actionDigest: Digest): Promise<ActionResult | undefined> {
    try {
      return await this.#unary(ActionCache.method.getActionResult, {
        $typeName: 'build.bazel.remote.execution.v2.GetActionResultRequest',
        instanceName: this.target.instanceName,
        actionDigest,
        inlineStdout: true,
        inlineStderr: true,
        inlineOutputFiles: [],
        digestFunction: DigestFunction_Value.SHA256,
      });
    } catch (err) {
      if (isServiceError(err) && err.code === status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  /**
   * Executes an action and resolves its ExecuteResponse. The Execute stream's operation
   * name is kept; when the stream breaks before the operation is done, WaitExecution
   * follows it on (up to `resumes` times). `signal` cancels: the call is dropped and
   * CancelOperation sent, so the farm kills the job.
   */
  execute(
    actionDigest: Digest,
    options: {
      skipCacheLookup?: boolean;
      signal?: AbortSignal;
      onProgress?: (p: ExecuteProgress) => void;
      resumes?: number;
    } = {},
  ): Promise<ExecuteResponse> {
    let name: string | undefined;
    let resumesLeft = options.resumes ?? 3;
    const follow = (stream: ClientReadableStream<Operation>): Promise<ExecuteResponse> =>
      new Promise((ok, fail) => {
        let settled = false;
        const onAbort = () => {
          stream.cancel();
          // Awaited by whenSettled(): a CLI exiting on Ctrl-C still sends it.
          if (name !== undefined) trackCleanup(this.cancel(name));
          finish(() =>
            fail(
              Object.assign(new Error('cancelled'), {
                code: status.CANCELLED,
                details: 'cancelled by rake-ts',
              }),
            ),
          );
        };
        const finish = (f: () => void) => {
          if (settled) return;
          settled = true;
          options.signal?.removeEventListener('abort', onAbort);
          f();
        };
        // The stream broke or ended before the operation was done: follow it by name.
        const resume = (operation: string) => {
          resumesLeft--;
          finish(() =>
            follow(
              this.#serverStream(Execution.method.waitExecution, {
                $typeName: 'build.bazel.remote.execution.v2.WaitExecutionRequest',
                name: operation,
              }),
            ).then(ok, fail),
          );
        };
        options.signal?.addEventListener('abort', onAbort, { once: true });
        stream.on('data', (op: Operation) => {
          name = op.name || name;
          const meta = op.metadata
            ? anyUnpack(op.metadata, ExecuteOperationMetadataSchema)
            : undefined;
          if (meta && name !== undefined)
            options.onProgress?.({ operation: name, stage: meta.stage });
          if (!op.done) return;
          if (op.result.case === 'error') {
            const e = op.result.value;
            return finish(() =>
              fail(Object.assign(new Error(e.message), { code: e.code, details: e.message })),
            );
          }
          const response =
            op.result.case === 'response'
              ? anyUnpack(op.result.value, ExecuteResponseSchema)
              : undefined;
          if (response === undefined) {
            return finish(() =>
              fail(
                Object.assign(new Error('operation done without an ExecuteResponse'), {
                  code: status.INTERNAL,
                  details: 'operation done without an ExecuteResponse',
                }),
              ),
            );
          }
          finish(() => ok(response));
        });
        stream.on('error', (err: ServiceError) => {
          if (settled) return;
          const resumable =
            name !== undefined &&
            resumesLeft > 0 &&
            err.code !== status.CANCELLED &&
            err.code !== status.NOT_FOUND &&
            !options.signal?.aborted;
          if (resumable && name !== undefined) {
            return resume(name);
          }
          finish(() => fail(err));
        });
        stream.on('end', () => {
          if (settled) return;
          if (name !== undefined && resumesLeft > 0) {
            return resume(name);
          }
          finish(() =>
            fail(
              Object.assign(new Error('the Execute stream ended before the operation was done'), {
                code: status.UNAVAILABLE,
                details: 'the Execute stream ended before the operation was done',
              }),
            ),
          );
        });
      });
    if (options.signal?.aborted) {
      return Promise.reject(
        Object.assign(new Error('cancelled'), {
          code: status.CANCELLED,
          details: 'cancelled by rake-ts',
        }),
      );
    }
    return follow(
      this.#serverStream(Execution.method.execute, {
        $typeName: 'build.bazel.remote.execution.v2.ExecuteRequest',
        instanceName: this.target.instanceName,
        skipCacheLookup: options.skipCacheLookup ?? false,
        actionDigest,
        digestFunction: DigestFunction_Value.SHA256,
      }),
    );
  }

  /** Asks the farm to stop an operation. */
  async cancel(name: string): Promise<void> {
    await this.#unary(Operations.method.cancelOperation, {
      $typeName: 'google.longrunning.CancelOperationRequest',
      name,
    });
  }
}

/**
 * The roots a `grpcs://` farm's certificate is checked against: Node's bundled ones plus the
 * file NODE_EXTRA_CA_CERTS names (grpc-js's own default leaves that file out). Null = grpc-js's
 * default.
 */
function tlsRoots(): Buffer | null {
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (!extra) return null;
  try {
    return Buffer.from([...rootCertificates, readFileSync(extra, 'utf8')].join('\n'));
  } catch {
    return null;
  }
}

function path(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** A digest by its parts (re-exported for callers that name blobs). */
export { makeDigest };
