import {
  asyncScheduler,
  from,
  identity,
  merge,
  type Observable,
  type SchedulerLike,
  share,
  shareReplay,
  tap,
} from 'rxjs';
import { type Endpoint, hostKey } from './endpoint.js';
import type { HostTrouble, SilentHost } from './hosts.js';
import type { PeerInfo } from './negotiate.js';
import { type PollOptions, pollCosts } from './ops/poll-costs.js';

export { type PollOptions, pollCosts } from './ops/poll-costs.js';

/**
 * What a cost query reports as it goes: the connection is up, then the answer, with what
 * the server said about itself (base protocol, or ours with version and extensions).
 */
export type CostProbe =
  | { readonly type: 'connected' }
  | { readonly type: 'cost'; readonly cost: number; readonly peer?: PeerInfo };

/** Asks one host its cost over its own connection (`!E0` → `!E<len>` + decimal). */
export type QueryCost = (endpoint: Endpoint) => Observable<CostProbe>;

/** One host's outcome in a cost poll: its cost, or why it could not be asked. */
export type CostResult =
  | {
      readonly ok: true;
      readonly host: string;
      readonly endpoint: Endpoint;
      readonly cost: number;
      readonly rttMs: number;
      /** The server's self-description from the reply (see `negotiate.ts`), if the transport reads it. */
      readonly peer?: PeerInfo;
    }
  | {
      readonly ok: false;
      readonly host: string;
      readonly endpoint: Endpoint;
      readonly error: string;
      readonly rttMs: number;
      /**
       * `unreachable`: refused, no connection in time, or dropped before answering.
       * `slow`: connected, but no answer in time: the host is up and busy.
       * `bad-answer`: it answered something that is not a cost. `skipped`: backing off.
       */
      readonly failure: PollFailure;
      /** The same, in the words of the summary's silent hosts (the cause of a skip, for `skipped`). */
      readonly trouble: HostTrouble;
    };

/** Why a host has no cost in a poll (see {@link CostResult}). */
export type PollFailure = 'unreachable' | 'slow' | 'bad-answer' | 'skipped';

/** A poll an action takes part in: its id, its ledger mark, and the results as they come. */
export interface PollRound {
  readonly id: number;
  /** The ledger mark taken when the round's queries went out (see `Assignments.mark`). */
  readonly seq: number;
  readonly results: Observable<CostResult>;
}

/**
 * Hands out cost polls, sharing one round among the actions that ask at the same instant,
 * and leaving out hosts that just failed to answer.
 *
 * When an actionset starts, all its actions poll at once; each would open one connection per
 * host and get the very same answers. Instead, an action that asks while a round has been
 * sent but not yet answered joins that round: it sees every answer, as if it had asked
 * itself. A round closes to newcomers at its first result. Actions still choose one at a
 * time, each seeing the assignments made before it (`pickCheapestHost`).
 *
 * A host that refused, could not be reached in time or garbled its answer is skipped by
 * the rounds of the next `backoffMs` (its result says so at once), as distcc backs off from
 * a failed host (a host that connected but was slow to answer is not skipped):
 * otherwise a host that drops packets would cost every action a connect timeout. When
 * every host is backing off, all are asked again.
 */
export class CostPoller {
  readonly #hosts: readonly Endpoint[];
  readonly #query: QueryCost;
  readonly #options: PollOptions;
  readonly #mark: () => number;
  readonly #backoffMs: number;
  /** Host key → until when it is skipped, and why. */
  readonly #down = new Map<string, { until: number; error: string; trouble: HostTrouble }>();
  /** Hosts that answered a cost query at least once in this run. */
  readonly #answered = new Set<string>();
  /** Host key → its last failure, for the summary's silent hosts. */
  readonly #trouble = new Map<string, { trouble: HostTrouble; error: string }>();
  /** Host key → why it gets no more work in this run (it refused our token). */
  readonly #banned = new Map<string, string>();
  readonly #onTrouble: ((host: string, trouble: HostTrouble, error: string) => void) | undefined;
  #open: PollRound | undefined;
  #nextId = 1;

  constructor(
    hosts: readonly Endpoint[],
    query: QueryCost,
    options: PollOptions & {
      readonly backoffMs?: number;
      /** Called once per host, at its first failed cost query of the run (for `-v` logs). */
      readonly onTrouble?: (host: string, trouble: HostTrouble, error: string) => void;
    },
    mark: () => number,
  ) {
    this.#onTrouble = options.onTrouble;
    this.#hosts = hosts;
    this.#query = query;
    this.#options = options;
    this.#mark = mark;
    this.#backoffMs = options.backoffMs ?? 0;
  }

  /** The round to take part in: the open one, or a new one. Subscribe at once. */
  join(): PollRound {
    if (this.#open !== undefined) return this.#open;
    const round = this.#round(this.#query, true);
    this.#open = round;
    return round;
  }

  /**
   * A round of its own whose answers come from `query` instead of fresh cost queries (the
   * load streams' opening cost queries: `LoadDispatcher`), asked at once and kept: actions
   * the dispatcher tells to poll in the run's first moments take part in it, however late
   * they subscribe, and see the answers in the order they came. No action joins it through
   * {@link join}. `close` ends what is still asked.
   */
  open(query: QueryCost): PollRound & { readonly close: () => void } {
    const round = this.#round(query, false);
    const results = round.results.pipe(shareReplay());
    const asked = results.subscribe();
    return { ...round, results, close: () => asked.unsubscribe() };
  }

  #round(query: QueryCost, shared: boolean): PollRound {
    const id = this.#nextId++;
    const seq = this.#mark();
    const close = () => {
      if (this.#open?.id === id) this.#open = undefined;
    };
    const now = this.#scheduler().now();
    const skip = (endpoint: Endpoint, error: string, trouble: HostTrouble): CostResult => ({
      ok: false,
      host: hostKey(endpoint),
      endpoint,
      error: `skipped: ${error}`,
      rttMs: 0,
      failure: 'skipped',
      trouble,
    });
    // A host that refused our token is never asked again in this run, and says so.
    const banned: CostResult[] = [];
    const usable = this.#hosts.filter((endpoint) => {
      const why = this.#banned.get(hostKey(endpoint));
      if (why !== undefined) banned.push(skip(endpoint, why, 'refused'));
      return why === undefined;
    });
    let backingOff: CostResult[] = [];
    let asked: readonly Endpoint[] = usable.filter((endpoint) => {
      const down = this.#down.get(hostKey(endpoint));
      if (down === undefined || down.until <= now) return true;
      const ago = Math.ceil(this.#backoffMs / 1000);
      backingOff.push(skip(endpoint, `${down.error} less than ${ago} s ago`, down.trouble));
      return false;
    });
    if (asked.length === 0) {
      asked = usable;
      backingOff = [];
    }
    const skipped = [...banned, ...backingOff];
    const live = pollCosts(asked, query, this.#options).pipe(
      tap((r) => {
        if (shared) close();
        if (r.ok) {
          this.#down.delete(r.host);
          this.#answered.add(r.host);
          return;
        }
        if (!this.#trouble.has(r.host)) this.#onTrouble?.(r.host, r.trouble, r.error);
        this.#trouble.set(r.host, { trouble: r.trouble, error: r.error });
        // A slow host is up and busy: it is asked again next time.
        if (this.#backoffMs > 0 && r.failure !== 'slow') {
          this.#down.set(r.host, {
            until: this.#scheduler().now() + this.#backoffMs,
            error: r.error,
            trouble: r.trouble,
          });
        }
      }),
      shared ? tap({ complete: close, error: close, unsubscribe: close }) : identity,
      share(),
    );
    // Skipped hosts are reported at once to every action that joins, each on its own
    // subscription (they are known before the round goes out, so each joiner gets them
    // again); they do not close the round to newcomers. Only the queries are shared.
    const results = merge(from(skipped), live);
    return { id, seq, results };
  }

  /**
   * Gives `host` no more work in this run: it refused this client's token (`why` says so).
   * Later rounds skip it, saying `why`; the summary lists it as `wanted-token`.
   */
  ban(host: string, why: string): void {
    this.#banned.set(host, why);
  }

  /** True when {@link ban} was called for `host`. */
  isBanned(host: string): boolean {
    return this.#banned.has(host);
  }

  /**
   * The hosts that did no work for this poller's run, in the order listed: those that
   * refused our token, and those that never answered a cost query (each with its last
   * trouble). A host never asked is not listed.
   */
  silentHosts(): SilentHost[] {
    const out: SilentHost[] = [];
    for (const endpoint of this.#hosts) {
      const host = hostKey(endpoint);
      const banned = this.#banned.get(host);
      const trouble = this.#trouble.get(host);
      if (banned !== undefined) out.push({ host, reason: 'wanted-token', detail: banned });
      else if (!this.#answered.has(host) && trouble !== undefined) {
        out.push({ host, reason: trouble.trouble, detail: trouble.error });
      }
    }
    return out;
  }

  #scheduler(): SchedulerLike {
    return this.#options.scheduler ?? asyncScheduler;
  }
}
