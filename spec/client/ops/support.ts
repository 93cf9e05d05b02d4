// Shared by the operator marble specs: a TestScheduler that compares with node:assert, and
// one action's identity.
import assert from 'node:assert/strict';
import { TestScheduler } from 'rxjs/testing';
import type { ActionRef, RakeEvent } from '../../../src/client/events.js';

export const scheduler = () =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

export const REF: ActionRef = {
  actionId: 'build#0',
  actionset: 'build',
  index: 0,
  position: { file: 'Rakefile', line: 3, column: 2 },
  command: 'cc -c a.c',
  remote: true,
};

/** One short line per event, to read a marble. */
export function story(e: RakeEvent): string {
  switch (e.type) {
    case 'host-chosen':
      return `chose ${e.host}`;
    case 'action-succeeded':
      return `ok on ${e.host}${e.cached ? ` cached ${e.cached.key}` : ''} ${JSON.stringify(e.phases)}`;
    case 'action-failed':
      return `failed ${e.reason}${e.host ? ` on ${e.host}` : ''}`;
    case 'action-cancelled':
      return `cancelled${e.host ? ` on ${e.host}` : ''}`;
    case 'action-retried':
      return `retry after ${e.fromHost}`;
    case 'output':
      return `output ${e.stdout.text()}`;
    case 'upload-done':
      return `uploaded ${e.files} files ${e.ms}ms`;
    default:
      return e.type;
  }
}

/** A `host-chosen` event for {@link REF}. */
export function chosen(host: string, time = 0): RakeEvent {
  return {
    type: 'host-chosen',
    time,
    action: REF,
    host,
    reason: 'cheapest',
    costs: [],
    attempt: 1,
  };
}

/** An `output` event for {@link REF} (what a running action emits before it ends). */
export function succeeded(host: string, time = 0): RakeEvent {
  return {
    type: 'action-succeeded',
    time,
    action: REF,
    host,
    exitStatus: 0,
    files: [],
    downloadBytes: 0,
    phases: { poll: 0, connect: 0, upload: 0, run: 0, download: 0 },
    attempts: 1,
    ms: 0,
  };
}
