/**
 * Operator `chooseHost`: a pure reducer (`scan`) over the answers of a cost poll, one
 * {@link Ballot} per answer; then {@link pickHost} names the host once the answers are in.
 *
 *     answers    --a(2)--b(0)--c(1)|
 *     chooseHost --A-----B|            A: best a (2); B: best b (0), idle: nothing beats it
 *
 * What is counted: each host's answer (its cost) and this client's own assignments there
 * (`view.load`, from the ledger: jobs sent after the poll went out are added to the cost,
 * see `effectiveCost`). Ties go to the host that answered first. A later answer from a host
 * already counted replaces its cost and keeps its place, so the same reducer folds a stream
 * of "latest load per host" as well as one poll's answers.
 */
import { type OperatorFunction, scan } from 'rxjs';
import type { Endpoint } from '../endpoint.js';
import type { CostSeen } from '../events.js';
import type { CostResult } from '../poll.js';
import {
  type CostAnswer,
  effectiveCost,
  type HostChoice,
  type HostLoad,
  pickCheapestHost,
} from '../select.js';

/** What a choice looks at beside the answers: this client's load per host, the hosts left out. */
export interface ChoiceView {
  /** This client's own jobs on `host` (the ledger), relative to the poll. */
  readonly load: (host: string) => HostLoad;
  /** Hosts never chosen (those that dropped this action's job). */
  readonly exclude: ReadonlySet<string>;
}

/** One result as folded: what it said, and what the choice needs of it. */
interface Counted {
  readonly host: string;
  readonly endpoint: Endpoint;
  /** The answered cost; `undefined` for a failure. */
  readonly cost: number | undefined;
  /** Connected, no answer in time. */
  readonly slow: boolean;
  readonly seen: CostSeen;
}

/**
 * The answers so far, folded: a persistent list, the result folded last and the ballot
 * before it. Folding one more result is O(1) whatever the number of hosts (a poll of 64
 * hosts used to copy its arrays and map at every answer: O(hosts²) per action); the arrays
 * a choice reads are built from the list when read, once per choice. Never changed once
 * made, so every ballot a fold emitted stays as it was.
 */
export class Ballot {
  constructor(
    readonly before: Ballot | undefined,
    readonly counted: Counted | undefined,
    /** An answer with an effective cost of 0 came in: nothing can beat it, stop listening. */
    readonly idle: boolean,
  ) {}

  /** The results folded so far, oldest first. */
  #results(): Counted[] {
    const out: Counted[] = [];
    for (let b: Ballot | undefined = this; b !== undefined; b = b.before) {
      if (b.counted !== undefined) out.push(b.counted);
    }
    return out.reverse();
  }

  /** The last result folded in, as reported; `undefined` before the first. */
  get last(): CostSeen | undefined {
    return this.counted?.seen;
  }

  /** Every result as the events report it, in arrival order. */
  get seen(): readonly CostSeen[] {
    return this.#results().map((c) => c.seen);
  }

  /** Answered costs, in arrival order (a host once: a later answer replaces its cost there). */
  get answers(): readonly CostAnswer[] {
    const out: CostAnswer[] = [];
    const at = new Map<string, number>();
    for (const c of this.#results()) {
      if (c.cost === undefined) continue;
      const answer = { host: c.host, cost: c.cost };
      const i = at.get(c.host);
      if (i === undefined) {
        at.set(c.host, out.length);
        out.push(answer);
      } else {
        out[i] = answer;
      }
    }
    return out;
  }

  /** Hosts that connected but did not answer in time: up and busy. */
  get slow(): readonly string[] {
    return this.#results()
      .filter((c) => c.slow)
      .map((c) => c.host);
  }

  /** Where each answered or slow host is. */
  get endpoints(): ReadonlyMap<string, Endpoint> {
    const out = new Map<string, Endpoint>();
    for (const c of this.#results()) {
      if (c.cost !== undefined || c.slow) out.set(c.host, c.endpoint);
    }
    return out;
  }
}

export const EMPTY_BALLOT = new Ballot(undefined, undefined, false);

/** Folds one poll result into a ballot (pure: a new ballot, the old one untouched). */
export function countAnswer(ballot: Ballot, r: CostResult, view: ChoiceView): Ballot {
  if (r.ok) {
    const eff = view.exclude.has(r.host) ? undefined : effectiveCost(r.cost, view.load(r.host));
    const seen: CostSeen = {
      host: r.host,
      cost: r.cost,
      ...(eff === undefined ? {} : { effectiveCost: eff }),
      rttMs: r.rttMs,
    };
    const counted = { host: r.host, endpoint: r.endpoint, cost: r.cost, slow: false, seen };
    return new Ballot(ballot, counted, eff === 0);
  }
  const seen: CostSeen = { host: r.host, error: r.error, rttMs: r.rttMs };
  const slow = r.failure === 'slow';
  return new Ballot(
    ballot,
    { host: r.host, endpoint: r.endpoint, cost: undefined, slow, seen },
    false,
  );
}

/** The ballot after each poll result: `scan` over {@link countAnswer}. */
export function chooseHost(view: ChoiceView): OperatorFunction<CostResult, Ballot> {
  return scan((ballot: Ballot, r: CostResult) => countAnswer(ballot, r, view), EMPTY_BALLOT);
}

/** How {@link pickHost} may choose beyond the cheapest answer. */
export interface PickOptions {
  /**
   * The ballot is from a poll made for this choice (not one used up by an earlier attempt):
   * a slow host may be taken, and an idle answer is `first-idle`.
   */
  readonly fresh: boolean;
  /** This is the action's n-th attempt: past the first, the reason is `retry`. */
  readonly attempt: number;
  /** This client's jobs running on `host` now. */
  readonly inFlight: (host: string) => number;
  /** Hosts known to listen without answering: never taken as slow hosts. */
  readonly silent?: ((host: string) => boolean) | undefined;
}

/** The host chosen from a ballot, with where it is; `undefined` when none is left. */
export type Pick = HostChoice & { readonly endpoint: Endpoint };

/**
 * The host an action goes to: the lowest effective cost among the answers (ties to the
 * first answer); failing that, on a fresh poll, the slow host running fewest of our jobs.
 */
export function pickHost(ballot: Ballot, view: ChoiceView, o: PickOptions): Pick | undefined {
  const choice =
    pickCheapestHost(ballot.answers, view.load, view.exclude) ??
    (o.fresh ? leastAssigned(ballot, view, o) : undefined);
  if (choice === undefined) return undefined;
  const reason = o.attempt > 1 ? 'retry' : ballot.idle && o.fresh ? 'first-idle' : choice.reason;
  return { ...choice, reason, endpoint: ballot.endpoints.get(choice.host) as Endpoint };
}

/**
 * No host answered in time, but some were up and slow to answer (busy, or on a loaded
 * machine): rather than give up on them, take the one running fewest of our jobs.
 */
function leastAssigned(ballot: Ballot, view: ChoiceView, o: PickOptions): HostChoice | undefined {
  let best: HostChoice | undefined;
  for (const host of ballot.slow) {
    if (view.exclude.has(host) || o.silent?.(host) === true) continue;
    const mine = o.inFlight(host);
    if (best === undefined || mine < best.effectiveCost) {
      best = { host, effectiveCost: mine, reason: 'slow-host' };
    }
  }
  return best;
}
