// A real run recorded once per spec file: two loopback servers, requirements and output
// files (so bytes move both ways), actions that overlap on one host, and one failure.
import { join } from 'node:path';
import type { RakeEvent } from '../../src/client/events.js';
import type { RunOptions } from '../../src/client/run.js';
import { closeAll, project, removeDir, runAll, startServers } from '../client/support.js';

/** The recorded run's shape, for assertions. */
export const RECORDED = { actions: 6, failed: 1, actionsets: 2 } as const;

/**
 * Runs the fixture Rakefile against two fresh loopback servers and returns its events
 * (hosts chosen from load streams, as by default; `options` may say otherwise).
 */
export async function recordRun(options: RunOptions = {}): Promise<RakeEvent[]> {
  const servers = await startServers(2, { maxJobs: 4 });
  const dir = await project({ 'in.txt': 'x'.repeat(3000) });
  try {
    const [a, b] = servers.map((s) => s.port) as [number, number];
    const text = [
      `PORT = ${a}`,
      `HOSTS = 127.0.0.1:${a} 127.0.0.1:${b}`,
      '',
      'build:',
      '\tremote-cat in.txt in.txt > out1.txt; sleep 0.3',
      '\t\trequires in.txt',
      '\tremote-cat in.txt > out2.txt; sleep 0.2',
      '\t\trequires in.txt',
      '\tremote-echo three; sleep 0.25',
      '\tremote-echo four; sleep 0.15',
      'check:',
      '\tremote-echo checked; sleep 0.1',
      '\tremote-echo broken >&2; exit 3',
      '',
    ].join('\n');
    return await runAll(dir, text, { directory: dir, ...options });
  } finally {
    await closeAll(servers);
    await removeDir(dir);
  }
}

/** Where specs keep files worth looking at (gitignored). */
export const SPEC_OUTPUT = join(new URL('../../', import.meta.url).pathname, 'spec-output');
