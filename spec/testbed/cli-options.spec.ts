import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCliOptions, parseDuration, parsePercent } from '../../scripts/testbed/cli-options.js';

describe('test bed command line', () => {
  it('reads durations in ms or s, and bare milliseconds', () => {
    assert.equal(parseDuration('20ms'), 20);
    assert.equal(parseDuration('0.1s'), 100);
    assert.equal(parseDuration('5'), 5);
    assert.equal(parseDuration('-5ms'), undefined);
    assert.equal(parseDuration('fast'), undefined);
  });

  it('reads percentages with or without %, up to 100', () => {
    assert.equal(parsePercent('5%'), 5);
    assert.equal(parsePercent('0.5'), 0.5);
    assert.equal(parsePercent('101%'), undefined);
  });

  it('turns flags into test bed options', () => {
    const parsed = parseCliOptions([
      '--hosts',
      '4',
      '--delay',
      '20ms',
      '--jitter',
      '5ms',
      '--loss',
      '5%',
      '--prefix',
      'dev',
      '--rakefile',
      'Rakefile.hosts',
    ]);
    assert.deepEqual(parsed, {
      ok: true,
      options: {
        testbed: {
          hosts: 4,
          mode: 'auto',
          netem: { delayMs: 20, jitterMs: 5, lossPercent: 5 },
          namePrefix: 'dev',
        },
        server: 'rakeserver',
        rakefile: 'Rakefile.hosts',
        cleanup: false,
      },
    });
  });

  it('defaults to 3 unshaped hosts and says what is wrong with a bad flag', () => {
    const parsed = parseCliOptions([]);
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.options.testbed, { hosts: 3, mode: 'auto' });
    assert.deepEqual(parseCliOptions(['--hosts', '0']), {
      ok: false,
      message: '--hosts must be an integer from 1 to 99, not 0',
    });
    assert.deepEqual(parseCliOptions(['--loss', 'lots']), {
      ok: false,
      message: '--loss: cannot read "lots"',
    });
    assert.equal(parseCliOptions(['--nope']).ok, false);
  });
});
