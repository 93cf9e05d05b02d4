// rakeserver --reapi-port: REAPI v2 over real gRPC on loopback, jobs as real processes, the
// example C project's files as inputs. The client side is src/reapi/client.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fromBinary } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { status } from '@grpc/grpc-js';
import { isServiceError, parseExecutor, ReapiClient } from '../../src/reapi/client.js';
import { digestOf } from '../../src/reapi/digest.js';
import {
  ExecutionStage_Value,
  TreeSchema,
} from '../../src/reapi/gen/build/bazel/remote/execution/v2/remote_execution_pb.js';
import { PreconditionFailureSchema } from '../../src/reapi/gen/google/rpc/status_pb.js';
import { type BuiltAction, buildAction } from '../../src/reapi/inputs.js';
import { type ServerHandle, serve } from '../../src/server/server.js';
import { waitUntil } from '../helpers/wait.js';

const example = new URL('../../examples/hello-c/', import.meta.url).pathname;
const T = { timeout: 60_000 };

let server: ServerHandle;
let client: ReapiClient;
let scratch: string;

function target(port: number) {
  const t = parseExecutor(`grpc://127.0.0.1:${port}`);
  assert.ok(!('problem' in t));
  return t;
}

/** Uploads what the farm is missing of an action, as rake-ts does. */
async function send(c: ReapiClient, built: BuiltAction): Promise<number> {
  const missing = await c.findMissing([...built.blobs.values()].map((b) => b.digest));
  const byKey = new Map(
    [...built.blobs.values()].map((b) => [`${b.digest.hash}/${b.digest.sizeBytes}`, b]),
  );
  await c.upload(
    missing.map((d) => byKey.get(`${d.hash}/${d.sizeBytes}`)).filter((b) => b !== undefined),
  );
  return missing.length;
}

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'rake-reapi-'));
  server = await serve({ port: 0, reapiPort: 0, maxJobs: 2 });
  assert.ok(server.reapiPort);
  client = new ReapiClient(target(server.reapiPort));
});
after(async () => {
  client.close();
  await server.close({ graceSeconds: 1 });
  await rm(scratch, { recursive: true, force: true });
});

describe('rakeserver --reapi-port', T, () => {
  it('says it does SHA-256 and remote execution, REAPI 2.0', async () => {
    const caps = await client.capabilities();
    assert.deepEqual(caps.cacheCapabilities?.digestFunctions, [1]);
    assert.equal(caps.executionCapabilities?.execEnabled, true);
    assert.equal(caps.highApiVersion?.major, 2);
  });

  it('compiles an example source file: the .o comes back in the output tree, inputs too', async () => {
    const built = await buildAction('cc -Wall -O2 -Iinclude -c src/stats.c', [
      { name: 'src/stats.c', path: join(example, 'src/stats.c') },
      { name: 'include/stats.h', path: join(example, 'include/stats.h') },
    ]);
    assert.ok((await send(client, built)) >= 4, 'action, command, 2 directories and 2 files');
    const stages: number[] = [];
    const res = await client.execute(built.actionDigest, {
      skipCacheLookup: true,
      onProgress: (p) => stages.push(p.stage),
    });
    assert.equal(res.status?.code ?? 0, 0, res.status?.message);
    assert.equal(res.result?.exitCode, 0);
    assert.ok(stages.includes(ExecutionStage_Value.EXECUTING));
    const dir = res.result?.outputDirectories[0];
    assert.equal(dir?.path, '');
    assert.ok(dir?.treeDigest);
    const tree = fromBinary(TreeSchema, await client.read(dir.treeDigest));
    assert.deepEqual(
      tree.root?.files.map((f) => f.name),
      ['stats.o'],
    );
    assert.deepEqual(
      tree.root?.directories.map((d) => d.name),
      ['include', 'src'],
    );
    const obj = tree.root?.files[0]?.digest;
    assert.ok(obj);
    const bytes = await client.read(obj);
    assert.equal(Buffer.from(bytes.subarray(0, 4)).toString('latin1'), '\x7fELF');
    assert.ok(res.result?.executionMetadata?.worker.startsWith('rakeserver@'));
  });

  it('reports a failing command as its exit code and stderr, not as an RPC error', async () => {
    const built = await buildAction('echo oops >&2; exit 3', []);
    await send(client, built);
    const res = await client.execute(built.actionDigest);
    assert.equal(res.status?.code ?? 0, 0);
    assert.equal(res.result?.exitCode, 3);
    assert.equal(Buffer.from(res.result?.stderrRaw ?? []).toString(), 'oops\n');
  });

  it('answers FAILED_PRECONDITION naming every blob it lacks', async () => {
    const path = join(scratch, 'never-sent.txt');
    await writeFile(path, 'not uploaded');
    const built = await buildAction('cat never-sent.txt', [{ name: 'never-sent.txt', path }]);
    const action = built.blobs.get(`${built.actionDigest.hash}/${built.actionDigest.sizeBytes}`);
    assert.ok(action);
    // Everything but the file itself.
    const file = digestOf(Buffer.from('not uploaded'));
    await client.upload([...built.blobs.values()].filter((b) => b.digest.hash !== file.hash));
    const res = await client.execute(built.actionDigest);
    assert.equal(res.status?.code, status.FAILED_PRECONDITION);
    const detail = res.status?.details[0];
    assert.ok(detail);
    const failure = anyUnpack(detail, PreconditionFailureSchema);
    assert.deepEqual(
      failure?.violations.map((v) => [v.type, v.subject]),
      [['MISSING', `blobs/${file.hash}/${file.sizeBytes}`]],
    );
  });

  it('moves a large blob over ByteStream both ways, and refuses one whose bytes lie', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 17);
    const digest = digestOf(data);
    assert.deepEqual(await client.findMissing([digest]), [digest]);
    await client.write(digest, data);
    assert.deepEqual(await client.findMissing([digest]), []);
    assert.ok(Buffer.from(await client.read(digest)).equals(data));
    const liar = digestOf(Buffer.from('something else'));
    await assert.rejects(client.write({ ...liar, sizeBytes: BigInt(data.length) }, data), (err) => {
      assert.ok(isServiceError(err));
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.match(err.details, /resend the blob/);
      return true;
    });
  });

  it('serves a repeated action from the ActionCache', async () => {
    const built = await buildAction('echo cached-$$', []);
    await send(client, built);
    const first = await client.execute(built.actionDigest);
    assert.equal(first.cachedResult, false);
    const second = await client.execute(built.actionDigest);
    assert.equal(second.cachedResult, true);
    assert.deepEqual(second.result?.stdoutDigest, first.result?.stdoutDigest);
    const hit = await client.cachedResult(built.actionDigest);
    assert.deepEqual(hit?.stdoutDigest, first.result?.stdoutDigest);
    const failing = await buildAction('exit 1', []);
    await send(client, failing);
    await client.execute(failing.actionDigest);
    assert.equal(
      await client.cachedResult(failing.actionDigest),
      undefined,
      'failures are not cached',
    );
  });

  it('kills the job when the client cancels (CancelOperation)', async () => {
    const fifo = join(scratch, 'cancel.fifo');
    execFileSync('mkfifo', [fifo]);
    const built = await buildAction(`cat ${fifo}`, []);
    await send(client, built);
    const abort = new AbortController();
    const executing = client.execute(built.actionDigest, {
      skipCacheLookup: true,
      signal: abort.signal,
      onProgress: (p) => {
        if (p.stage === ExecutionStage_Value.EXECUTING) abort.abort();
      },
    });
    await assert.rejects(executing, (err) => isServiceError(err) && err.code === status.CANCELLED);
    await waitUntil(() => server.cost() === 0, { what: 'the cancelled job to end', ms: 20_000 });
  });

  it('follows an operation with WaitExecution after the Execute stream breaks', async () => {
    // A loopback proxy whose connections are cut while the job runs.
    const sockets = new Set<Socket>();
    const relay = createServer((down) => {
      const up = connect(server.reapiPort as number, '127.0.0.1');
      sockets.add(down).add(up);
      down.pipe(up).pipe(down);
      const drop = () => {
        down.destroy();
        up.destroy();
      };
      down.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
    });
    await new Promise<void>((ok) => relay.listen(0, '127.0.0.1', ok));
    const port = (relay.address() as { port: number }).port;
    const viaRelay = new ReapiClient(target(port));
    const fifo = join(scratch, 'wait.fifo');
    execFileSync('mkfifo', [fifo]);
    const built = await buildAction(`cat ${fifo}`, []);
    await send(viaRelay, built);
    let cut = false;
    const result = viaRelay.execute(built.actionDigest, {
      skipCacheLookup: true,
      onProgress: (p) => {
        if (p.stage !== ExecutionStage_Value.EXECUTING || cut) return;
        cut = true;
        for (const s of sockets) s.destroy();
        sockets.clear();
        // The job goes on meanwhile; let it finish.
        void open(fifo, 'w').then(async (fh) => {
          await fh.write('resumed\n');
          await fh.close();
        });
      },
    });
    const res = await result;
    assert.ok(cut, 'the stream was cut');
    assert.equal(res.result?.exitCode, 0);
    assert.equal(Buffer.from(res.result?.stdoutRaw ?? []).toString(), 'resumed\n');
    viaRelay.close();
    await new Promise((ok) => relay.close(ok));
  });

  it('refuses a caller without the token when the server has one', async () => {
    const guarded = await serve({ port: 0, reapiPort: 0, token: 'sesame' });
    try {
      const port = guarded.reapiPort as number;
      const anon = new ReapiClient(target(port));
      await assert.rejects(
        anon.capabilities(),
        (err) => isServiceError(err) && err.code === status.UNAUTHENTICATED,
      );
      anon.close();
      const t = parseExecutor(`grpc://127.0.0.1:${port}`, ['Authorization: Bearer sesame']);
      assert.ok(!('problem' in t));
      const known = new ReapiClient(t);
      assert.equal((await known.capabilities()).executionCapabilities?.execEnabled, true);
      known.close();
    } finally {
      await guarded.close({ graceSeconds: 1 });
    }
  });
});
