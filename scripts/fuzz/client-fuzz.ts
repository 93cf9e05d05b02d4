/**
 * A fuzzer over the client's input: what a hostile server sends back (docs/reliability.md).
 * Each session runs the real engine, `run()` from src/client, on a one-action Rakefile
 * against a fake server on loopback that answers the cost poll (mostly correctly, sometimes
 * with garbage or silence) and then answers the job with a generated reply: a valid one
 * from PROTOCOL.md (stdout, failure, output files), a mutation of it (hostile names such as
 * `../../etc/x`, absolute names, NUL, names through a symlink the project holds, a name that
 * is a directory, wrong sizes, truncations, bad headers, huge lengths), or random bytes.
 * A third of the sessions speak extension mode instead (docs/protocol.md): a rake/1 cost
 * reply, then `!X ok` with some of `stderr,mode,cache,push,beat` granted, `!X need`, `!M`
 * questions and answers, `!X beat` heartbeats, `!X stderr`, valid or mutated in the same ways.
 *
 * Checked after every session: the Observable completed with `done` and exactly one
 * `action-succeeded` or `action-failed` (with a reason) within a bound — no hang, no error,
 * no uncaught exception; nothing changed outside the project directory (a sentinel
 * directory and a precious file, both reachable through symlinks in the project, are
 * untouched); no temporary file is left; every file the event lists exists inside the
 * project; the client closed every connection it opened. Valid replies must give exactly
 * the expected outcome. Every name that could resolve anywhere stays inside this run's own
 * temporary directory.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { firstValueFrom, type Observable, timeout, toArray } from 'rxjs';
import { parseRakefile } from '../../grammar/parse.js';
import type { RakeEvent } from '../../src/client/events.js';
import { run } from '../../src/client/run.js';
import { count, diffTrees, type Finding, preview, snapshotTree, waitFor } from './common.js';
import {
  applyMutations,
  download,
  filestream,
  header,
  type Mutation,
  OPS,
  type Piece,
  packet,
  pick,
} from './transcript.js';

/** Options of {@link fuzzClient}. */
export interface ClientFuzzOptions {
  readonly sessions: number;
  readonly seed: number;
  /** Sessions in flight at once, each with its own fake server (default 4). */
  readonly concurrency?: number;
  readonly timeLimitMs?: number;
  readonly log?: (line: string) => void;
}

/** What a client fuzz run did and found. */
export interface ClientFuzzReport {
  readonly seed: number;
  readonly sessions: number;
  readonly ms: number;
  readonly generators: Record<string, number>;
  /** How the action ended: `succeeded` or `failed:<reason>`. */
  readonly results: Record<string, number>;
  /** Valid replies whose outcome matched exactly. */
  readonly exactOutcomes: number;
  /** Longest session, in ms (the bound is {@link SESSION_BOUND_MS}). */
  readonly slowestMs: number;
  readonly findings: readonly Finding[];
}

/** How the fake server ends the job connection after its reply. */
type Ending = 'linger' | 'close' | 'reset' | 'trickle';

interface Session {
  readonly generator: 'valid' | 'mutated' | 'random' | 'cost' | 'extended' | 'extended-mutated';
  readonly label: string;
  /** Reply to each cost query (the connection is closed after it, or held when `hold`). */
  readonly cost: Buffer | 'hold';
  /** Everything the fake server sends on the job connection. */
  readonly reply: Buffer;
  readonly ending: Ending;
  readonly jitter: readonly number[];
  /** The action has a requirement (the reply script starts by pulling it). */
  readonly requires: boolean;
  readonly retries: 0 | 1;
  /** For valid replies: what the action must end as. */
  readonly expect?: Expected;
}

/** The exact outcome a valid reply must give. */
type Expected =
  | {
      readonly result: 'succeeded';
      readonly stdout: string;
      readonly files: Record<string, string>;
      /** A successful command's stderr, carried by `!X stderr`. */
      readonly stderr?: string;
      /** Files that must come back executable (`!M` with an execute bit). */
      readonly executable?: readonly string[];
    }
  | {
      readonly result: 'failed';
      readonly reason: string;
      readonly exitStatus?: number;
      readonly stderr?: string;
    };

interface ReplyTemplate {
  readonly label: string;
  readonly pieces: readonly Piece[];
  readonly expect: Expected;
}

/** Job timeout the client runs with: a reply that never ends is cut off by it. */
const JOB_TIMEOUT_MS = 1500;
const COST_TIMEOUT_MS = 800;
/** No session may take longer than this (cost poll twice, job timeout, margin). */
export const SESSION_BOUND_MS = 12_000;

const pulled = download(1);

function replyTemplates(): ReplyTemplate[] {
  const ok = (stdout: string, files: Record<string, string> = {}): Expected => ({
    result: 'succeeded',
    stdout,
    files,
  });
  const failed = (reason: string, more: Partial<Expected> = {}): Expected =>
    ({ result: 'failed', reason, ...more }) as Expected;
  return [
    { label: 'stdout', pieces: packet('!SS  ', 'content', 'hi\n'), expect: ok('hi\n') },
    {
      label: 'failure',
      pieces: [...packet('!F', 'content', 'oops\n'), ...packet('!F', 'size', '1')],
      expect: failed('exit-non-zero', { exitStatus: 1, stderr: 'oops\n' }),
    },
    {
      label: 'one-file',
      pieces: [...packet('!SSI ', 'content', ''), ...filestream([['o.txt', 'abc']])],
      expect: ok('', { 'o.txt': 'abc' }),
    },
    {
      label: 'two-files',
      pieces: [
        ...packet('!SSI ', 'content', 'ok'),
        ...filestream([
          ['sub/a.txt', 'aaa'],
          ['b.txt', ''],
        ]),
      ],
      expect: ok('ok', { 'sub/a.txt': 'aaa', 'b.txt': '' }),
    },
    {
      label: 'zero-files',
      pieces: [...packet('!SSI ', 'content', ''), ...filestream([])],
      expect: ok(''),
    },
    {
      label: 'through-symlink-dir',
      pieces: [...packet('!SSI ', 'content', ''), ...filestream([['lnk/x', 'evil']])],
      expect: failed('bad-output'),
    },
    {
      label: 'over-symlink-file',
      pieces: [...packet('!SSI ', 'content', ''), ...filestream([['plink', 'replaced']])],
      expect: ok('', { plink: 'replaced' }),
    },
    {
      label: 'over-directory',
      pieces: [...packet('!SSI ', 'content', ''), ...filestream([['existingdir', 'x']])],
      expect: failed('bad-output'),
    },
    {
      label: 'escape',
      pieces: [...packet('!SSI ', 'content', ''), ...filestream([['../../x', 'evil']])],
      expect: failed('bad-output'),
    },
    {
      label: 'padded-stdout',
      pieces: [{ kind: 'junk', bytes: Buffer.alloc(5, 0x20) }, ...packet('!SS  ', 'content', 'x')],
      expect: ok('x'),
    },
  ];
}

/**
 * The extensions a fake rake/1 server grants in its `ok` (its cost reply always offers
 * `stderr,mode,cache,push`: a host restarted with less since is one of the cases).
 */
const GRANTS: ReadonlyArray<readonly string[]> = [
  ['stderr', 'mode', 'cache', 'push'],
  ['stderr', 'mode', 'cache'],
  ['stderr', 'mode'],
  ['mode', 'cache'],
  ['mode', 'push'],
  ['cache', 'push'],
  ['cache'],
  ['push'],
  ['stderr', 'mode', 'cache', 'push', 'beat'],
  ['mode', 'beat'],
  ['beat'],
  [],
];

/** The cost reply of a rake/1 server: `!E1`, its self-description in the padding, `0`. */
const EXTENDED_COST = (() => {
  const annex = 'rake/1 v=fuzz ext=stderr,mode,cache,push';
  return Buffer.from(`${'!E1'.padEnd(64 - annex.length, ' ')}${annex}0`, 'latin1');
})();

/**
 * A job conversation in extension mode (docs/protocol.md, "Extensions"), from the server's
 * side and in the order the client reads it: `ok` with the granted extensions; for an action
 * with a requirement, `need` (when `cache` is granted without `push`) and the questions that
 * pull the file (`!M` too when `mode` is granted); with `push`, neither: the requirement is
 * small, so it is never offered to the cache and is sent unasked. Then the reply, with
 * `!X stderr` before a success when `stderr` is granted and `!M` answers in the downloaded
 * filestream when `mode` is (the fake sends a filestream's packets without waiting for
 * requests either way). A grant short of what the cost reply said (`push` and `mode`) makes
 * the client hang up and start over without sending ahead; the fake replays the same
 * conversation on the new connection, so it is written for that second attempt.
 */
function extendedTemplates(grant: readonly string[], requires: boolean): ReplyTemplate[] {
  const mode = grant.includes('mode');
  const stderr = grant.includes('stderr');
  const pre: Piece[] = [...packet('!X', 'content', `ok ext=${grant.join(',')}`)];
  const pull = download(1, mode);
  const withNeed = (needed: boolean): Piece[] => {
    // With push, a small requirement is never offered to the cache and is sent unasked.
    if (!requires || grant.includes('push')) return pre;
    if (!grant.includes('cache')) return [...pre, ...pull];
    return needed
      ? [...pre, ...packet('!X', 'content', 'need\nin.txt'), ...pull]
      : [...pre, ...packet('!X', 'content', 'need')];
  };
  /** Output files with their permission bits, which only a `mode` connection carries. */
  const files = (list: ReadonlyArray<readonly [string, string, string]>): Piece[] =>
    filestream(
      list.map(([name, content, bits]) => (mode ? [name, content, bits] : [name, content])),
    );
  const warn = stderr ? packet('!X', 'content', 'stderr\nwarning: w\n') : [];
  // With `beat`, heartbeats while the command runs, before any `stderr` and the reply.
  const beats = grant.includes('beat')
    ? [...packet('!X', 'content', 'beat 500'), ...packet('!X', 'content', 'beat 400')]
    : [];
  const ok = (stdout: string, names: Record<string, string>, executable: string[] = []) =>
    ({
      result: 'succeeded',
      stdout,
      files: names,
      ...(stderr ? { stderr: 'warning: w\n' } : {}),
      ...(mode && executable.length > 0 ? { executable } : {}),
    }) as const;
  const label = (what: string, needed: boolean) =>
    `ext[${grant.join(',')}]${requires ? (needed ? '+need' : '+cached') : ''}:${what}`;
  return [true, false].flatMap((needed) => [
    {
      label: label('stdout', needed),
      pieces: [...withNeed(needed), ...beats, ...warn, ...packet('!SS  ', 'content', 'hi\n')],
      expect: ok('hi\n', {}),
    },
    {
      label: label('failure', needed),
      pieces: [
        ...withNeed(needed),
        ...beats,
        ...packet('!F', 'content', 'oops\n'),
        ...packet('!F', 'size', '3'),
      ],
      expect: { result: 'failed', reason: 'exit-non-zero', exitStatus: 3, stderr: 'oops\n' },
    },
    {
      label: label('files', needed),
      pieces: [
        ...withNeed(needed),
        ...beats,
        ...warn,
        ...packet('!SSI ', 'content', ''),
        ...files([
          ['run.sh', '#!/bin/sh\n', '755'],
          ['sub/o.txt', 'abc', '644'],
        ]),
      ],
      expect: ok('', { 'run.sh': '#!/bin/sh\n', 'sub/o.txt': 'abc' }, ['run.sh']),
    },
    {
      label: label('setuid-dropped', needed),
      pieces: [
        ...withNeed(needed),
        ...warn,
        ...packet('!SSI ', 'content', ''),
        ...files([['s', 'x', '4777']]),
      ],
      expect: ok('', { s: 'x' }, ['s']),
    },
  ]);
}

/** Names a hostile server may send; any that could resolve somewhere stays inside `root`. */
function hostileNames(root: string): Buffer[] {
  return [
    '../x',
    '../../etc/x',
    '../../../x',
    'a/../../x',
    `${root}/sentinel/abs`,
    `/${root}/sentinel/abs2`,
    '/',
    '',
    '.',
    '..',
    'x\0y',
    'lnk/x',
    'lnk/../../x',
    'plink',
    'existingdir',
    'existingdir/deeper/file',
    'Rakefile',
    'in.txt',
    '.rake-tmp-x',
    'n'.repeat(5000),
    'd/'.repeat(200),
  ]
    .map((n) => Buffer.from(n, 'utf8'))
    .concat([Buffer.from([0x61, 0xff]), Buffer.from([0xed, 0xa0, 0x80])]);
}

/** A 64-byte header from its text, then `payload` (whatever its length field says). */
const raw = (head: string, payload = '') =>
  Buffer.concat([header(head).bytes, Buffer.from(payload, 'latin1')]);

const COST_REPLIES: ReadonlyArray<Buffer | 'hold'> = [
  raw('!E1', '0'),
  raw('!E1', '7'),
  raw('!E0'),
  raw('!E2', '-1'),
  raw('!E5', 'abcde'),
  raw('!E20', '9'.repeat(20)),
  raw('!E99999999', '1'),
  raw(`!E${'9'.repeat(40)}`),
  raw('!F3', 'bad'),
  Buffer.from('!E1'),
  Buffer.alloc(0),
  'hold',
];

function sessionArbitrary(templates: readonly ReplyTemplate[], names: readonly Buffer[]) {
  const ending = fc.constantFrom<Ending>('linger', 'linger', 'linger', 'close', 'reset', 'trickle');
  const jitter = fc.array(fc.nat(30), { minLength: 2, maxLength: 6 });
  const common = fc.record({
    ending,
    jitter,
    requires: fc.boolean(),
    retries: fc.constantFrom<0 | 1>(0, 1),
  });
  const validCost = COST_REPLIES[0] as Buffer;
  const sources = {
    splices: templates.map((t) => t.pieces),
    names,
    junk: (b: Uint8Array) => Buffer.from(b),
  };
  const withPull = (requires: boolean, pieces: readonly Piece[]) =>
    requires ? [...pulled, ...pieces] : pieces;

  const valid = fc
    .record({ t: fc.nat(templates.length - 1), common })
    .map(({ t, common }): Session => {
      const template = pick(templates, t);
      const exact = common.ending === 'linger' || common.ending === 'trickle';
      return {
        generator: 'valid',
        label: template.label,
        cost: validCost,
        reply: Buffer.concat(withPull(common.requires, template.pieces).map((p) => p.bytes)),
        ...common,
        ...(exact ? { expect: template.expect } : {}),
      };
    });
  const mutation: fc.Arbitrary<Mutation> = fc.record({
    op: fc.constantFrom(...OPS),
    a: fc.nat(1_000_000),
    b: fc.nat(1_000_000),
    junk: fc.uint8Array({ maxLength: 80 }),
  });
  const mutated = fc
    .record({
      t: fc.nat(templates.length - 1),
      mutations: fc.array(mutation, { minLength: 1, maxLength: 4 }),
      common,
    })
    .map(({ t, mutations, common }): Session => {
      const template = pick(templates, t);
      return {
        generator: 'mutated',
        label: `${template.label}:${mutations.map((m) => m.op).join('+')}`,
        cost: validCost,
        reply: applyMutations(withPull(common.requires, template.pieces), mutations, sources),
        ...common,
      };
    });
  const random = fc
    .record({ bytes: fc.uint8Array({ maxLength: 500 }), flagged: fc.boolean(), common })
    .map(
      ({ bytes, flagged, common }): Session => ({
        generator: 'random',
        label: flagged ? 'random-after-header' : 'random',
        cost: validCost,
        reply: Buffer.concat([
          flagged ? header(`!SSI ${Math.min(bytes.length, 3)}`).bytes : Buffer.alloc(0),
          Buffer.from(bytes),
        ]),
        ...common,
      }),
    );
  const cost = fc
    .record({ c: fc.nat(COST_REPLIES.length - 1), t: fc.nat(templates.length - 1), common })
    .map(
      ({ c, t, common }): Session => ({
        generator: 'cost',
        label: `cost-${c}`,
        cost: pick(COST_REPLIES, c),
        reply: Buffer.concat(
          withPull(common.requires, pick(templates, t).pieces).map((p) => p.bytes),
        ),
        ...common,
      }),
    );
  // Extension mode: a rake/1 cost reply, then a conversation from extendedTemplates().
  const extended = (requires: boolean, g: number) => extendedTemplates(pick(GRANTS, g), requires);
  const validExtended = fc
    .record({ g: fc.nat(GRANTS.length - 1), t: fc.nat(1_000), common })
    .map(({ g, t, common }): Session => {
      const template = pick(extended(common.requires, g), t);
      const exact = common.ending === 'linger' || common.ending === 'trickle';
      return {
        generator: 'extended',
        label: template.label,
        cost: EXTENDED_COST,
        reply: Buffer.concat(template.pieces.map((p) => p.bytes)),
        ...common,
        ...(exact ? { expect: template.expect } : {}),
      };
    });
  const mutatedExtended = fc
    .record({
      g: fc.nat(GRANTS.length - 1),
      t: fc.nat(1_000),
      mutations: fc.array(mutation, { minLength: 1, maxLength: 4 }),
      common,
    })
    .map(({ g, t, mutations, common }): Session => {
      const template = pick(extended(common.requires, g), t);
      return {
        generator: 'extended-mutated',
        label: `${template.label}:${mutations.map((m) => m.op).join('+')}`,
        cost: EXTENDED_COST,
        reply: applyMutations(template.pieces, mutations, sources),
        ...common,
      };
    });
  return fc.oneof(
    { weight: 3, arbitrary: valid },
    { weight: 6, arbitrary: mutated },
    { weight: 2, arbitrary: random },
    { weight: 1, arbitrary: cost },
    { weight: 3, arbitrary: validExtended },
    { weight: 5, arbitrary: mutatedExtended },
  );
}

/** A fake server on loopback that plays the current session to every connection. */
class HostileServer {
  session: Session | undefined;
  readonly open = new Set<Socket>();
  /** Connections accepted for the current session. */
  connections = 0;
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(): Promise<HostileServer> {
    const server = createServer({ allowHalfOpen: true });
    const hostile = new HostileServer(server);
    server.on('connection', (socket) => hostile.#accept(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return hostile;
  }

  get port(): number {
    const address = this.#server.address();
    return typeof address === 'object' && address ? address.port : 0;
  }

  #accept(socket: Socket): void {
    this.connections++;
    this.open.add(socket);
    socket.on('close', () => this.open.delete(socket));
    socket.on('error', () => {});
    socket.on('end', () => socket.end());
    const session = this.session;
    if (session === undefined) return void socket.destroy();
    let first = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      first = Buffer.concat([first, chunk]);
      if (first.length < 64) return;
      socket.off('data', onData);
      socket.on('data', () => {}); // requests and `!D` are read and dropped
      const head = first.subarray(0, 64).toString('latin1');
      // `!E0` or a bare `!E` (an offer may follow in the padding) is a cost query; else a job.
      const cost = /^!E(\d*) /.exec(head);
      if (cost !== null && Number(cost[1] || '0') === 0) this.#answerCost(socket, session);
      else this.#answerJob(socket, session);
    };
    socket.on('data', onData);
  }

  #answerCost(socket: Socket, session: Session): void {
    if (session.cost === 'hold') return; // the client's cost timeout must fire
    socket.end(session.cost);
  }

  #answerJob(socket: Socket, s: Session): void {
    const timers: NodeJS.Timeout[] = [];
    socket.once('close', () => {
      for (const t of timers) clearTimeout(t);
    });
    switch (s.ending) {
      case 'linger':
        socket.write(s.reply);
        break;
      case 'close':
        socket.end(s.reply);
        break;
      case 'reset':
        socket.write(s.reply, () => {
          timers.push(setTimeout(() => socket.resetAndDestroy(), s.jitter[0] ?? 0));
        });
        break;
      case 'trickle': {
        const n = s.jitter.length;
        const size = Math.max(1, Math.ceil(s.reply.length / n));
        let at = 0;
        let step = 0;
        const next = () => {
          if (socket.destroyed || at >= s.reply.length) return;
          socket.write(s.reply.subarray(at, at + size));
          at += size;
          timers.push(setTimeout(next, s.jitter[step++ % n] ?? 0));
        };
        next();
        break;
      }
    }
  }

  async close(): Promise<void> {
    for (const s of this.open) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A fresh project: the Rakefile, a requirement, and traps a bad client would fall into. */
function makeProject(root: string, name: string, port: number, requires: boolean): string {
  const dir = join(root, 'l1', 'l2', name);
  mkdirSync(join(dir, 'existingdir'), { recursive: true });
  writeFileSync(join(dir, 'in.txt'), 'input\n');
  symlinkSync(join(root, 'sentinel'), join(dir, 'lnk'));
  symlinkSync(join(root, 'sentinel', 'precious.txt'), join(dir, 'plink'));
  const rakefile = [
    `HOSTS = 127.0.0.1:${port}`,
    '',
    'build:',
    '\tremote-cc -c x.c',
    ...(requires ? ['\t\trequires in.txt'] : []),
    '',
  ].join('\n');
  writeFileSync(join(dir, 'Rakefile'), rakefile);
  return dir;
}

/** Regular files and temporary files under `dir`, by relative path (no symlinks followed). */
async function listFiles(dir: string): Promise<Map<string, 'file' | 'link' | 'dir'>> {
  const out = new Map<string, 'file' | 'link' | 'dir'>();
  const pending = [''];
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    for (const name of await readdir(join(dir, rel)).catch(() => [] as string[])) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(join(dir, path)).catch(() => undefined);
      if (st === undefined) continue;
      const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : 'file';
      out.set(path, kind);
      if (kind === 'dir') pending.push(path);
    }
  }
  return out;
}

/** Runs the fuzzer; see the module comment. Findings are reported, never thrown. */
export async function fuzzClient(options: ClientFuzzOptions): Promise<ClientFuzzReport> {
  const log = options.log ?? (() => {});
  const concurrency = options.concurrency ?? 4;
  const started = Date.now();
  const root = mkdtempSync(join(tmpdir(), 'rake-fuzz-client-'));
  mkdirSync(join(root, 'sentinel'));
  mkdirSync(join(root, 'l1', 'l2'), { recursive: true });
  const precious = 'precious: never overwritten\n';
  writeFileSync(join(root, 'sentinel', 'precious.txt'), precious);
  const generators: Record<string, number> = {};
  const results: Record<string, number> = {};
  const findings: Finding[] = [];
  let exactOutcomes = 0;
  let slowestMs = 0;
  let done = 0;
  const crashes: string[] = [];
  const onCrash = (err: unknown) => {
    crashes.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const servers = await Promise.all(
    Array.from({ length: concurrency }, () => HostileServer.start()),
  );
  const find = (session: number, kind: string, detail: string) => {
    findings.push({ session, kind, detail });
    log(`FINDING session ${session} ${kind}: ${detail}`);
  };

  const playOne = async (index: number, s: Session, server: HostileServer): Promise<void> => {
    const projects = join(root, 'l1', 'l2');
    const name = `p${index}`;
    const dir = makeProject(root, name, server.port, s.requires);
    const outside = await snapshotTree(root, [projects]);
    const before = await listFiles(dir);
    server.session = s;
    server.connections = 0;
    const parsed = parseRakefile(readFileSync(join(dir, 'Rakefile')), {
      file: join(dir, 'Rakefile'),
    });
    if (!parsed.ok) throw new Error('fuzz Rakefile does not parse');
    const what = `${s.label}/${s.ending}${s.requires ? '/requires' : ''} reply ${preview(s.reply, 300)}`;
    const t0 = Date.now();
    let events: RakeEvent[] = [];
    try {
      const events$: Observable<RakeEvent> = run(parsed.rakefile, {
        directory: dir,
        embedded: false,
        fallback: false,
        retries: s.retries,
        connectTimeoutMs: 1000,
        costTimeoutMs: COST_TIMEOUT_MS,
        jobTimeoutMs: JOB_TIMEOUT_MS,
      });
      events = await firstValueFrom(events$.pipe(toArray(), timeout(SESSION_BOUND_MS)));
    } catch (err) {
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      find(
        index,
        message.startsWith('TimeoutError') ? 'hang' : 'observable-error',
        `${message} for ${what}`,
      );
    }
    const ms = Date.now() - t0;
    slowestMs = Math.max(slowestMs, ms);

    const terminal = events.filter(
      (e) => e.type === 'action-succeeded' || e.type === 'action-failed',
    );
    const last = events.at(-1);
    if (events.length > 0 && last?.type !== 'done') find(index, 'no-done', what);
    if (events.length > 0 && terminal.length !== 1) {
      find(index, 'terminal-events', `${terminal.length} terminal events for ${what}`);
    }
    const end = terminal[0];
    if (end?.type === 'action-succeeded') count(results, 'succeeded');
    else if (end?.type === 'action-failed') count(results, `failed:${end.reason}`);

    // Nothing outside the projects changed, the traps are intact, and the projects directory
    // holds nothing but projects.
    const changed = diffTrees(outside, await snapshotTree(root, [projects]));
    const strays = (await readdir(projects)).filter((n) => !/^p\d+$/.test(n));
    if (
      changed.length > 0 ||
      strays.length > 0 ||
      readFileSync(join(root, 'sentinel', 'precious.txt'), 'utf8') !== precious
    ) {
      find(index, 'wrote-outside', `${[...changed, ...strays].join(' ')} for ${what}`);
      for (const n of strays) rmSync(join(projects, n), { recursive: true, force: true });
      writeFileSync(join(root, 'sentinel', 'precious.txt'), precious);
    }
    // A cancelled download removes its temporary file a little after the run ends.
    const temps = async () =>
      [...(await listFiles(dir)).keys()].filter((p) => /\.rake-tmp-[0-9a-f]{12}$/.test(p));
    if (!(await waitFor(async () => (await temps()).length === 0, 3000))) {
      find(index, 'temp-file-left', `${(await temps()).join(' ')} for ${what}`);
    }
    const after = await listFiles(dir);
    if (end?.type === 'action-succeeded') {
      for (const f of end.files) {
        if (after.get(f) !== 'file') find(index, 'listed-file-missing', `${f} for ${what}`);
      }
      const fresh = [...after].filter(([p, kind]) => kind === 'file' && !before.has(p));
      for (const [p] of fresh) {
        if (!end.files.includes(p)) find(index, 'unlisted-file', `${p} for ${what}`);
      }
    }
    if (s.expect !== undefined) {
      const problem = await checkExpected(s.expect, end, events, dir);
      if (problem === undefined) exactOutcomes++;
      else find(index, 'unexpected-outcome', `${problem} for ${what}`);
    }
    if (!(await waitFor(() => server.open.size === 0, 3000))) {
      find(index, 'connection-left-open', `${server.open.size} open after ${what}`);
      for (const sock of server.open) sock.destroy();
    }
    for (const c of crashes.splice(0)) find(index, 'crash', `${c} for ${what}`);
    server.session = undefined;
    rmSync(join(projects, name), { recursive: true, force: true });
  };

  try {
    const sessions = fc.sample(sessionArbitrary(replyTemplates(), hostileNames(root)), {
      seed: options.seed,
      numRuns: options.sessions,
    });
    let next = 0;
    const worker = async (server: HostileServer) => {
      for (;;) {
        if (options.timeLimitMs !== undefined && Date.now() - started > options.timeLimitMs) return;
        const index = next++;
        const s = sessions[index];
        if (s === undefined) return;
        count(generators, s.generator);
        await playOne(index, s, server);
        done++;
        if (done % 250 === 0) {
          log(
            `${done} sessions, ${findings.length} findings, ${Math.round((Date.now() - started) / 1000)} s`,
          );
        }
      }
    };
    await Promise.all(servers.map(worker));
  } finally {
    await Promise.all(servers.map((s) => s.close()));
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    rmSync(root, { recursive: true, force: true });
  }
  return {
    seed: options.seed,
    sessions: done,
    ms: Date.now() - started,
    generators,
    results,
    exactOutcomes,
    slowestMs,
    findings,
  };
}

async function checkExpected(
  expect: Expected,
  end: RakeEvent | undefined,
  events: readonly RakeEvent[],
  dir: string,
): Promise<string | undefined> {
  if (expect.result === 'succeeded') {
    if (end?.type !== 'action-succeeded') {
      return `wanted success, got ${end?.type === 'action-failed' ? `${end.reason}: ${end.message}` : 'nothing'}`;
    }
    const stdout = events.flatMap((e) => (e.type === 'output' ? [e.stdout.text()] : [])).join('');
    if (stdout !== expect.stdout) return `stdout ${JSON.stringify(stdout)}`;
    const names = Object.keys(expect.files).sort();
    if (JSON.stringify([...end.files].sort()) !== JSON.stringify(names)) {
      return `files ${JSON.stringify(end.files)}`;
    }
    for (const [name, content] of Object.entries(expect.files)) {
      const st = await lstat(join(dir, name)).catch(() => undefined);
      if (!st?.isFile()) return `${name} is not a regular file`;
      if (readFileSync(join(dir, name), 'utf8') !== content) return `${name} has other bytes`;
      if (st.mode & 0o7000) return `${name} has mode ${(st.mode & 0o7777).toString(8)}`;
      if (expect.executable?.includes(name) && (st.mode & 0o100) === 0) {
        return `${name} is not executable (mode ${(st.mode & 0o777).toString(8)})`;
      }
    }
    if (expect.stderr !== undefined && end.stderr !== expect.stderr) {
      return `stderr ${JSON.stringify(end.stderr)}`;
    }
    return undefined;
  }
  if (end?.type !== 'action-failed')
    return `wanted ${expect.reason}, got ${end?.type ?? 'nothing'}`;
  if (end.reason !== expect.reason)
    return `wanted ${expect.reason}, got ${end.reason}: ${end.message}`;
  if (expect.exitStatus !== undefined && end.exitStatus !== expect.exitStatus) {
    return `exit status ${end.exitStatus}`;
  }
  if (expect.stderr !== undefined && end.stderr !== expect.stderr) {
    return `stderr ${JSON.stringify(end.stderr)}`;
  }
  return undefined;
}
