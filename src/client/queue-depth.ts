/**
 * How many jobs beyond its slots each host is given (issue 20, dispatch): a one-slot server's
 * next job must already be there when its slot frees, or the slot idles while the client
 * reads the reply, releases, places and sends the next one. How many jobs cover that gap
 * depends on the job and on how fast the client reacts: a 100 ms job covers it alone (one
 * queued job is plenty, more only pile work on a host another may free first), a `true` of
 * a millisecond on a busy machine needs several.
 *
 * The client cannot time that gap itself (its own delays land in every time it measures), but
 * a rake-ts server says whether a job waited for a slot (extension `queue`), and that is the
 * signal: a job placed **behind** the host's slots (this client had `slots` or more of its own
 * jobs there already) that **started at once** found the slot free: the jobs ahead of it had
 * all ended before it arrived, so the slot idled: the queue is one deeper (up to
 * {@link MAX_QUEUE_DEPTH}). A job placed behind that **waited longer than a job's run** had
 * slack: after {@link SLACK_TO_SHALLOW} × depth such jobs in a row, one shallower (down to
 * {@link MIN_QUEUE_DEPTH}). Jobs placed at a free slot, and base hosts (no `queue`), say
 * nothing. Every host starts at {@link MIN_QUEUE_DEPTH}.
 *
 * Measured (scale.ts, 5 interleaved rounds, load 7-16): a fixed queue of 1 won 400 ×
 * `remote-sleep 0.1` on 8 one-slot hosts, 4 won 500 × `remote-true` on 2; neither won both.
 */

/** One finished job on a host of ours, as this client saw it. */
export interface JobSample {
  /** This client had at least the host's slots of its own jobs there when it was placed. */
  readonly behind: boolean;
  /** Time it waited on the server for a slot (`PhaseTimings.queued`; 0: started at once). */
  readonly queuedMs: number;
  /** The command's run (`PhaseTimings.run`). */
  readonly runMs: number;
}

export const MIN_QUEUE_DEPTH = 1;
export const MAX_QUEUE_DEPTH = 8;
/** Jobs with slack in a row, per level of depth, before the queue is made shallower. */
export const SLACK_TO_SHALLOW = 4;

interface HostState {
  depth: number;
  /** Jobs in a row that waited longer than a run (slack). */
  slack: number;
}

/** Per-host queue depths from finished jobs (pure state; no clock of its own). */
export class AdaptiveQueue {
  readonly #hosts = new Map<string, HostState>();

  /** Takes one finished job on `host` into account; returns the host's depth after it. */
  note(host: string, sample: JobSample): number {
    let s = this.#hosts.get(host);
    if (s === undefined) {
      s = { depth: MIN_QUEUE_DEPTH, slack: 0 };
      this.#hosts.set(host, s);
    }
    if (!sample.behind) return s.depth;
    if (sample.queuedMs <= 0) {
      // Placed behind the slots, yet the slot was free on arrival: it idled.
      s.depth = Math.min(MAX_QUEUE_DEPTH, s.depth + 1);
      s.slack = 0;
    } else if (sample.queuedMs > sample.runMs) {
      s.slack++;
      if (s.slack >= SLACK_TO_SHALLOW * s.depth) {
        s.depth = Math.max(MIN_QUEUE_DEPTH, s.depth - 1);
        s.slack = 0;
      }
    } else s.slack = 0;
    return s.depth;
  }

  /** Jobs `host` may hold beyond its slots now. */
  depth(host: string): number {
    return this.#hosts.get(host)?.depth ?? MIN_QUEUE_DEPTH;
  }
}
