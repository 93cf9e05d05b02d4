import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { durationFromMs } from '@bufbuild/protobuf/wkt';
import { digestKey, encodeMessage, makeDigest } from './digest.js';
import {
  ActionSchema,
  CommandSchema,
  type Digest,
  type Directory,
  DirectoryNodeSchema,
  DirectorySchema,
  FileNodeSchema,
} from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';

/** A blob the farm may need: its digest and how to get its bytes. */
export interface Blob {
  readonly digest: Digest;
  read(): Promise<Uint8Array>;
}

/** A local file under the name it has in the input root (`/`-separated, relative). */
export interface InputFile {
  readonly name: string;
  readonly path: string;
}

/** An action's input root: its digest, every blob it is made of, and each file's digest by name. */
export interface InputRoot {
  readonly digest: Digest;
  readonly blobs: ReadonlyMap<string, Blob>;
  /** name → digest of each input file, to tell outputs from unchanged inputs. */
  readonly files: ReadonlyMap<string, Digest>;
}

/**
 * Hashes of files already read in this run, by path, size and modification time: a file
 * is read and hashed once, and again only if it changed (an output of one actionset that a
 * later one requires).
 */
export type HashCache = Map<string, Promise<{ digest: Digest; executable: boolean }>>;

async function hashLocal(
  path: string,
  cache: HashCache,
): Promise<{ digest: Digest; executable: boolean }> {
  const st = await stat(path, { bigint: true });
  const key = `${path}\0${st.size}\0${st.mtimeNs}\0${st.ino}`;
  let p = cache.get(key);
  if (p === undefined) {
    p = readFile(path).then((data) => ({
      digest: makeDigest(createHash('sha256').update(data).digest('hex'), data.length),
      executable: (Number(st.mode) & 0o100) !== 0,
    }));
    cache.set(key, p);
  }
  return p;
}

interface DirBuild {
  files: Map<string, { digest: Digest; executable: boolean }>;
  dirs: Map<string, DirBuild>;
}

/**
 * The Directory tree of `files`, in the spec's canonical form: entries sorted by name, each
 * Directory encoded canonically (so `is_executable: false` is never written). Names were
 * checked by the requirements step (relative, no `..`).
 */
export async function buildInputRoot(
  files: readonly InputFile[],
  cache: HashCache = new Map(),
): Promise<InputRoot> {
  const root: DirBuild = { files: new Map(), dirs: new Map() };
  const blobs = new Map<string, Blob>();
  const byName = new Map<string, Digest>();
  const hashed = await Promise.all(files.map((f) => hashLocal(f.path, cache)));
  files.forEach((f, i) => {
    const h = hashed[i];
    if (h === undefined) return;
    const parts = f.name.split('/');
    const base = parts.pop() ?? f.name;
    let dir = root;
    for (const p of parts) {
      let next = dir.dirs.get(p);
      if (next === undefined) {
        next = { files: new Map(), dirs: new Map() };
        dir.dirs.set(p, next);
      }
      dir = next;
    }
    dir.files.set(base, h);
    byName.set(f.name, h.digest);
    blobs.set(digestKey(h.digest), { digest: h.digest, read: () => readFile(f.path) });
  });
  const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  const encode = (d: DirBuild): Digest => {
    const msg: Directory = create(DirectorySchema, {
      files: [...d.files.keys()].sort(byteOrder).map((name) => {
        const f = d.files.get(name);
        return create(FileNodeSchema, {
          name,
          digest: f?.digest,
          isExecutable: f?.executable ?? false,
        });
      }),
      directories: [...d.dirs.keys()]
        .sort(byteOrder)
        .map((name) =>
          create(DirectoryNodeSchema, { name, digest: encode(d.dirs.get(name) as DirBuild) }),
        ),
    });
    const { bytes, digest } = encodeMessage(DirectorySchema, msg);
    blobs.set(digestKey(digest), { digest, read: async () => bytes });
    return digest;
  };
  return { digest: encode(root), blobs, files: byName };
}

/** What an action is made of, in REAPI terms: the Action's digest and every blob it needs. */
export interface BuiltAction {
  readonly actionDigest: Digest;
  readonly blobs: ReadonlyMap<string, Blob>;
  readonly inputs: InputRoot;
}

/**
 * A rake action as a REAPI Action: `/bin/sh -c <command>` in the input root (the
 * `requires` files), capturing the whole working directory (`output_directories: [""]`:
 * rake's "every new or changed file comes back"), on the given platform properties.
 */
export async function buildAction(
  command: string,
  files: readonly InputFile[],
  options: {
    platform?: ReadonlyArray<readonly [string, string]>;
    timeoutMs?: number;
    doNotCache?: boolean;
    cache?: HashCache;
    /**
     * How the working directory is named as the output directory: `""` (default, what the
     * spec says) or `"."`, for a farm that refuses `""` (docs/remote-execution.md).
     */
    outputRoot?: '' | '.';
  } = {},
): Promise<BuiltAction> {
  const inputs = await buildInputRoot(files, options.cache);
  const properties = [...(options.platform ?? [])]
    .map(([name, value]) => ({ name, value }))
    .sort((a, b) => (a.name === b.name ? (a.value < b.value ? -1 : 1) : a.name < b.name ? -1 : 1));
  const platform = properties.length > 0 ? { properties } : undefined;
  const cmd = encodeMessage(
    CommandSchema,
    create(CommandSchema, {
      arguments: ['/bin/sh', '-c', command],
      outputDirectories: [options.outputRoot ?? ''],
      ...(platform ? { platform } : {}),
    }),
  );
  const action = encodeMessage(
    ActionSchema,
    create(ActionSchema, {
      commandDigest: cmd.digest,
      inputRootDigest: inputs.digest,
      ...(options.timeoutMs ? { timeout: durationFromMs(options.timeoutMs) } : {}),
      doNotCache: options.doNotCache ?? false,
      ...(platform ? { platform } : {}),
    }),
  );
  const blobs = new Map(inputs.blobs);
  blobs.set(digestKey(cmd.digest), { digest: cmd.digest, read: async () => cmd.bytes });
  blobs.set(digestKey(action.digest), { digest: action.digest, read: async () => action.bytes });
  return { actionDigest: action.digest, blobs, inputs };
}
