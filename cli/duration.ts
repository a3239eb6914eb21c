import { LoomError } from '../common/errors.js';
import { MAX_TIMER_MS } from '../common/timers.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
const BARE_NUMBER = /^\d+(?:\.\d+)?$/;

/** Limits of one duration flag: whether it takes 0, and its largest value. */
export interface DurationRule {
  /** Meaning of 0 for a flag that takes it, such as `no timeout`; without it, 0 is refused. */
  zero?: string;
  /**
   * Largest duration in milliseconds, for a flag that sets no timer. Without it, the limit is
   * the longest delay of a Node.js timer.
   */
  maxMs?: number;
}

/**
 * Parses the duration of a flag of `loom` or `loomctl` into whole milliseconds. A duration is
 * one or more amounts with a unit, such as `700ms`, `30s`, `5m`, `1h` or `1m30s`. Every flag
 * uses this one rule: a bare number other than 0 has no unit and is rejected, because the flags
 * of other tools read it as seconds or as milliseconds, and a guess would be off by 1,000x.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the flag, the value and a valid form, also
 *   for a duration above 0 that rounds to 0ms: 0 turns most limits off.
 */
export function parseFlagDuration(value: string, flag: string, rule: DurationRule = {}): number {
  const text = value.trim();
  const quoted = `invalid ${flag} ${JSON.stringify(value)}`;
  const bare = BARE_NUMBER.test(text);
  if (bare && Number(text) !== 0) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `${quoted}: a duration needs a unit; write ${text}ms or ${text}s`,
    );
  }

  // A bare number that reaches this point is 0.
  let amount = 0;
  if (!bare) {
    if (!DURATION.test(text)) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `${quoted}: expected a duration such as 700ms, 30s, 5m, 1h or 1m30s` +
          (rule.zero === undefined ? '' : `, or 0 (${rule.zero})`),
      );
    }
    for (const [, number, unit] of text.matchAll(DURATION_PART)) {
      amount += Number(number) * UNIT_MS[unit];
    }
  }

  const ms = Math.round(amount);
  if (ms === 0 && amount > 0) {
    const zero =
      rule.zero === undefined
        ? ''
        : ', which the flag reads as 0 (see --help), not as a short duration';
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `${quoted}: it rounds to 0ms${zero}; use 1ms or more`,
    );
  }
  if (ms === 0 && rule.zero === undefined) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `${quoted}: expected a duration above 0, such as 700ms or 30s`,
    );
  }
  const maxMs = rule.maxMs ?? MAX_TIMER_MS;
  if (ms > maxMs) {
    const reason = rule.maxMs === undefined ? ', the longest delay of a Node.js timer' : '';
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `${quoted}: expected at most ${maxMs}ms (${formatDuration(maxMs, true)})${reason}; ` +
        'use a shorter duration such as 30s',
    );
  }
  return ms;
}

/**
 * Writes whole milliseconds as the shortest duration that `parseFlagDuration` reads back, such
 * as `5m` for 300000 and `1m30s` for 90000. With `approximate`, it rounds down to whole seconds
 * and starts with "about" when that dropped milliseconds, for a limit too long to read exactly.
 */
export function formatDuration(ms: number, approximate = false): string {
  if (ms === 0) return '0';
  let rest = approximate ? ms - (ms % 1_000) : ms;
  let text = '';
  for (const unit of ['h', 'm', 's', 'ms']) {
    const size = UNIT_MS[unit];
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return approximate && ms % 1_000 !== 0 ? `about ${text}` : text;
}
