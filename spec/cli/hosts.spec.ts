// `rake-ts hosts`: one of our servers, one base-protocol server (as the reference behaves),
// one port nobody listens on; the program run in-process with captured streams.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HOSTS_EXIT, type HostReport } from '../../src/cli/commands/hosts.js';
import type { ServerHandle } from '../../src/server/index.js';
import { closeAll, freePort, project, removeDir, startServers } from '../client/support.js';
import { type BaseServer, startBaseServer } from '../helpers/base-server.js';
import { rake } from './support.js';

const row = (host: string, cost: string, server: string, status: string) =>
  new RegExp(`^${host.replace(/\./g, '\\.')} +host +${cost} +\\d+ ms +${server} +${status}$`);

describe('rake-ts hosts', { timeout: 60_000 }, () => {
  let ours: ServerHandle;
  let base: BaseServer;
  let dead = 0;
  let dir = '';
  before(async () => {
    [ours] = (await startServers(1, { costOffset: () => 7 })) as [ServerHandle];
    base = await startBaseServer();
    dead = await freePort();
    dir = await project();
    await writeFile(
      join(dir, 'Rakefile'),
      `PORT = ${ours.port}\nHOSTS = 127.0.0.1:${ours.port} 127.0.0.1:${base.port} 127.0.0.1:${dead}\n\nset:\n\tremote-echo hi\n`,
    );
  });
  after(async () => {
    await closeAll([ours, base]);
    await removeDir(dir);
  });

  it('prints a row per host: cost, round trip, what the server says, reachable or why not', async () => {
    const r = await rake(dir, ['hosts']);
    assert.equal(r.code, HOSTS_EXIT.someSilent, r.stderr);
    const [head, ...rows] = r.stdout.trimEnd().split('\n');
    assert.match(head ?? '', /^HOST +ROLE +COST +RTT +SERVER +STATUS$/);
    assert.equal(rows.length, 3);
    assert.match(rows[0] ?? '', row(`127.0.0.1:${ours.port}`, '7', 'rake/\\S+ .*', 'reachable'));
    assert.match(rows[1] ?? '', row(`127.0.0.1:${base.port}`, '1', 'base protocol', 'reachable'));
    assert.match(rows[2] ?? '', row(`127.0.0.1:${dead}`, '-', '-', 'unreachable: \\S.*'));
  });

  it('prints the same as JSON', async () => {
    const r = await rake(dir, ['hosts', '--json']);
    const json = JSON.parse(r.stdout) as { rakefile: string; hosts: HostReport[] };
    assert.equal(json.rakefile, 'Rakefile');
    assert.deepEqual(
      json.hosts.map((h) => [h.reachable, h.cost ?? null, h.server?.kind ?? null]),
      [
        [true, 7, 'rake'],
        [true, 1, 'base'],
        [false, null, null],
      ],
    );
    assert.equal(json.hosts[1]?.server?.description, 'base protocol');
    assert.equal(typeof json.hosts[2]?.error, 'string');
    for (const h of json.hosts) assert.equal(typeof h.rttMs, 'number');
  });

  it('exits 0 when every host answers and 3 when none does', async () => {
    const ok = await rake(dir, ['hosts', '--hosts', `127.0.0.1:${ours.port}`]);
    assert.equal(ok.code, HOSTS_EXIT.allAnswered, ok.stdout + ok.stderr);
    const none = await rake(dir, ['hosts', '--hosts', `127.0.0.1:${dead}`]);
    assert.equal(none.code, HOSTS_EXIT.noneAnswered);
  });

  it('asks the local server too when there are local actions', async () => {
    const local = await project();
    try {
      await writeFile(join(local, 'Rakefile'), `PORT = ${ours.port}\n\nset:\n\techo here\n`);
      const r = await rake(local, ['hosts', '--json']);
      const json = JSON.parse(r.stdout) as { hosts: HostReport[] };
      assert.deepEqual(
        json.hosts.map((h) => [h.host, h.role, h.reachable]),
        [[`localhost:${ours.port}`, 'local', true]],
      );
    } finally {
      await removeDir(local);
    }
  });

  it('rejects a bad Rakefile or flag with status 2', async () => {
    const missing = await rake(dir, ['hosts', 'nope/Rakefile']);
    assert.equal(missing.code, 2);
    const flag = await rake(dir, ['hosts', '--port', '0']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /--port must be/);
  });
});
