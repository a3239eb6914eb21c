import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { formatDuration, parseFlagDuration } from '../../cli/duration.js';
import { MAX_TIMER_MS } from '../../common/timers.js';

describe('flag durations', () => {
  test('units and combinations parse', () => {
    const cases: [string, number][] = [
      ['700ms', 700],
      ['30s', 30_000],
      ['1.5s', 1_500],
      ['5m', 300_000],
      ['24h', 86_400_000],
      ['1m30s', 90_000],
      [' 2s ', 2_000],
    ];
    for (const [value, ms] of cases) assert.equal(parseFlagDuration(value, '--x'), ms, value);
  });

  test('zero only where the flag gives it a meaning', () => {
    assert.equal(parseFlagDuration('0', '--x', { zero: 'no timeout' }), 0);
    assert.equal(parseFlagDuration('0s', '--x', { zero: 'no timeout' }), 0);
    assert.throws(
      () => parseFlagDuration('0', '--x'),
      /^LoomError: invalid --x "0": expected a duration above 0, such as 700ms or 30s$/,
    );
  });

  test('bare number names both readings', () => {
    assert.throws(
      () => parseFlagDuration('1500', '--x', { zero: 'no timeout' }),
      /invalid --x "1500": a duration needs a unit; write 1500ms or 1500s$/,
    );
  });

  test('other forms refused with an example', () => {
    for (const value of ['soon', '1d', '-1s', '1h 2m', '1e3', '']) {
      assert.throws(
        () => parseFlagDuration(value, '--x', { zero: 'no limit' }),
        /expected a duration such as 700ms, 30s, 5m, 1h or 1m30s, or 0 \(no limit\)$/,
        value,
      );
    }
  });

  test('limits checked', () => {
    assert.throws(() => parseFlagDuration('0.4ms', '--x'), /it rounds to 0ms; use 1ms or more/);
    assert.throws(
      () => parseFlagDuration('0.4ms', '--x', { zero: 'no limit' }),
      /it rounds to 0ms, which the flag reads as 0/,
    );
    assert.throws(
      () => parseFlagDuration('600h', '--x'),
      /expected at most 2147483647ms \(about 596h31m23s\), the longest delay of a Node\.js timer/,
    );
    assert.equal(
      parseFlagDuration('720h', '--x', { maxMs: Number.MAX_SAFE_INTEGER }),
      2_592_000_000,
    );
  });

  test('formatted durations parse back', () => {
    for (const ms of [1, 999, 1_000, 4_000, 60_000, 90_000, 300_000, 86_400_000, MAX_TIMER_MS]) {
      assert.equal(parseFlagDuration(formatDuration(ms), '--x'), ms, String(ms));
    }
    assert.equal(formatDuration(0), '0');
    assert.equal(formatDuration(300_000), '5m');
  });
});
