import { lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { create, fromBinary } from '@bufbuild/protobuf';
import type { Cas } from './cas.js';
import { digestKey, digestProblem, encodeMessage } from './digest.js';
import {
  type Digest,
  type Directory,
  DirectoryNodeSchema,
  DirectorySchema,
  FileNodeSchema,
  SymlinkNodeSchema,
  type Tree,
  TreeSchema,
} from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';

/** Why a name in a Directory or an output path is unsafe, or undefined when it is fine. */
export function nameProblem(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return `name "${name}" is not allowed`;
  if (name.includes('/')) return `name "${name}" contains "/"`;
  if (name.includes('\0')) return 'name contains NUL';
  return undefined;
}

/**
 * Why a relative path (an output path, a working directory) is unsafe, or undefined. `''`
 * (the working directory itself) is allowed where `allowEmpty` says so.
 */
export function pathProblem(path: string, allowEmpty: boolean): string | undefined {
  if (path === '' || path === '.') return allowEmpty ? undefined : 'empty path';
  if (path.startsWith('/')) return `path "${path}" is absolute`;
  for (const part of path.split('/')) {
    if (part === '..' || part === '' || part.includes('\0')) {
      return `path "${path}" has a "${part}" component`;
    }
  }
  return undefined;
}

/** An input tree, fetched and checked, ready to be laid out in a job directory. */
export interface InputTree {
  readonly dirs: readonly string[];
  readonly files: ReadonlyArray<{ path: string; digest: Digest; executable: boolean }>;
  readonly symlinks: ReadonlyArray<{ path: string; target: string }>;
}

/** Fetching an input tree: the tree, the blobs missing from the store, or a bad tree. */
export type FetchedTree =
  | { readonly ok: true; readonly tree: InputTree }
  | { readonly ok: false; readonly missing: readonly Digest[] }
  | { readonly ok: false; readonly missing?: undefined; readonly invalid: string };

/**
 * Reads the Directory messages of an input root from the store, checking every name (no
 * `/`, `..` or NUL: nothing can land outside the job directory) and every symlink (relative
 * targets that stay inside the tree). Reports every missing blob at once.
 */
export async function fetchInputTree(cas: Cas, root: Digest): Promise<FetchedTree> {
  const dirs: string[] = [];
  const files: Array<{ path: string; digest: Digest; executable: boolean }> = [];
  const symlinks: Array<{ path: string; target: string }> = [];
  const missing = new Map<string, Digest>();
  const decoded = new Map<string, Directory>();
  const pending: Array<{ path: string; digest: Digest }> = [{ path: '', digest: root }];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { path, digest } = next;
    const bad = digestProblem(digest);
    if (bad) return { ok: false, invalid: `input directory "${path || '.'}": ${bad}` };
    let dir = decoded.get(digestKey(digest));
    if (dir === undefined) {
      const bytes = await cas.read(digest);
      if (bytes === undefined) {
        missing.set(digestKey(digest), digest);
        continue;
      }
      try {
        dir = fromBinary(DirectorySchema, bytes);
      } catch (err) {
        return {
          ok: false,
          invalid: `input directory "${path || '.'}" is not a Directory: ${String(err)}`,
        };
      }
      decoded.set(digestKey(digest), dir);
    }
    const seen = new Set<string>();
    const at = (name: string) => (path === '' ? name : `${path}/${name}`);
    for (const node of [...dir.files, ...dir.directories, ...dir.symlinks]) {
      const problem = nameProblem(node.name);
      if (problem) return { ok: false, invalid: `input directory "${path || '.'}": ${problem}` };
      if (seen.has(node.name)) {
        return {
          ok: false,
          invalid: `input directory "${path || '.'}" names "${node.name}" twice`,
        };
      }
      seen.add(node.name);
    }
    for (const f of dir.files) {
      const fileBad = digestProblem(f.digest);
      if (fileBad || f.digest === undefined) {
        return { ok: false, invalid: `input file "${at(f.name)}": ${fileBad}` };
      }
      if (!cas.has(f.digest)) missing.set(digestKey(f.digest), f.digest);
      files.push({ path: at(f.name), digest: f.digest, executable: f.isExecutable });
    }
    for (const d of dir.directories) {
      if (d.digest === undefined)
        return { ok: false, invalid: `input directory "${at(d.name)}" has no digest` };
      dirs.push(at(d.name));
      pending.push({ path: at(d.name), digest: d.digest });
    }
    for (const s of dir.symlinks) {
      const depth = path === '' ? 0 : path.split('/').length;
      if (s.target.startsWith('/') || escapes(s.target, depth)) {
        return {
          ok: false,
          invalid: `input symlink "${at(s.name)}" -> "${s.target}" points outside the input root`,
        };
      }
      symlinks.push({ path: at(s.name), target: s.target });
    }
  }
  if (missing.size > 0) return { ok: false, missing: [...missing.values()] };
  return { ok: true, tree: { dirs, files, symlinks } };
}

/** Whether a relative symlink target, followed from `depth` levels down, leaves the root. */
function escapes(target: string, depth: number): boolean {
  let level = depth;
  for (const part of target.split('/')) {
    if (part === '..') level--;
    else if (part !== '' && part !== '.') level++;
    if (level < 0) return true;
  }
  return false;
}

/** Lays an input tree out under `root` (copies, never links into the store). */
export async function materialize(
  cas: Cas,
  tree: InputTree,
  root: string,
): Promise<string | undefined> {
  for (const d of tree.dirs) await mkdir(join(root, d), { recursive: true });
  for (const f of tree.files) {
    if (!(await cas.copyOut(f.digest, join(root, f.path), f.executable))) {
      return `input file "${f.path}" (${digestKey(f.digest)}) left the store while the job was set up`;
    }
  }
  for (const s of tree.symlinks) await symlink(s.target, join(root, s.path));
  return undefined;
}

/**
 * An output directory as a Tree: its files moved into the store, Directory messages in the
 * spec's canonical form (entries sorted by name). Returns the Tree and its encoded bytes.
 */
export async function captureTree(
  cas: Cas,
  dir: string,
): Promise<{ tree: Tree; problem?: string }> {
  const children = new Map<string, Directory>();
  const visit = async (path: string): Promise<{ dir: Directory; digest: Digest } | string> => {
    const entries = (await readdir(path, { withFileTypes: true })).sort((a, b) =>
      Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)),
    );
    const out = create(DirectorySchema, {});
    for (const e of entries) {
      const full = join(path, e.name);
      const st = await lstat(full);
      if (st.isFile()) {
        const put = await cas.adoptFile(full);
        if (!put.ok) return put.message;
        out.files.push(
          create(FileNodeSchema, {
            name: e.name,
            digest: put.digest,
            isExecutable: (st.mode & 0o100) !== 0,
          }),
        );
      } else if (st.isDirectory()) {
        const sub = await visit(full);
        if (typeof sub === 'string') return sub;
        children.set(digestKey(sub.digest), sub.dir);
        out.directories.push(create(DirectoryNodeSchema, { name: e.name, digest: sub.digest }));
      } else if (st.isSymbolicLink()) {
        out.symlinks.push(
          create(SymlinkNodeSchema, { name: e.name, target: await readlink(full) }),
        );
      }
    }
    return { dir: out, digest: encodeMessage(DirectorySchema, out).digest };
  };
  const root = await visit(dir);
  if (typeof root === 'string') return { tree: create(TreeSchema, {}), problem: root };
  return { tree: create(TreeSchema, { root: root.dir, children: [...children.values()] }) };
}
