/**
 * Polls `check` every `every` ms for up to `ms`; resolves how long it took, or `undefined`
 * if it never held. The one polling loop the specs share (bounded in time, like every loop).
 */
export async function pollUntil(
  check: () => boolean | Promise<boolean>,
  { ms = 10_000, every = 20 }: { ms?: number; every?: number } = {},
): Promise<number | undefined> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start >= ms) return undefined;
    await new Promise((r) => setTimeout(r, every));
  }
}

/** {@link pollUntil}, but throws `timed out waiting for <what>` when the time is up. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  {
    ms = 10_000,
    every = 20,
    what = 'condition',
  }: { ms?: number; every?: number; what?: string } = {},
): Promise<number> {
  const took = await pollUntil(check, { ms, every });
  if (took === undefined) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  return took;
}
