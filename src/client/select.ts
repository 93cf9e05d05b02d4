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
