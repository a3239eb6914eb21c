/**
 * Caps how many lines of one kind are logged per time window, so a failing upstream under load
 * logs a sample plus a count instead of one line per request.
 */
export class LogLimiter {
  readonly #maxPerWindow: number;
  readonly #windowMs: number;
  #windowStart = 0;
  #logged = 0;
  #suppressed = 0;

  /** Allows `maxPerWindow` lines in each window of `windowMs` milliseconds. */
  constructor(maxPerWindow: number, windowMs: number) {
    this.#maxPerWindow = maxPerWindow;
    this.#windowMs = windowMs;
  }

  /**
   * Records one line to log. Returns undefined when the line must be dropped, otherwise the
   * number of lines dropped since the last allowed one, to report with it.
   */
  take(now: number = Date.now()): number | undefined {
    if (now - this.#windowStart >= this.#windowMs) {
      this.#windowStart = now;
      this.#logged = 0;
    }
    if (this.#logged >= this.#maxPerWindow) {
      this.#suppressed++;
      return undefined;
    }

    const suppressed = this.#suppressed;
    this.#logged++;
    this.#suppressed = 0;
    return suppressed;
  }
}
