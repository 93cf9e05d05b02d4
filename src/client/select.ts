import type { ChoiceReason } from './events.js';

/** One host's successful answer in a cost poll, in the order answers arrived. */
export interface CostAnswer {
  /** `host:port`. */
  readonly host: string;
  readonly cost: number;
}

/**
 * This client's own load on one host, as the ledger sees it when an action picks.
 * `inFlight`: assignments still running there. `sincePoll`: those of them made after the
 * poll's queries went out, which the host's answer therefore cannot include.
 */
export interface HostLoad {
  readonly inFlight: number;
  readonly sincePoll: number;
}

const IDLE: HostLoad = { inFlight: 0, sincePoll: 0 };

/**
 * The cost an action should compare: the host's answer plus what it cannot know yet.
 *
 * A host's answer counts the jobs it holds when it answers, from every client. Of this
 * client's jobs there, those assigned after the query was sent are certainly missing from
 * it, so they are added (`cost + sincePoll`). Those assigned before may or may not have
 * reached the host yet; but the host holds at least all of them once they arrive, so the
 * cost is never below `inFlight`. With one client and idle hosts this is exactly the
 * number of jobs this client runs there, which is what makes parallel actions spread
 * deterministically (docs/client.md, "Spreading").
 */
export function effectiveCost(cost: number, load: HostLoad = IDLE): number {
  return Math.max(cost + load.sincePoll, load.inFlight);
}

/** The host an action goes to, and why. */
export interface HostChoice {
  readonly host: string;
  readonly effectiveCost: number;
  readonly reason: ChoiceReason;
}

/**
 * Picks the host with the lowest effective cost; a tie goes to the host that answered
 * first (`answers` are in arrival order). Pure: the caller supplies this client's load per
 * host and the hosts to leave out (already tried). `undefined` when no host is left.
 */
export function pickCheapestHost(
  answers: readonly CostAnswer[],
  loads: (host: string) => HostLoad,
  exclude: ReadonlySet<string> = new Set(),
): HostChoice | undefined {
  let best: { host: string; cost: number } | undefined;
  let tied = false;
  let candidates = 0;
  for (const a of answers) {
    if (exclude.has(a.host)) continue;
    candidates++;
    const cost = effectiveCost(a.cost, loads(a.host));
    if (best === undefined || cost < best.cost) {
      best = { host: a.host, cost };
      tied = false;
    } else if (cost === best.cost) {
      tied = true;
    }
  }
  if (best === undefined) return undefined;
  const reason: ChoiceReason =
    candidates === 1 ? 'only-host' : tied ? 'tie-first-answer' : 'cheapest';
  return { host: best.host, effectiveCost: best.cost, reason };
}

/**
 * How many of this run's jobs a host that runs `slots` jobs at once is given before an
 * action waits for one of them to end (late binding, docs/client.md): its slots, and as
 * many again queued there, so a freed slot never waits for the client. A host that does not
 * say (the base protocol, older servers) gets every job it is the cheapest for, as before.
 */
export function hostCapacity(slots: number | undefined): number {
  return slots === undefined ? Number.POSITIVE_INFINITY : 2 * slots;
}

/**
 * Like {@link pickCheapestHost}, but a host whose capacity (`capacity(host)`) our jobs
 * already fill is not taken. Waiting for it is worth as much as `waitingAhead` more jobs
 * queued there (the actions already waiting go first), so the cheapest host with room is
 * taken if its effective cost is no higher than the full one's plus `waitingAhead`: a host
 * that was busy with other clients' jobs when polled still gets its share, as it did when
 * every action queued on a host at once. `full`: the action should wait for one of our
 * jobs to end.
 */
export function pickHostWithRoom(
  answers: readonly CostAnswer[],
  loads: (host: string) => HostLoad,
  capacity: (host: string) => number,
  exclude: ReadonlySet<string> = new Set(),
  waitingAhead = 0,
): HostChoice | 'full' | undefined {
  const best = pickCheapestHost(answers, loads, exclude);
  if (best === undefined) return undefined;
  const hasRoom = (host: string) => loads(host).inFlight < capacity(host);
  if (hasRoom(best.host)) return best;
  const roomy = answers.filter((a) => !exclude.has(a.host) && hasRoom(a.host));
  const alternative = pickCheapestHost(roomy, loads);
  if (alternative !== undefined && alternative.effectiveCost <= best.effectiveCost + waitingAhead) {
    const tie = alternative.effectiveCost === best.effectiveCost;
    return { ...alternative, reason: tie ? 'tie-first-answer' : 'cheapest' };
  }
  return 'full';
}

/** A job this client has placed on a host; release it when the job's connection ends. */
export interface Assignment {
  readonly host: string;
  readonly seq: number;
  release(): void;
}

/**
 * This run's own assignments per host (the "ledger"). Every assignment and every poll
 * gets a number from one counter, so "assigned after this poll was sent" is a comparison
 * of numbers, not of clocks.
 */
export class Assignments {
  #seq = 0;
  /** Per host, the sequence numbers of running assignments, ascending. */
  readonly #running = new Map<string, number[]>();
  /** Every assignment ever made per host (for the summary). */
  readonly #total = new Map<string, number>();
  /** Actions waiting for room on a host (late binding), first come, first served. */
  readonly #waiting: Waiter[] = [];
  /** Releases not yet passed on to a waiter. */
  #wakes = 0;
  #flushing = false;
  readonly #later: (task: () => void) => void;

  /**
   * `later` runs a task after the current one: waiters are woken there, not inside the
   * release, so that tearing a run down (Ctrl-C, `--fail-fast`), which releases the running
   * jobs one by one, never starts a waiting action it is about to cancel (default:
   * `queueMicrotask`; tests pass their scheduler's).
   */
  constructor(later: (task: () => void) => void = queueMicrotask) {
    this.#later = later;
  }

  /** Marks the instant a poll's queries go out; pass the result to {@link load}. */
  mark(): number {
    return ++this.#seq;
  }

  /** Records a job placed on `host`. */
  assign(host: string): Assignment {
    const seq = ++this.#seq;
    let list = this.#running.get(host);
    if (list === undefined) {
      list = [];
      this.#running.set(host, list);
    }
    list.push(seq);
    this.#total.set(host, (this.#total.get(host) ?? 0) + 1);
    let released = false;
    return {
      host,
      seq,
      release: () => {
        if (released) return;
        released = true;
        const l = this.#running.get(host);
        const i = l === undefined ? -1 : lowerBound(l, seq);
        if (l !== undefined && l[i] === seq) l.splice(i, 1);
        if (this.#waiting.length === 0) return;
        this.#wakes++;
        if (!this.#flushing) {
          this.#flushing = true;
          this.#later(() => this.#flush());
        }
      },
    };
  }

  /** This client's load on `host` relative to a poll marked at `pollSeq`. */
  load(host: string, pollSeq: number): HostLoad {
    const list = this.#running.get(host);
    if (list === undefined || list.length === 0) return IDLE;
    return { inFlight: list.length, sincePoll: list.length - lowerBound(list, pollSeq + 1) };
  }

  /** Jobs running on `host` now. */
  inFlight(host: string): number {
    return this.#running.get(host)?.length ?? 0;
  }

  /**
   * Queues an action that found its hosts full. For each release, the first waiter whose
   * `ready()` says it can now choose a host leaves the queue and `go()` is called (soon
   * after the release, see the constructor); the others keep their places. Returns the
   * function that leaves the queue (idempotent).
   */
  waitForRoom(ready: () => boolean, go: () => void): () => void {
    const waiter: Waiter = { ready, go };
    this.#waiting.push(waiter);
    return () => {
      const i = this.#waiting.indexOf(waiter);
      if (i >= 0) this.#waiting.splice(i, 1);
    };
  }

  /** Actions waiting for room now. */
  get waiting(): number {
    return this.#waiting.length;
  }

  #flush(): void {
    this.#flushing = false;
    // One waiter per release: each takes the room one job left. (A release while a waiter
    // starts counts afresh, and schedules a flush of its own.)
    const wakes = this.#wakes;
    this.#wakes = 0;
    for (let n = wakes; n > 0; n--) {
      const i = this.#waiting.findIndex((w) => w.ready());
      if (i < 0) break;
      const [waiter] = this.#waiting.splice(i, 1);
      waiter?.go();
    }
  }

  /** Every assignment made so far per host. */
  totals(): Record<string, number> {
    return Object.fromEntries(this.#total);
  }
}

interface Waiter {
  readonly ready: () => boolean;
  readonly go: () => void;
}

/** Index of the first element >= `x` in ascending `list`. */
function lowerBound(list: readonly number[], x: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
