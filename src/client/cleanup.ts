/**
 * Work that outlives an unsubscribe: a cancelled download removing its temporary file, an
 * embedded server stopping. Unsubscribing is synchronous, so this is where a program that
 * is about to exit (the CLI on Ctrl-C) waits for that work: `await whenSettled()`.
 */
const pending = new Set<Promise<unknown>>();

/** Registers work to be awaited by {@link whenSettled}. Its failure is ignored. */
export function trackCleanup(work: Promise<unknown>): void {
  // One promise per piece of work (every step of every job is tracked): settled, it leaves.
  const settled = () => {
    pending.delete(p);
  };
  const p: Promise<void> = work.then(settled, settled);
  pending.add(p);
}

/**
 * Resolves once every tracked piece of work has finished (including work that starts
 * while waiting), or after `timeoutMs`, whichever comes first.
 */
export async function whenSettled(timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pending.size > 0) {
    const left = deadline - Date.now();
    if (left <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...pending]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, left);
      }),
    ]);
    clearTimeout(timer);
  }
}
