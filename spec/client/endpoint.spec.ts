// Host names as the client keys, classifies and parses them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_PORT } from '../../grammar/model.js';
import { parseRakefile } from '../../grammar/parse.js';
import { hostKey, hostListProblem, isLoopback, parseHostList } from '../../src/client/endpoint.js';
import { DEFAULT_PORT as SERVER_DEFAULT_PORT } from '../../src/server/defaults.js';

describe('endpoints', () => {
  it('keys hosts as host:port, IPv6 in brackets', () => {
    assert.equal(hostKey({ host: 'build1', port: 6238 }), 'build1:6238');
    assert.equal(hostKey({ host: '127.0.1.2', port: 6328 }), '127.0.1.2:6328');
    assert.equal(hostKey({ host: '::1', port: 6238 }), '[::1]:6238');
    assert.equal(hostKey({ host: 'fe80::1:2', port: 1 }), '[fe80::1:2]:1');
  });

  it('takes localhost, 127.0.0.0/8 and ::1 for this machine, and nothing else', () => {
    for (const h of ['localhost', 'LOCALHOST', 'a.localhost', '::1', '127.0.0.1', '127.255.1.2']) {
      assert.equal(isLoopback(h), true, h);
    }
    for (const h of [
      'build1',
      '10.0.0.1',
      '127.999.0.1',
      '127.0.0',
      '127.0.0.1.5',
      '::2',
      '128.0.0.1',
    ]) {
      assert.equal(isLoopback(h), false, h);
    }
  });

  it('parses --hosts lists: names, ports, bracketed IPv6, spaces or commas', () => {
    assert.deepEqual(parseHostList('a b:7000, [::1]:6300 [::1] 127.0.0.2', 6238), {
      ok: true,
      hosts: [
        { host: 'a', port: 6238 },
        { host: 'b', port: 7000 },
        { host: '::1', port: 6300 },
        { host: '::1', port: 6238 },
        { host: '127.0.0.2', port: 6238 },
      ],
    });
    const bad = (text: string) => {
      const r = parseHostList(text, 6238);
      return r.ok ? undefined : r.bad;
    };
    assert.equal(bad('a b:0'), 'b:0');
    assert.equal(bad('a:b:c'), 'a:b:c');
    assert.equal(bad(' , '), ' , ');
  });

  // Issue 18 item 11: `HOSTS = ::1` was an error while `--hosts '::1 bad_host!name'` was
  // accepted. Both now go through grammar/hosts.ts and refuse the same words, saying why.
  it('takes and refuses the same host words as a Rakefile HOSTS line', () => {
    const words = [
      'localhost',
      'h:6333',
      '127.0.1.2:6328',
      '[::1]:6238',
      '[::1]',
      '::1',
      'bad_host!name',
      'h:',
      ':6238',
      'h:0',
      'h:65536',
      '[::1',
      '[::1]x',
      '[nope]:1',
      '1.2.3.999',
      'bad/name',
      'fe80::1:2',
    ];
    for (const word of words) {
      const fromFile = parseRakefile(`HOSTS = ${word}\nx:\n\tremote-true\n`, { file: 'R' });
      const fromFlag = parseHostList(word, 6238);
      assert.equal(fromFlag.ok, fromFile.ok, word);
      if (fromFile.ok && fromFlag.ok) {
        assert.deepEqual(
          fromFlag.hosts,
          fromFile.rakefile.hosts.map((h) => ({ host: h.host, port: h.port })),
        );
      } else if (!fromFile.ok && !fromFlag.ok) {
        assert.equal(fromFlag.message, fromFile.diagnostics[0]?.message, word);
        assert.equal(fromFlag.hint, fromFile.diagnostics[0]?.hint, word);
      }
    }
  });

  it('says what is wrong with a refused --hosts entry and what to write', () => {
    assert.equal(hostListProblem('a [::1]:7000, b:99'), undefined);
    assert.equal(
      hostListProblem('a ::1'),
      '--hosts: cannot read "::1": IPv6 address `::1` must be written in brackets; write `[::1]`, or `[::1]:6238` with a port',
    );
    assert.match(
      hostListProblem('bad_host!name') ?? '',
      /`bad_host!name` is not a valid host name/,
    );
  });

  it("has one default port, the Rakefile's and the server's", () => {
    assert.equal(SERVER_DEFAULT_PORT, DEFAULT_PORT);
    assert.equal(parseRakefile('x:\n\ttrue\n').ok && DEFAULT_PORT, 6238);
  });
});
