/**
 * Where the server listens (docs/server.md, docs/reliability.md): loopback unless told
 * otherwise, because it runs any command it receives; binding any other address warns,
 * loudly, both in the log and (for the program) on stderr. The non-loopback address used
 * is a test bed's private bridge or namespace address, never a real interface.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Logger, pino } from 'pino';
import { startTestbed, type Testbed } from '../../scripts/testbed/netns.js';
import { serve } from '../../src/server/index.js';

const RAKESERVER = fileURLToPath(
  new URL('../../scripts/testbed/rakeserver-from-source.ts', import.meta.url),
);
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BEYOND = /LISTENING BEYOND LOOPBACK/;

/** A pino logger whose records are kept as objects. */
function recorder(): { logger: Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') records.push(JSON.parse(line) as Record<string, unknown>);
      }
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, sink), records };
}

/** Whether a TCP connection to `host:port` is accepted (bounded). */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 2000);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

describe('the server binds loopback by default', () => {
  it('serve() listens on 127.0.0.1 only, and says nothing alarming', async () => {
    const { logger, records } = recorder();
    const handle = await serve({ port: 0, logger, graceSeconds: 0 });
    try {
      assert.equal(handle.host, '127.0.0.1');
      assert.equal(await accepts('127.0.0.1', handle.port), true);
      // Another loopback address of this machine reaches nothing: the bind is that narrow.
      assert.equal(await accepts('127.0.0.2', handle.port), false);
      const listening = records.find((r) => r.msg === 'listening');
      assert.equal(listening?.host, '127.0.0.1');
      assert.deepEqual(
        records.filter((r) => BEYOND.test(String(r.msg))),
        [],
      );
    } finally {
      await handle.close();
    }
  });

  it('the rakeserver program does the same without --host', { timeout: 30_000 }, async () => {
    const env = { ...process.env };
    delete env.RAKE_TOKEN;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', RAKESERVER, '--port', '0', '--log-level', 'info'],
      { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const exited = new Promise((resolve) => child.on('exit', resolve));
    try {
      const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listening line: ${stderr}`)), 20_000);
        child.stderr?.on('data', (chunk: Buffer) => {
          stderr += chunk.toString('utf8');
          for (const line of stderr.split('\n')) {
            if (!line.startsWith('{')) continue;
            const rec = JSON.parse(line) as Record<string, unknown>;
            if (rec.msg === 'listening') {
              clearTimeout(timer);
              resolve(rec);
            }
          }
        });
      });
      assert.equal(listening.host, '127.0.0.1');
      assert.doesNotMatch(stderr, /WARNING|BEYOND LOOPBACK/);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});

describe('binding beyond loopback warns', { timeout: 90_000 }, () => {
  let bed: Testbed | undefined;
  before(async () => {
    bed = await startTestbed({ hosts: 1, mode: 'auto', log: () => undefined });
  });
  after(() => bed?.teardown());

  it('serve() on a private non-loopback address logs a warning naming the risk', async (t) => {
    if (bed?.mode !== 'netns') return t.skip(`needs a test-bed namespace: ${bed?.fallbackReason}`);
    const { logger, records } = recorder();
    const handle = await serve({ host: bed.clientAddress, port: 0, logger, graceSeconds: 0 });
    try {
      const warning = records.find((r) => BEYOND.test(String(r.msg)));
      assert.ok(warning, 'no warning logged');
      assert.equal(warning.level, 40);
      assert.equal(warning.host, bed.clientAddress);
      assert.match(String(warning.msg), /runs ANY command/);
    } finally {
      await handle.close();
    }
  });

  it('with a token it does not warn (authentication is on)', async (t) => {
    if (bed?.mode !== 'netns') return t.skip(`needs a test-bed namespace: ${bed?.fallbackReason}`);
    const { logger, records } = recorder();
    const handle = await serve({
      host: bed.clientAddress,
      port: 0,
      logger,
      graceSeconds: 0,
      token: 'a-token-for-this-test-only-0123456789',
    });
    try {
      assert.deepEqual(
        records.filter((r) => BEYOND.test(String(r.msg))),
        [],
      );
    } finally {
      await handle.close();
    }
  });

  it('the rakeserver program on a host address prints the warning on stderr', async (t) => {
    if (bed?.mode !== 'netns') return t.skip(`needs a test-bed namespace: ${bed?.fallbackReason}`);
    const [host] = bed.hosts;
    assert.ok(host);
    // The bed runs `rakeserver --host <its address> --log-level warn` in the namespace.
    const output = host.output();
    assert.match(
      output,
      new RegExp(
        `rakeserver: WARNING: listening on ${host.address.replaceAll('.', '\\.')} without a token`,
      ),
    );
    assert.match(output, BEYOND);
  });
});
