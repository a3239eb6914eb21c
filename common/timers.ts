/**
 * Maximum delay of a Node.js timer: 2^31 - 1 ms, about 24.8 days. Node.js runs a timer with a
 * longer delay after 1 ms instead, with a TimeoutOverflowWarning.
 */
export const MAX_TIMER_MS = 2_147_483_647;
