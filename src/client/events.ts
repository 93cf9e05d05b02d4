import type { SourcePosition } from '../../grammar/model.js';
import type { EmbeddedNote, HostAlias, SilentHost } from './hosts.js';
import type { ActionOutput } from './output.js';

/**
 * Which action an event is about. Every per-action event carries it, so a consumer (the CLI,
 * a trace writer, a progress bar) never has to keep its own index of the Rakefile.
 */
export interface ActionRef {
  /** `<actionset>#<index>`, index 0-based within the actionset: unique within one run. */
  readonly actionId: string;
  readonly actionset: string;
  readonly index: number;
  /** The action's line in the Rakefile. */
  readonly position: SourcePosition;
  /** The command as sent (any `remote-` prefix already removed). */
  readonly command: string;
  readonly remote: boolean;
  /** The action is exempt from the action cache (`# rake-ts: no-cache`); absent otherwise. */
  readonly noCache?: true;
}

/**
 * One host's answer to a cost query, as seen by one action. `cost` is absent when the host
 * could not be asked (refused, timed out, garbled reply); then `error` says why.
 */
export interface CostSeen {
  /** `host:port` (`[::1]:6238` for IPv6). */
  readonly host: string;
  readonly cost?: number;
  /** The cost after adding this client's own assignments the host could not yet count. */
  readonly effectiveCost?: number;
  readonly error?: string;
  /** From sending the query to the answer (or the failure). */
  readonly rttMs: number;
}

/**
 * Milliseconds spent in each phase of one attempt at an action; a phase that did not
 * happen is 0. The sum is close to, not exactly, the action's wall time.
 */
export interface PhaseTimings {
  /** Cost poll until a host was chosen (0 for local actions). */
  readonly poll: number;
  /** TCP connect to the chosen host. */
  readonly connect: number;
  /** Sending `!R` and the requirements. */
  readonly upload: number;
  /**
   * Waiting on the host for a free job slot, from sending `!C` until the host said the job
   * started (extension `queue`; 0 when it started at once). Absent when the host cannot say
   * (a base-protocol host): then `run` holds the queueing too.
   */
  readonly queued?: number;
  /**
   * The command's run time plus the round trip: from the job's start (`queued` known) or from
   * sending `!C` (a base-protocol host: queueing included) to the reply's header.
   */
  readonly run: number;
  /** Receiving output files. */
  readonly download: number;
}

/**
 * Why an action failed, as data (STYLE.md: failures are data, not exceptions).
 * - `exit-non-zero`: the server ran the command and answered `!F` (stderr, exit status).
 * - `missing-requirement`: a `requires` file does not exist; nothing was sent.
 * - `no-host`: no host (remote or local server) could be reached to run it.
 * - `host-lost`: the chosen host(s) dropped the connection, retries exhausted.
 * - `protocol-error`: the peer sent bytes the protocol does not allow.
 * - `bad-output`: the server returned a file this client refused to write (outside the
 *   Rakefile's directory, a bad name) or that could not be written.
 * - `timeout`: the job took longer than the configured job timeout.
 * - `requirement-collision`: two required files would arrive under one name on the chosen
 *   host (`../a/config.h` and `../b/config.h` on a base-protocol host); nothing was sent.
 */
export type FailureReason =
  | 'exit-non-zero'
  | 'missing-requirement'
  | 'no-host'
  | 'host-lost'
  | 'protocol-error'
  | 'bad-output'
  | 'timeout'
  | 'requirement-collision';

/**
 * Why one host was picked: a local action; the only answer; the cheapest; a tie won by
 * answering first; the first answer with effective cost 0 (nothing can beat it, so the
 * slower hosts were not awaited); no host answered in time, so the one that connected and
 * runs fewest of this run's jobs (`slow-host`); the next-cheapest after a host dropped the job.
 * With load streams (docs/client.md, "Load streams"): `most-free`, `tie-first-listed`, or
 * `only-host`, with no cost poll (the event's `costs` is empty).
 */
export type ChoiceReason =
  | 'local'
  | 'only-host'
  | 'cheapest'
  | 'tie-first-answer'
  | 'first-idle'
  | 'slow-host'
  | 'retry'
  /** From the hosts' pushed loads (extension `load`): the most free slots. */
  | 'most-free'
  /** From the hosts' pushed loads: a tie on free slots and load, won by the first listed. */
  | 'tie-first-listed';

/**
 * With `--executor` (a REAPI farm): the farm's own account of an action, from its
 * ExecutedActionMetadata, in ms. `cached`: answered from the ActionCache, nothing ran.
 */
export interface FarmTimings {
  readonly worker: string;
  readonly queuedMs: number;
  readonly inputFetchMs: number;
  readonly executionMs: number;
  readonly outputUploadMs: number;
  readonly cached: boolean;
}

/** What a run adds up to, carried by the final `done` event. */
export interface RunSummary {
  readonly actionsets: number;
  readonly actionsetsRun: number;
  readonly actions: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly cancelled: number;
  /**
   * Actions that were not started: those of the actionsets after a failure, and the other
   * actions of an actionset where a requirement is missing (it sends nothing). So
   * `actions = succeeded + failed + cancelled + skipped`.
   */
  readonly skipped: number;
  readonly retries: number;
  readonly fallbacks: number;
  /**
   * Successes answered from the local action cache (`--cache`): nothing ran for them, and
   * they count in no host's `perHost`. Absent when there were none.
   */
  readonly cached?: number;
  /**
   * How many actions each host ran (`host:port` → count), successful or not: an action
   * counts once, on the host where it ended (not once per attempt).
   */
  readonly perHost: Readonly<Record<string, number>>;
  /**
   * Hosts listed under a second name that reaches the same server (`localhost:7001` beside
   * `127.0.0.1:7001`): the run used the first spelling only. Absent when there were none.
   */
  readonly aliases?: readonly HostAlias[];
  /**
   * Hosts that did no work, and why: they never answered a cost query (refused, timed out,
   * no such name, …) or refused this client's token. Absent when every host answered.
   */
  readonly silentHosts?: readonly SilentHost[];
  /**
   * Loopback endpoints where nothing listened, so the run served them itself (embedded
   * servers). Absent when it started none.
   */
  readonly embedded?: readonly EmbeddedNote[];
  readonly ms: number;
  /**
   * The exit status the CLI uses: 0 success, 1 an action failed, 3 an action could not be
   * placed on any host (`no-host` / `host-lost`), see docs/client.md.
   */
  readonly exitStatus: 0 | 1 | 3;
}

interface Timed {
  /** `Date.now()` (or the test scheduler's clock) when the event happened. */
  readonly time: number;
}

/** An event about one action. */
interface ActionEventBase extends Timed {
  readonly action: ActionRef;
}

/**
 * Everything a run reports, in order. `run()` returns an `Observable<RakeEvent>`: the CLI
 * prints from it, tests assert on it, later work draws timelines from it. Discriminated on
 * `type`; use `unreachable()` in a `switch` to handle every kind.
 */
export type RakeEvent =
  /** An embedded in-process server now listens where nothing did (see docs/client.md). */
  | (Timed & {
      readonly type: 'embedded-server-started';
      readonly host: string;
      readonly port: number;
      readonly reason: 'local-actions' | 'loopback-host' | 'fallback';
    })
  | (Timed & {
      readonly type: 'actionset-started';
      readonly actionset: string;
      readonly position: SourcePosition;
      readonly actions: number;
    })
  /** One host's answer in the cost poll of one action. */
  | (ActionEventBase & {
      readonly type: 'cost-polled';
      /** Poll rounds are shared by actions that poll at the same instant; same id, same round. */
      readonly pollId: number;
      readonly cost: CostSeen;
    })
  | (ActionEventBase & {
      readonly type: 'host-chosen';
      readonly host: string;
      readonly reason: ChoiceReason;
      /** Every answer seen so far, in the order they arrived. */
      readonly costs: readonly CostSeen[];
      /** 1 for the first attempt, 2 for the first retry, ... */
      readonly attempt: number;
    })
  /**
   * The host holds the job until one of its job slots frees (extension `queue`): the action
   * is queued there, not running.
   */
  | (ActionEventBase & { readonly type: 'action-queued'; readonly host: string })
  /** The job the host queued starts now (extension `queue`), after `queuedMs` in its queue. */
  | (ActionEventBase & {
      readonly type: 'action-started';
      readonly host: string;
      readonly queuedMs: number;
    })
  | (ActionEventBase & {
      readonly type: 'upload-done';
      readonly host: string;
      readonly files: number;
      readonly bytes: number;
      readonly ms: number;
    })
  /**
   * The action's whole stdout, once, when the reply arrives (base mode does not stream):
   * byte for byte, spooled to a file when large (see `output.ts`: read or open it while
   * handling the event; its file is removed when the run ends).
   */
  | (ActionEventBase & {
      readonly type: 'output';
      readonly host: string;
      readonly stdout: ActionOutput;
    })
  | (ActionEventBase & {
      readonly type: 'action-succeeded';
      readonly host: string;
      readonly exitStatus: 0;
      /** Output files written into the Rakefile's directory, as relative paths. */
      readonly files: readonly string[];
      /** The output files' total size: bytes received in the download phase. */
      readonly downloadBytes: number;
      /**
       * What the command wrote to stderr although it succeeded (compiler warnings). Only
       * from a host that carries it (extension `stderr`); absent when there was none.
       */
      readonly stderr?: string;
      readonly phases: PhaseTimings;
      readonly attempts: number;
      readonly ms: number;
      /** With `--executor`: the farm's own timings (docs/remote-execution.md). */
      readonly farm?: FarmTimings;
      /**
       * With `--cache`: the local action cache had the action's key (docs/client.md, "The
       * action cache"), so nothing ran; `host` is the host it would have run on. `server`:
       * the host answered from the results it stored of a job it ran before (extension
       * `results`, the shared action cache), under its own key; `from`: another host of the
       * run did, asked before the job was sent (`!X lookup only`), not `host`.
       */
      readonly cached?: { readonly key: string; readonly server?: true; readonly from?: string };
    })
  | (ActionEventBase & {
      readonly type: 'action-failed';
      readonly reason: FailureReason;
      /** Absent when no host was reached (`missing-requirement`, `no-host`). */
      readonly host?: string;
      readonly position: SourcePosition;
      readonly message: string;
      /** The command's stderr for `exit-non-zero`, else empty. */
      readonly stderr: string;
      /** The command's exit status for `exit-non-zero`. */
      readonly exitStatus?: number;
      readonly phases: PhaseTimings;
      readonly attempts: number;
      readonly ms: number;
    })
  /**
   * The host dropped the connection, or did not reply within the job timeout, before
   * replying; the action moves to another host.
   */
  | (ActionEventBase & {
      readonly type: 'action-retried';
      readonly fromHost: string;
      readonly reason: string;
      readonly attempt: number;
    })
  /** `--fail-fast`: another action failed, so this one was stopped (remote process killed). */
  | (ActionEventBase & { readonly type: 'action-cancelled'; readonly host?: string })
  /** No remote host answered the cost poll; the action runs on the local server instead. */
  | (ActionEventBase & {
      readonly type: 'fallback-local';
      readonly host: string;
      readonly reason: string;
    })
  | (Timed & {
      readonly type: 'actionset-done';
      readonly actionset: string;
      readonly succeeded: number;
      readonly failed: number;
      readonly cancelled: number;
      readonly ms: number;
    })
  | (Timed & { readonly type: 'done'; readonly summary: RunSummary });

/** The `type` names of {@link RakeEvent}, for filtering. */
export type RakeEventType = RakeEvent['type'];

/** Narrows a {@link RakeEvent} by its `type`. */
export type RakeEventOf<T extends RakeEventType> = Extract<RakeEvent, { type: T }>;

/** All phases 0: for failures before any phase ran. */
export const NO_PHASES: PhaseTimings = { poll: 0, connect: 0, upload: 0, run: 0, download: 0 };
