/**
 * How this client talks to one server about one job, decided once, as data, from what the
 * host offered (its cost reply: base, or ours with its extensions), then carried out by the
 * transport (`transport.ts`, `sendJobOnce`). Four ways:
 *
 * - `base`: the reference protocol exactly (PROTOCOL.md): `!R` and the files, `!C`, the
 *   reply, `!D`. No hello, no `!X`, no `!M`.
 * - `extended`: a hello, its `ok` awaited (with a challenge answered when the host wants a
 *   token); then, if granted, the cache's `have` → `need`; then the job.
 * - `extended-cache`: a hello with the `have` right behind it (the host wants no token and
 *   has `cache`); its `need` read after the `ok`; then the job. One round trip less.
 * - `pushed`: a hello with the whole job right behind it (the host has `push` and `mode`,
 *   wants no token, and there is nothing to ask the cache): one round trip per job.
 *
 * What the `ok` then grants is checked against the plan (`staleFor`): a host that grants less
 * than its cost reply promised is believed from then on, and the job starts again.
 */
import type { Extension } from '../protocol/extensions.js';
import type { OutgoingFile } from '../protocol/filestream.js';
import type { Token } from '../protocol/token.js';
import {
  CACHE_MIN_BYTES,
  type ContentHasher,
  type HaveOffer,
  haveOffer,
  type PeerInfo,
} from './negotiate.js';

/** A plan of one of the four kinds (see the module's comment). */
export type JobPlan =
  | { readonly kind: 'base'; readonly files: readonly OutgoingFile[] }
  | {
      readonly kind: 'extended';
      readonly files: readonly OutgoingFile[];
      readonly cwd: string | undefined;
      /** The job may be answered from the host's stored results (`!X lookup`), if granted. */
      readonly lookup: boolean;
    }
  | {
      readonly kind: 'extended-cache';
      readonly files: readonly OutgoingFile[];
      readonly cwd: string | undefined;
      readonly lookup: boolean;
      /** The `have` sent behind the hello. */
      readonly offer: HaveOffer;
    }
  | {
      readonly kind: 'pushed';
      readonly files: readonly OutgoingFile[];
      readonly cwd: string | undefined;
      /** The host says when a queued job starts (extension `queue`, from its cost reply). */
      readonly queue: boolean;
      /** The host beats: its held `ok` is bounded by its heartbeat. */
      readonly beats: boolean;
    };

/** What the plan is made from besides the host's self-description. */
export interface PlanInput {
  /** The job's files, laid out for this host (`jobLayout`). */
  readonly files: readonly OutgoingFile[];
  /** The directory the command runs in, inside the job directory (extension `cwd`). */
  readonly cwd: string | undefined;
  /** The token this client proves itself with to this host, if any. */
  readonly token: Token | undefined;
  /** The job may be answered from the host's stored results (`--cache`). */
  readonly cacheable: boolean;
  /** Sending ahead of the hello's `ok` is allowed (false once a host granted less). */
  readonly mayOfferEarly: boolean;
  /** Names files by content for a `have`. */
  readonly hasher: ContentHasher;
}

/**
 * The plan for a job to a host that described itself as `peer`. Asynchronous only because
 * an `extended-cache` plan hashes the files it lists.
 */
export async function planJob(peer: PeerInfo, input: PlanInput): Promise<JobPlan> {
  const { files, cwd } = input;
  // A base-mode host gets exactly the base protocol.
  if (peer.kind === 'base') return { kind: 'base', files };
  const has = (e: Extension) => peer.extensions.includes(e);
  // To a host that said it wants no token, what follows the hello is sent without waiting
  // for its `ok`: the server reads them in order.
  const ahead = input.mayOfferEarly && !peer.authRequired && input.token === undefined;
  // Pushed ahead, the files carry modes: only to a host that said it has both.
  const pushAhead = ahead && has('push') && has('mode');
  const offer =
    ahead && has('cache') && files.length > 0
      ? await haveOffer(files, input.hasher, pushAhead ? CACHE_MIN_BYTES : 0)
      : undefined;
  if (offer !== undefined) {
    return { kind: 'extended-cache', files, cwd, lookup: input.cacheable, offer };
  }
  // With `push` and nothing to ask the cache, the whole job follows the hello at once. A job
  // that may be cached waits for the `ok` instead: only its `ext=` says whether the host
  // keeps results (extension `results`, not in the cost reply) for `!X lookup`.
  if (pushAhead && !input.cacheable) {
    return { kind: 'pushed', files, cwd, queue: has('queue'), beats: has('beat') };
  }
  return { kind: 'extended', files, cwd, lookup: input.cacheable };
}

/**
 * True when the extensions the `ok` granted fall short of what the plan already sent on
 * their promise: the `have` (no `cache`), files placed under `cwd` (no `cwd`), a pushed job
 * (no `push` or no `mode`).
 */
export function staleFor(plan: JobPlan, granted: ReadonlySet<Extension>): boolean {
  switch (plan.kind) {
    case 'base':
      return false;
    case 'extended':
      return plan.cwd !== undefined && !granted.has('cwd');
    case 'extended-cache':
      return !granted.has('cache') || (plan.cwd !== undefined && !granted.has('cwd'));
    case 'pushed':
      return (
        !(granted.has('push') && granted.has('mode')) ||
        (plan.cwd !== undefined && !granted.has('cwd'))
      );
  }
}
