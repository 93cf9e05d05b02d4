import type { HostLoad } from './load-stream.js';
import type { HostLoad as OwnLedgerLoad } from './select.js';

/**
 * This client's own jobs on a host, as its ledger sees them (`select.ts`, `Assignments`):
 * `inFlight` running there now, `sincePoll` of those placed after the host's latest load
 * arrived, which that load therefore may not count yet.
 */
export type OwnLoad = OwnLedgerLoad;

/** One host for {@link chooseByLoad}: its latest load stream state and this client's jobs there. */
export interface LoadView {
  readonly load: HostLoad;
  readonly own: OwnLoad;
}

/** Why a host was chosen from load streams. */
export type LoadChoiceReason = 'only-host' | 'most-free' | 'tie-first-listed';

/**
 * What {@link chooseByLoad} decides for one action: a `host`; `wait` (a host has not said
 * its first load yet, or every host that has is full, slots and queue); `none` (no host streams
 * its load — lost, unsupported or left out —, or the streaming ones are full and some host
 * cannot stream: poll instead, as for a base host).
 */
export type LoadChoice =
  | {
      readonly kind: 'host';
      readonly host: string;
      /** The host's free slots before this action (negative: it queues there). */
      readonly free: number;
      readonly reason: LoadChoiceReason;
    }
  | { readonly kind: 'wait' }
  | { readonly kind: 'none' };

/**
 * The jobs a host holds as this client should count them: its latest load (every client's
 * jobs) plus this client's placed since it was sent; never fewer than this client's own jobs
 * there (those placed before may not have reached it yet, but will).
 */
export function heldJobs(jobs: number, own: OwnLoad): number {
  return Math.max(jobs + own.sincePoll, own.inFlight);
}

/**
 * Picks a host from the latest loads, a pure function: the live host with the most free
 * slots (`slots` − {@link heldJobs} − its `--cost-offset`); a tie goes to the less loaded
 * for its size ((held + offset) ÷ slots), then to the host listed first. A host is a candidate only while it holds fewer than
 * its slots plus `queue` jobs, so actions wait for a slot near a host instead of piling up
 * behind the first ones (dispatch keeps each host's slots full plus a small queue).
 */
export function chooseByLoad(
  views: readonly LoadView[],
  options: {
    /** Jobs a host may hold beyond its slots: one number, or per host (`AdaptiveQueue`). */
    readonly queue: number | ((host: string, slots: number) => number);
    readonly exclude?: ReadonlySet<string>;
    /**
     * Hosts not heard from yet are passed over instead of waited for (the run's first moments
     * are over: `LoadDispatcher`'s opening grace); they are chosen once they speak.
     */
    readonly passOverWaiting?: boolean;
  },
): LoadChoice {
  let best: { host: string; free: number; rank: number; ratio: number } | undefined;
  let tied = false;
  let live = 0;
  let pending = false;
  let polled = false;
  for (let i = 0; i < views.length; i++) {
    const { load, own } = views[i] as LoadView;
    if (options.exclude?.has(load.host)) continue;
    if (load.state === 'waiting' && options.passOverWaiting !== true) pending = true;
    if (load.state === 'unsupported') polled = true;
    if (load.state !== 'live') continue;
    live++;
    const held = heldJobs(load.load.jobs, own);
    const queue =
      typeof options.queue === 'number' ? options.queue : options.queue(load.host, load.load.slots);
    if (held >= load.load.slots + queue) continue;
    const free = load.load.slots - held;
    // A `--cost-offset` counts as jobs held when ranking (as in a cost answer), not when
    // deciding whether the host has room: a dearer host is used last, but used.
    const offset = load.load.offset ?? 0;
    const rank = free - offset;
    const ratio = (held + offset) / load.load.slots;
    if (best === undefined || rank > best.rank || (rank === best.rank && ratio < best.ratio)) {
      best = { host: load.host, free, rank, ratio };
      tied = false;
    } else if (rank === best.rank && ratio === best.ratio) {
      tied = true;
    }
  }
  // A host not heard from yet (the run's first moments) may be the idle one: wait for its
  // first load (or for it to be lost) rather than pile the first actions on the first host.
  if (pending) return { kind: 'wait' };
  if (best !== undefined) {
    const reason: LoadChoiceReason =
      live === 1 ? 'only-host' : tied ? 'tie-first-listed' : 'most-free';
    return { kind: 'host', host: best.host, free: best.free, reason };
  }
  // Hosts that are polled may have room when the streaming ones are full.
  if (polled) return { kind: 'none' };
  return live > 0 || pending ? { kind: 'wait' } : { kind: 'none' };
}
