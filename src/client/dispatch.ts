import {
  asyncScheduler,
  catchError,
  merge,
  Observable,
  ReplaySubject,
  type SchedulerLike,
  type Subscription,
  tap,
  throwError,
  timer,
} from 'rxjs';
import { chooseByLoad, type LoadChoiceReason, type LoadView } from './choose.js';
import { type Endpoint, hostKey } from './endpoint.js';
import { type HostLoad, hostLoad, type WatchLoad } from './load-stream.js';
import type { CostProbe, PollRound, QueryCost } from './poll.js';
import { AdaptiveQueue } from './queue-depth.js';
import type { Assignment, Assignments } from './select.js';

/** Where {@link LoadDispatcher.place} put an action: a host, or "poll as before". */
export type Placement =
  | {
      readonly kind: 'placed';
      readonly endpoint: Endpoint;
      readonly host: string;
      /** Release it when the job's connection ends (the slot is free again). */
      readonly assignment: Assignment;
      readonly free: number;
      readonly reason: LoadChoiceReason;
      /**
       * Tell it how a job that ran on a host of ours went (time queued there, run): the
       * adaptive queue learns from it.
       */
      readonly note: (job: { readonly queuedMs: number; readonly runMs: number }) => void;
    }
  /**
   * Poll as before; in the run's first moments, in `round`: the poll round whose answers are
   * the load streams' opening cost queries (no second query to any host).
   */
  | { readonly kind: 'poll'; readonly round?: PollRound };

/** The run's first poll round, from the load streams' cost answers (`CostPoller.open`). */
export type OpeningRound = PollRound & { readonly close: () => void };

/** Options of {@link LoadDispatcher}. */
export interface DispatchOptions {
  /**
   * Jobs a host may hold beyond its slots (the small queue that hides the client's reaction
   * between a reply and the next job): a number, or `auto`: per host, from its jobs' run
   * times against this client's overhead (`AdaptiveQueue`, queue-depth.ts).
   */
  readonly queue: number | 'auto';
  /** After a load stream broke, open it again this much later. */
  readonly reconnectMs: number;
  readonly scheduler?: SchedulerLike;
  /** Told every state a host's load stream goes through (logs, events). */
  readonly onState?: (state: HostLoad) => void;
  /**
   * Opens the run's first poll round with `query` as each host's cost query
   * (`CostPoller.open`). `query` answers from the host's load stream: its opening cost query
   * is the host's first poll answer, so a base host sees no connection a poll would not have
   * made. Absent: actions told to poll in the first moments poll afresh.
   */
  readonly openRound?: (query: QueryCost) => OpeningRound;
  /** A fresh cost query, for a host whose stream had no cost to give (it refused the offer). */
  readonly queryCost?: QueryCost;
  /** Told once every host's load stream has been opened (`start`). */
  readonly onStart?: () => void;
}

/** The stream's cost query was refused for its offer: ask afresh (without it). */
class OfferRefused extends Error {}

/**
 * The run's first actions wait for every host's first word until this long after the load
 * streams opened, or twice as long as the first host took to speak, whichever is later; then
 * a host still silent is passed over until it speaks (`LoadDispatcher`). So a host up to
 * twice as far as the nearest is waited for, and one that says nothing (frozen, its SYN lost)
 * does not hold the start for the connect timeout.
 */
export const OPENING_GRACE_MIN_MS = 50;

/** How many jobs a host may hold beyond its slots by default: per host, adapted. */
export const DEFAULT_DISPATCH_QUEUE = 'auto';

interface Waiter {
  readonly exclude: ReadonlySet<string>;
  readonly done: (p: Placement) => void;
  /** Out of the queue (placed, or told to poll): leaving it then looks for nothing. */
  out?: boolean;
}

/**
 * Slot-filling dispatch over load streams (issue 20): one {@link hostLoad} per host, and a
 * FIFO of actions waiting for a host. An action is placed as soon as {@link chooseByLoad}
 * finds room for it — at once when a host has a free slot (or room in its small queue), else
 * when a load arrives or one of this client's jobs ends — so each host's slots stay full and
 * no host is handed a pile of actions the others could run. With no host streaming its load,
 * an action is told to poll (`poll`), as with base hosts.
 */
export class LoadDispatcher {
  readonly #endpoints: ReadonlyMap<string, Endpoint>;
  readonly #watch: WatchLoad;
  readonly #ledger: Assignments;
  readonly #options: DispatchOptions;
  /** Per host: the latest state and the ledger's mark when its latest load arrived. */
  readonly #states = new Map<string, { load: HostLoad; mark: number }>();
  readonly #waiters: Waiter[] = [];
  /** Waiters that leave hosts out (retries): the only ones a pass looks at once all must wait. */
  #excluding = 0;
  #subscription: Subscription | undefined;
  /** With `queue: 'auto'`, the per-host depths. */
  readonly #adaptive: AdaptiveQueue | undefined;
  readonly #queue: number | ((host: string, slots: number) => number);
  /** The round actions told to poll take part in until every host has first spoken. */
  #opening: OpeningRound | undefined;
  /** The same, kept to be closed when the dispatcher stops. */
  #openingRound: OpeningRound | undefined;
  #draining = false;
  #again = false;
  /** When the streams were opened; whether the opening grace has started, and is over. */
  #openedAt = 0;
  #graceStarted = false;
  #graceOver = false;
  #grace: Subscription | undefined;

  constructor(
    endpoints: readonly Endpoint[],
    watch: WatchLoad,
    ledger: Assignments,
    options: DispatchOptions,
  ) {
    this.#endpoints = new Map(endpoints.map((e) => [hostKey(e), e]));
    this.#watch = watch;
    this.#ledger = ledger;
    this.#options = options;
    if (options.queue === 'auto') {
      const adaptive = new AdaptiveQueue();
      this.#adaptive = adaptive;
      this.#queue = (host) => adaptive.depth(host);
    } else this.#queue = options.queue;
    for (const host of this.#endpoints.keys()) {
      this.#states.set(host, { load: { host, state: 'waiting' }, mark: ledger.mark() });
    }
  }

  /**
   * Opens every host's load stream (once; the first {@link place} does it). Each stream's
   * opening cost answer is that host's answer in the run's first poll round (`openRound`).
   */
  start(): void {
    if (this.#subscription !== undefined) return;
    const scheduler = this.#options.scheduler ?? asyncScheduler;
    const watch = this.#openingAnswers();
    this.#openedAt = scheduler.now();
    this.#subscription = merge(
      ...[...this.#endpoints.values()].map((e) =>
        hostLoad(e, watch, { reconnectMs: this.#options.reconnectMs, scheduler }),
      ),
    ).subscribe((load) => {
      this.#states.set(load.host, { load, mark: this.#ledger.mark() });
      this.#options.onState?.(load);
      if (!this.#graceStarted && load.state !== 'waiting') {
        // The first host has spoken: the others get until the opening grace ends.
        this.#graceStarted = true;
        const first = scheduler.now() - this.#openedAt;
        const until = Math.max(OPENING_GRACE_MIN_MS, 2 * first);
        this.#grace = timer(until - first, scheduler).subscribe(() => {
          this.#graceOver = true;
          this.#drain();
        });
      }
      this.#drain();
    });
    this.#options.onStart?.();
  }

  /**
   * The watch that also hands each host's first cost answer (or why there is none) to the
   * opening poll round, which is opened here; later sessions are the plain watch.
   */
  #openingAnswers(): WatchLoad {
    const { openRound, queryCost } = this.#options;
    if (openRound === undefined) return this.#watch;
    const answers = new Map<string, ReplaySubject<CostProbe>>();
    for (const host of this.#endpoints.keys()) answers.set(host, new ReplaySubject<CostProbe>());
    const firstSession = new Set(answers.keys());
    this.#openingRound = openRound((e) => {
      const answer = answers.get(hostKey(e)) as ReplaySubject<CostProbe>;
      return answer.pipe(
        catchError((err: unknown) =>
          err instanceof OfferRefused && queryCost !== undefined
            ? queryCost(e)
            : throwError(() => err),
        ),
      );
    });
    this.#opening = this.#openingRound;
    return (e) => {
      const host = hostKey(e);
      const answer = answers.get(host);
      if (answer === undefined || !firstSession.delete(host)) return this.#watch(e);
      /** No answer in time: left open, so the round's own reply limit says `slow`, as a
       * poll's would (a slow host is asked again, not backed off). */
      let slow = false;
      const end = () => {
        if (!slow) answer.complete();
      };
      return this.#watch(e).pipe(
        tap({
          next: (p) => {
            if (p.type === 'connected') answer.next(p);
            else if (p.type === 'cost') {
              answer.next(p);
              answer.complete();
            } else if (p.type === 'unsupported' && p.offerRefused === true) {
              answer.error(new OfferRefused(p.why));
            } else if (p.type === 'unsupported' && p.slow === true) slow = true;
            else answer.complete();
          },
          error: (err: unknown) => answer.error(err),
          complete: end,
          unsubscribe: end,
        }),
      );
    };
  }

  /** Closes the load streams; waiting actions are told to poll. */
  stop(): void {
    this.#subscription?.unsubscribe();
    this.#grace?.unsubscribe();
    this.#openingRound?.close();
    this.#opening = undefined;
    this.#excluding = 0;
    for (const w of this.#waiters.splice(0)) {
      w.out = true;
      w.done({ kind: 'poll' });
    }
  }

  /** Every host's latest load stream state, in the order the hosts were listed. */
  states(): HostLoad[] {
    return [...this.#states.values()].map((s) => s.load);
  }

  /**
   * A host for one action (leaving out `exclude`, the hosts it already tried): emits once,
   * when there is room, and completes. Unsubscribing before leaves the queue.
   */
  place(exclude: ReadonlySet<string> = new Set()): Observable<Placement> {
    return new Observable<Placement>((sub) => {
      const waiter: Waiter = {
        exclude,
        done: (p) => {
          sub.next(p);
          sub.complete();
        },
      };
      this.#waiters.push(waiter);
      if (exclude.size > 0) this.#excluding++;
      // The streams open with the run's first remote action: a run with none opens none.
      if (this.#subscription === undefined) this.start();
      this.#drain();
      return () => {
        // A placed action's end looks through no queue (hundreds may wait in it).
        if (waiter.out === true) return;
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#leave(i);
      };
    });
  }

  /** Places waiting actions, oldest first, while hosts have room (never re-entered). */
  #drain(): void {
    if (this.#draining) {
      this.#again = true;
      return;
    }
    this.#draining = true;
    try {
      do {
        this.#again = false;
        this.#drainOnce();
      } while (this.#again);
    } finally {
      this.#draining = false;
    }
  }

  #drainOnce(): void {
    // Once an action that leaves out no host must wait, so must every other such one: the
    // rest of the pass looks only at actions that leave hosts out (a retry). Without this, a
    // load message with hundreds of actions waiting cost hundreds of choices.
    let fullForAll = false;
    for (let i = 0; i < this.#waiters.length; ) {
      // Only plain actions left to look at, and they must all wait: the pass is over.
      if (fullForAll && this.#excluding === 0) break;
      const waiter = this.#waiters[i] as Waiter;
      const plain = waiter.exclude.size === 0;
      if (plain && fullForAll) {
        i++;
        continue;
      }
      const choice = chooseByLoad(this.#views(), {
        queue: this.#queue,
        exclude: waiter.exclude,
        passOverWaiting: this.#graceOver,
      });
      if (choice.kind === 'wait') {
        if (plain) fullForAll = true;
        i++;
        continue;
      }
      this.#leave(i);
      if (choice.kind === 'none') {
        const round = this.#opening;
        waiter.done(round === undefined ? { kind: 'poll' } : { kind: 'poll', round });
        continue;
      }
      // Placed behind the host's slots: this client's own jobs there fill them already.
      const behind = this.#ledger.inFlight(choice.host) >= this.#slots(choice.host);
      const placed = this.#ledger.assign(choice.host);
      const assignment: Assignment = {
        host: placed.host,
        seq: placed.seq,
        release: () => {
          placed.release();
          // A slot of ours came free: an action waiting for room may have it now.
          this.#drain();
        },
      };
      waiter.done({
        kind: 'placed',
        endpoint: this.#endpoints.get(choice.host) as Endpoint,
        host: choice.host,
        assignment,
        free: choice.free,
        reason: choice.reason,
        note: (job) => {
          this.#adaptive?.note(choice.host, { ...job, behind });
        },
      });
    }
    // Every host has spoken (a load, or that it cannot stream): the actions told to poll so
    // far took the opening round; later ones poll afresh, as after a poll round's answers.
    if (this.#opening !== undefined && this.states().every((s) => s.state !== 'waiting')) {
      this.#opening = undefined;
    }
  }

  /** Takes waiter `i` out of the queue. */
  #leave(i: number): void {
    const [waiter] = this.#waiters.splice(i, 1);
    if (waiter === undefined) return;
    waiter.out = true;
    if (waiter.exclude.size > 0) this.#excluding--;
  }

  /** A host's slots, from its latest load (1 before it said one). */
  #slots(host: string): number {
    const s = this.#states.get(host)?.load;
    return s?.state === 'live' ? s.load.slots : 1;
  }

  #views(): LoadView[] {
    // Made for each action a pass looks at, and every load message and job's end makes a
    // pass: no entry arrays or iterators of its own.
    const views: LoadView[] = [];
    this.#states.forEach((s, host) => {
      views.push({ load: s.load, own: this.#ledger.load(host, s.mark) });
    });
    return views;
  }
}
