// A run interrupted by SIGINT or SIGTERM still writes its trace and report, holding what
// happened until the interrupt: the finished actions, and the running ones as cancelled.
// The CLI runs as a child process against a loopback server; the signal is sent once the
// quick action's output has arrived on stdout (an event, not a sleep).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServerHandle, serve } from '../../src/server/index.js';
import { waitUntil } from '../helpers/wait.js';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).href;
const TSX = import.meta.resolve('tsx');

describe('--report and --trace after an interrupt', { timeout: 120_000 }, () => {
  let server: ServerHandle;
  let dir = '';
  before(async () => {
    server = await serve({ host: '127.0.0.1', port: 0, maxJobs: 4, graceSeconds: 0 });
    dir = await mkdtemp(join(tmpdir(), 'rake-int-'));
    await writeFile(
      join(dir, 'rake-ts.mjs'),
      `const { main } = await import(${JSON.stringify(MAIN)});\nprocess.exitCode = await main(process.argv.slice(2));\n`,
    );
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${server.port}\nHOSTS = 127.0.0.1:${server.port}\n\nbuild:\n\tremote-echo quick-done\n\tremote-sleep 30\n\tremote-sleep 31\nlater:\n\tremote-echo never\n`,
    );
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  // SIGTERM's run logs as JSON: the interrupt is a record too, and stderr stays NDJSON.
  for (const [signal, status, json] of [
    ['SIGINT', 130, false],
    ['SIGTERM', 143, true],
  ] as const) {
    it(`${signal}: the finished action, and the running ones marked cancelled`, async () => {
      const report = join(dir, `${signal}.html`);
      const trace = join(dir, `${signal}.trace.json`);
      const child = spawn(
        process.execPath,
        [
          '--import',
          TSX,
          join(dir, 'rake-ts.mjs'),
          '-C',
          dir,
          '--report',
          report,
          '--trace',
          trace,
          ...(json ? ['--log-format', 'json'] : []),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: '' } },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      try {
        await waitUntil(() => stdout.includes('quick-done'), { ms: 60_000, what: 'quick-done' });
        // Both sleeps have reached the server (its cost counts the jobs it manages).
        await waitUntil(() => server.cost() >= 2, { ms: 60_000, what: 'the sleeps to start' });
        child.kill(signal);
        assert.equal(await exited, status, stderr);
      } finally {
        child.kill('SIGKILL');
      }

      if (json) {
        const records = stderr
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as { event?: string; signal?: string; msg?: string });
        const interrupted = records.filter((r) => r.event === 'interrupted');
        assert.equal(interrupted.length, 1, stderr);
        assert.equal(interrupted[0]?.signal, signal);
      } else {
        assert.match(stderr, /^rake-ts: interrupted: cancelled every action/m);
      }
      const html = await readFile(report, 'utf8');
      assert.match(html, new RegExp(`interrupted \\(${signal}\\)`));
      assert.match(html, /3 actions · 1 succeeded, 0 failed, 2 cancelled \(2 by the interrupt\)/);
      assert.equal([...html.matchAll(/<rect class="bar"/g)].length, 1, 'one succeeded bar');
      assert.equal([...html.matchAll(/<rect class="bar cancelled"/g)].length, 2);
      assert.equal([...html.matchAll(/<td>cancelled by the interrupt<\/td>/g)].length, 2);

      const t = JSON.parse(await readFile(trace, 'utf8')) as {
        traceEvents: { cat?: string; dur?: number; args?: Record<string, unknown> }[];
        otherData: Record<string, string>;
      };
      assert.equal(t.otherData.interrupted, signal);
      const actions = t.traceEvents.filter((e) => e.cat === 'action');
      assert.deepEqual(
        actions.map((e) => [e.args?.actionId, e.args?.outcome, e.args?.interrupted]).sort(),
        [
          ['build#0', 'succeeded', undefined],
          ['build#1', 'cancelled', true],
          ['build#2', 'cancelled', true],
        ],
      );
      const set = t.traceEvents.find((e) => e.cat === 'actionset');
      assert.ok((set?.dur ?? 0) > 0, 'the open actionset spans until the interrupt');
      await waitUntil(() => server.cost() === 0, { ms: 30_000, what: 'the sleeps to be killed' });
    });
  }
});
