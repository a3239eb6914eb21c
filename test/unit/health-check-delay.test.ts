import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  firstCheckDelay,
  INTERVAL_JITTER,
  MAX_FIRST_CHECK_DELAY_MS,
  nextCheckDelay,
} from '../../data-plane/upstreams/health-checker.js';

/** Largest double below 1, the largest value `Math.random` returns. */
const ALMOST_ONE = 1 - Number.EPSILON / 2;

describe('health check delays', () => {
  it('first delay within min(interval, cap)', () => {
    for (const intervalMs of [1, 50, 999, 1_000, 5_000, 600_000]) {
      const bound = Math.min(intervalMs, MAX_FIRST_CHECK_DELAY_MS);
      assert.equal(
        firstCheckDelay(intervalMs, () => 0),
        0,
        `interval ${intervalMs}`,
      );
      const largest = firstCheckDelay(intervalMs, () => ALMOST_ONE);
      assert.ok(largest < bound, `interval ${intervalMs}: ${largest}`);
      assert.ok(largest >= bound - 1, `interval ${intervalMs}: ${largest}`);
      for (let i = 0; i < 1_000; i++) {
        const delay = firstCheckDelay(intervalMs);
        assert.ok(Number.isInteger(delay), `interval ${intervalMs}: ${delay}`);
        assert.ok(delay >= 0, `interval ${intervalMs}: ${delay}`);
        assert.ok(delay < bound, `interval ${intervalMs}: ${delay}`);
      }
    }
  });

  it('next delay within jitter of interval', () => {
    for (const intervalMs of [1, 50, 1_000, 5_000, 86_400_000]) {
      const low = Math.max(1, Math.round(intervalMs * (1 - INTERVAL_JITTER)));
      const high = Math.round(intervalMs * (1 + INTERVAL_JITTER));
      assert.equal(
        nextCheckDelay(intervalMs, () => 0),
        low,
        `interval ${intervalMs}`,
      );
      assert.equal(
        nextCheckDelay(intervalMs, () => 0.5),
        intervalMs,
        `interval ${intervalMs}`,
      );
      assert.ok(nextCheckDelay(intervalMs, () => ALMOST_ONE) <= high, `interval ${intervalMs}`);
      for (let i = 0; i < 1_000; i++) {
        const delay = nextCheckDelay(intervalMs);
        assert.ok(Number.isInteger(delay), `interval ${intervalMs}: ${delay}`);
        assert.ok(delay >= low, `interval ${intervalMs}: ${delay}`);
        assert.ok(delay <= high, `interval ${intervalMs}: ${delay}`);
      }
    }
  });

  it('next delays differ between checks', () => {
    const delays = new Set(Array.from({ length: 100 }, () => nextCheckDelay(5_000)));

    assert.ok(delays.size > 1, `every delay was ${[...delays].join(', ')}`);
  });
});
