import type { JobProcess, Launcher, PreparedLaunch } from './launcher.js';

/** Thrown by {@link JobSlots.acquire} when the waiter's signal aborts (its client left). */
export class SlotWaitAborted extends Error {
  override readonly name = 'SlotWaitAborted';
}

/** A job slot held, from {@link JobSlots.acquire} until `release`. */
export interface SlotHold {
  /** Gives the slot back (idempotent): to the next waiter, or free. */
  release(): void;
  /**
   * The slot's job has started as `job`: the first queued command may now be chained to it,
   * to start the moment it ends (see {@link JobSlots}).
   */
  running(job: JobProcess): void;
  /**
   * The job prepared for this slot while it waited (chained to the job before it), if it
   * was: start it with its `start`, which returns it if the launcher started it already.
   */
  readonly prepared: PreparedLaunch | undefined;
}

interface Holder {
  released: boolean;
  /** The slot's job, once started ({@link SlotHold.running}). */
  job?: JobProcess;
  /** The waiter chained to start when {@link job} ends; the slot is theirs then. */
  successor?: Waiter | undefined;
  /** The successor started already and took the slot over: `release` frees nothing. */
  handedOver: boolean;
}

interface Waiter {
  readonly signal: AbortSignal;
  /** Makes the waiter's job ready, when it is about to be chained. */
  readonly prepare: (() => PreparedLaunch | undefined) | undefined;
  /** What `prepare` made; undefined until then, or when it could not. */
  prepared: PreparedLaunch | undefined;
  /** `prepare` was called. */
  tried: boolean;
  /** The holder this waiter is chained to. */
  after?: Holder | undefined;
  grant(): void;
  readonly onAbort: () => void;
}

/**
 * `--max-jobs`: at most `max` jobs run at once; further commands wait in FIFO order (they
 * still count in the cost) and are never refused. A waiter whose connection ends leaves
 * the queue.
 *
 * A waiter whose job the launcher can prepare ({@link PreparedLaunch}: the spawn helper's) is
 * chained, in queue order, to a running job that has no successor yet (its job prepared
 * then, not before: a long queue holds no more prepared jobs than there are slots): the
 * launcher starts
 * it the moment that job's shell ends, without waiting for the server to hear of the end,
 * send the reply and give the slot back (docs/server.md, "A queued job starts in the
 * helper"). The slot passes from the one to the other: when the chained job starts first,
 * it is granted then and the ended job's `release` frees nothing; when the ended job's
 * `release` comes first, its slot goes to its successor, whatever the queue order. A
 * waiter granted a slot in the ordinary way while chained to another job is unchained (its
 * `start` then tells the launcher to start it now). Nothing jumps a waiter that cannot be
 * prepared: chaining stops at the first such one.
 */
export class JobSlots {
  readonly #max: number;
  #running = 0;
  readonly #waiters: Waiter[] = [];
  /** Slots held, in the order they were granted (the oldest job is likeliest to end first). */
  readonly #holders = new Set<Holder>();
  /** Told of every change of {@link running} or {@link queued} (the load feed). */
  readonly #onChange: () => void;

  constructor(max: number, onChange: () => void = () => {}) {
    this.#max = Math.max(1, Math.floor(max));
    this.#onChange = onChange;
  }

  /** Jobs that may run at once (`--max-jobs`). */
  get max(): number {
    return this.#max;
  }

  /** Jobs holding a slot now. */
  get running(): number {
    return this.#running;
  }

  /** True when a command would start at once (a slot is free). */
  get available(): boolean {
    return this.#running < this.#max;
  }

  /** Commands waiting for a slot. */
  get queued(): number {
    return this.#waiters.length;
  }

  /**
   * Waits for a slot. `prepare` makes the job ready ahead of its slot (the launcher's
   * {@link Launcher.prepare}); it is called only when the waiter is about to be chained to a
   * running job (so a long queue holds no more prepared jobs than there are slots), and the
   * launcher may then start the job before this resolves: the hold's `prepared` says so,
   * and the caller starts it with its `start` all the same. A waiter that aborts has its
   * prepared job dropped.
   */
  acquire(signal: AbortSignal, prepare?: () => PreparedLaunch | undefined): Promise<SlotHold> {
    if (signal.aborted) return Promise.reject(new SlotWaitAborted('aborted before a slot'));
    if (this.#running < this.#max) {
      this.#running++;
      this.#onChange();
      return Promise.resolve(this.#hold(undefined));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        signal,
        prepare,
        prepared: undefined,
        tried: false,
        grant: () => {
          signal.removeEventListener('abort', waiter.onAbort);
          if (waiter.prepared !== undefined) waiter.prepared.onEarlyStart = undefined;
          resolve(this.#hold(waiter.prepared));
        },
        onAbort: () => {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          this.#unchain(waiter);
          waiter.prepared?.drop();
          this.#chain();
          this.#onChange();
          reject(new SlotWaitAborted('aborted while queued'));
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#chain();
      this.#onChange();
    });
  }

  /** A new holder of a slot already counted in {@link running}. */
  #hold(prepared: PreparedLaunch | undefined): SlotHold {
    const holder: Holder = { released: false, handedOver: false };
    this.#holders.add(holder);
    return {
      prepared,
      release: () => this.#release(holder),
      running: (job) => {
        if (holder.released || holder.job !== undefined) return;
        holder.job = job;
        this.#chain();
      },
    };
  }

  #release(holder: Holder): void {
    if (holder.released) return;
    holder.released = true;
    this.#holders.delete(holder);
    if (holder.handedOver) return;
    const successor = holder.successor;
    if (successor !== undefined) {
      // Chained to this job: the slot is theirs, started already or about to be.
      this.#take(successor);
      successor.grant();
    } else {
      this.#running--;
      const next = this.#waiters[0];
      if (next !== undefined) {
        this.#take(next);
        // Chained to another job that is still running: it starts now instead.
        this.#unchain(next);
        this.#running++;
        next.grant();
      }
    }
    this.#chain();
    this.#onChange();
  }

  /** The launcher started `waiter`'s job as the one it was chained to ended. */
  #earlyStart(waiter: Waiter): void {
    const holder = waiter.after;
    if (holder === undefined || !this.#waiters.includes(waiter)) return;
    this.#take(waiter);
    holder.handedOver = true;
    holder.successor = undefined;
    waiter.after = undefined;
    waiter.grant();
    this.#chain();
    this.#onChange();
  }

  /** The waiter's prepared job, made now if it has not been tried; undefined if it cannot be. */
  #prepared(waiter: Waiter): PreparedLaunch | undefined {
    if (!waiter.tried) {
      waiter.tried = true;
      waiter.prepared = waiter.prepare?.();
      if (waiter.prepared !== undefined) {
        waiter.prepared.onEarlyStart = () => this.#earlyStart(waiter);
      }
    }
    return waiter.prepared;
  }

  /** Takes `waiter` out of the queue. */
  #take(waiter: Waiter): void {
    const i = this.#waiters.indexOf(waiter);
    if (i >= 0) this.#waiters.splice(i, 1);
  }

  #unchain(waiter: Waiter): void {
    if (waiter.after !== undefined) waiter.after.successor = undefined;
    waiter.after = undefined;
  }

  /** Chains waiters, in queue order, to running jobs without a successor, oldest first. */
  #chain(): void {
    let holders: Holder[] | undefined;
    for (const waiter of this.#waiters) {
      if (waiter.after !== undefined) continue;
      if (waiter.prepare === undefined) return;
      holders ??= [...this.#holders];
      let chained = false;
      while (!chained) {
        const holder = holders.shift();
        if (holder === undefined) return;
        if (holder.released || holder.handedOver || holder.successor !== undefined) continue;
        const job = holder.job;
        if (job?.chain === undefined) continue;
        const prepared = this.#prepared(waiter);
        if (prepared === undefined) return;
        if (!job.chain(prepared)) continue;
        holder.successor = waiter;
        waiter.after = holder;
        chained = true;
      }
    }
  }
}
