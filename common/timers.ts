import { LoomError } from './errors.js';

/**
 * Maximum delay of a Node.js timer: 2^31 - 1 ms, about 24.8 days. Node.js runs a timer with a
 * longer delay after 1 ms instead, with a TimeoutOverflowWarning.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Settles as `promise` does, or rejects with `LOOM_UNAVAILABLE` after `timeoutMs` when
 * `promise` has not settled by then. `promise` keeps running either way.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  operation: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new LoomError('LOOM_UNAVAILABLE', `${operation}: no reply within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
