/**
 * The one place where a {@link RakeEvent} becomes a log record. The engine logs through it
 * when `run()` is given a logger; an API user replaying events logs through the
 * {@link logEvents} operator. Field names are stable: docs/observability.md lists them.
 */
import type { Logger } from 'pino';
import { type MonoTypeOperatorFunction, tap } from 'rxjs';
import { hostKey } from '../client/endpoint.js';
import type { ActionRef, CostSeen, RakeEvent, RunSummary } from '../client/events.js';
import { unreachable } from '../util/unreachable.js';

/** The pino levels records are written at. */
export type RecordLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** A record ready for pino: its level, its fields, its message. */
export interface EventRecord {
  readonly level: RecordLevel;
  /** Always has `event` (the RakeEvent `type`); never pino's own `time`, `msg`, `level`. */
  readonly fields: Readonly<Record<string, unknown>> & { readonly event: RakeEvent['type'] };
  readonly msg: string;
}

/** The fields that say which action a record is about. */
function actionFields(a: ActionRef) {
  return {
    actionId: a.actionId,
    actionset: a.actionset,
    line: a.position.line,
    command: a.command,
    remote: a.remote,
  };
}

/** A cost answer as a record field: absent members left out. */
function costField(c: CostSeen) {
  return {
    host: c.host,
    ...(c.cost === undefined ? {} : { cost: c.cost }),
    ...(c.effectiveCost === undefined ? {} : { effectiveCost: c.effectiveCost }),
    ...(c.error === undefined ? {} : { error: c.error }),
    rttMs: c.rttMs,
  };
}

/**
 * Maps one event to its record. Levels: failures `error`; retries and fallbacks `warn`;
 * embedded servers, actionsets and the end of the run `info`; each step of an action
 * `debug`; each host's cost answer `trace`.
 */
export function eventRecord(e: RakeEvent): EventRecord {
  return { level: LEVEL_OF[e.type], ...recordBody(e) };
}

function recordBody(e: RakeEvent): Omit<EventRecord, 'level'> {
  switch (e.type) {
    case 'embedded-server-started': {
      const host = hostKey({ host: e.host, port: e.port });
      return {
        fields: { event: e.type, host, reason: e.reason },
        msg: `started an embedded server at ${host}`,
      };
    }
    case 'actionset-started':
      return {
        fields: {
          event: e.type,
          actionset: e.actionset,
          line: e.position.line,
          actions: e.actions,
        },
        msg: `actionset ${e.actionset} started`,
      };
    case 'cost-polled':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          pollId: e.pollId,
          ...costField(e.cost),
        },
        msg:
          e.cost.cost === undefined
            ? `${e.cost.host} not asked`
            : `${e.cost.host} costs ${e.cost.cost}`,
      };
    case 'host-chosen':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          host: e.host,
          reason: e.reason,
          attempt: e.attempt,
          costs: e.costs.map(costField),
        },
        msg: `${e.action.actionId} goes to ${e.host} (${e.reason})`,
      };
    case 'upload-done':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          host: e.host,
          files: e.files,
          bytes: e.bytes,
          durationMs: e.ms,
        },
        msg: `${e.action.actionId} uploaded ${e.files} file${e.files === 1 ? '' : 's'}`,
      };
    case 'output':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          host: e.host,
          bytes: e.stdout.size,
        },
        msg: `${e.action.actionId} printed output`,
      };
    case 'action-succeeded':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          host: e.host,
          exitStatus: e.exitStatus,
          files: e.files,
          downloadBytes: e.downloadBytes,
          ...(e.stderr === undefined || e.stderr === '' ? {} : { stderr: e.stderr }),
          phases: e.phases,
          attempts: e.attempts,
          durationMs: e.ms,
        },
        msg: `${e.action.actionId} succeeded on ${e.host}`,
      };
    case 'action-failed':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          ...(e.host === undefined ? {} : { host: e.host }),
          reason: e.reason,
          ...(e.exitStatus === undefined ? {} : { exitStatus: e.exitStatus }),
          message: e.message,
          ...(e.stderr === '' ? {} : { stderr: e.stderr }),
          phases: e.phases,
          attempts: e.attempts,
          durationMs: e.ms,
        },
        msg: `${e.action.actionId} failed: ${e.reason}`,
      };
    case 'action-queued':
      return {
        fields: { event: e.type, ...actionFields(e.action), host: e.host },
        msg: `${e.action.actionId} queued on ${e.host}: no free job slot`,
      };
    case 'action-started':
      return {
        fields: { event: e.type, ...actionFields(e.action), host: e.host, queuedMs: e.queuedMs },
        msg: `${e.action.actionId} started on ${e.host} after ${e.queuedMs} ms queued`,
      };
    case 'action-retried':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          fromHost: e.fromHost,
          reason: e.reason,
          attempt: e.attempt,
        },
        msg: `${e.action.actionId} moves to another host`,
      };
    case 'action-cancelled':
      return {
        fields: {
          event: e.type,
          ...actionFields(e.action),
          ...(e.host === undefined ? {} : { host: e.host }),
        },
        msg: `${e.action.actionId} cancelled`,
      };
    case 'fallback-local':
      return {
        fields: { event: e.type, ...actionFields(e.action), host: e.host, reason: e.reason },
        msg: `${e.action.actionId} runs on the local server`,
      };
    case 'actionset-done':
      return {
        fields: {
          event: e.type,
          actionset: e.actionset,
          succeeded: e.succeeded,
          failed: e.failed,
          cancelled: e.cancelled,
          durationMs: e.ms,
        },
        msg: `actionset ${e.actionset} done`,
      };
    case 'done':
      return {
        fields: { event: e.type, ...summaryFields(e.summary) },
        msg: e.summary.exitStatus === 0 ? 'run succeeded' : 'run failed',
      };
    default:
      return unreachable(e, 'event');
  }
}

/**
 * A run summary as record fields: the {@link RunSummary} with its `ms` named `durationMs`,
 * as in every record (one name per fact, client and server alike: docs/observability.md).
 */
export function summaryFields(s: RunSummary): Record<string, unknown> {
  const { ms, ...rest } = s;
  return { ...rest, durationMs: ms };
}

/** Writes one event's record to `logger` (skipped cheaply when its level is off). */
export function logEvent(logger: Logger, e: RakeEvent): void {
  const level = LEVEL_OF[e.type];
  if (!logger.isLevelEnabled(level)) return;
  const r = eventRecord(e);
  logger[r.level](r.fields, r.msg);
}

/** Each event type's level, so a disabled level costs no record building. */
const LEVEL_OF: Record<RakeEvent['type'], RecordLevel> = {
  'embedded-server-started': 'info',
  'actionset-started': 'info',
  'cost-polled': 'trace',
  'host-chosen': 'debug',
  'upload-done': 'debug',
  'action-queued': 'debug',
  'action-started': 'debug',
  output: 'debug',
  'action-succeeded': 'debug',
  'action-failed': 'error',
  'action-retried': 'warn',
  'action-cancelled': 'info',
  'fallback-local': 'warn',
  'actionset-done': 'info',
  done: 'info',
};

/**
 * Logs every event that passes, unchanged. For events from somewhere other than `run()`
 * with a logger (a replay, a recorded run): `run()` itself already logs through
 * {@link logEvent} when given one, so do not use both on the same stream.
 *
 * @example
 * run(rakefile).pipe(logEvents(pino())).subscribe();
 */
export function logEvents(logger: Logger): MonoTypeOperatorFunction<RakeEvent> {
  return tap((e) => logEvent(logger, e));
}
