/** Thrown by {@link JobSlots.acquire} when the waiter's signal aborts (its client left). */
export class SlotWaitAborted extends Error {
  override readonly name = 'SlotWaitAborted';
}

/**
 * `--max-jobs`: at most `max` jobs run at once; further commands wait in FIFO order (they
 * still count in the cost) and are never refused. A waiter whose connection ends leaves
 * the queue.
 */
export class JobSlots {
  readonly #max: number;
  #running = 0;
  readonly #waiters: Array<{ grant: () => void; signal: AbortSignal; onAbort: () => void }> = [];
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

  /** Waits for a slot; the returned function gives it back (idempotent). */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(new SlotWaitAborted('aborted before a slot'));
    if (this.#running < this.#max) {
      this.#running++;
      this.#onChange();
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        signal,
        grant: () => {
          signal.removeEventListener('abort', waiter.onAbort);
          this.#running++;
          this.#onChange();
          resolve(this.#releaser());
        },
        onAbort: () => {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          this.#onChange();
          reject(new SlotWaitAborted('aborted while queued'));
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#onChange();
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#running--;
      this.#waiters.shift()?.grant();
      this.#onChange();
    };
  }
}
