// Host names as the client keys, classifies and parses them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hostKey, isLoopback, parseHostList } from '../../src/client/endpoint.js';

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

  it('parses --hosts lists: names, ports, bracketed and bare IPv6', () => {
    assert.deepEqual(parseHostList('a b:7000, [::1]:6300 ::1 127.0.0.2', 6238), {
      ok: true,
      hosts: [
        { host: 'a', port: 6238 },
        { host: 'b', port: 7000 },
        { host: '::1', port: 6300 },
        { host: '::1', port: 6238 },
        { host: '127.0.0.2', port: 6238 },
      ],
    });
    assert.deepEqual(parseHostList('a b:0', 6238), { ok: false, bad: 'b:0' });
    assert.deepEqual(parseHostList('a:b:c', 6238), { ok: false, bad: 'a:b:c' });
  });
});
