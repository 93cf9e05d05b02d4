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

/** The answers so far, folded. */
export interface Ballot {
  /** Answered costs, in arrival order (a host once). */
  readonly answers: readonly CostAnswer[];
  /** Hosts that connected but did not answer in time: up and busy. */
  readonly slow: readonly string[];
  /** Where each answered or slow host is. */
  readonly endpoints: ReadonlyMap<string, Endpoint>;
  /** Every result as the events report it, in arrival order. */
  readonly seen: readonly CostSeen[];
  /** The last result folded in, as reported; `undefined` before the first. */
  readonly last: CostSeen | undefined;
  /** An answer with an effective cost of 0 came in: nothing can beat it, stop listening. */
  readonly idle: boolean;
}

export const EMPTY_BALLOT: Ballot = {
  answers: [],
  slow: [],
  endpoints: new Map(),
  seen: [],
  last: undefined,
  idle: false,
};

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
    const at = ballot.answers.findIndex((a) => a.host === r.host);
    const answer = { host: r.host, cost: r.cost };
    return {
      ...ballot,
      answers:
        at < 0
          ? [...ballot.answers, answer]
          : ballot.answers.map((a, i) => (i === at ? answer : a)),
      endpoints: new Map(ballot.endpoints).set(r.host, r.endpoint),
      seen: [...ballot.seen, seen],
      last: seen,
      idle: eff === 0,
    };
  }
  const seen: CostSeen = { host: r.host, error: r.error, rttMs: r.rttMs };
  const slow = r.failure === 'slow';
  return {
    ...ballot,
    slow: slow ? [...ballot.slow, r.host] : ballot.slow,
    endpoints: slow ? new Map(ballot.endpoints).set(r.host, r.endpoint) : ballot.endpoints,
    seen: [...ballot.seen, seen],
    last: seen,
    idle: false,
  };
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
