/** Settings of an exponential backoff with full jitter. */
export interface BackoffOptions {
  /** First delay ceiling in milliseconds. */
  initialMs: number;
  /** Largest delay ceiling in milliseconds. */
  maxMs: number;
}

/**
 * Exponential backoff with full jitter: each delay is uniform in
 * [ceiling / 2, ceiling], and the ceiling doubles up to `maxMs`. The half floor
 * keeps a fleet from retrying in a burst while still spreading it out.
 */
export class Backoff {
  #attempt = 0;
  readonly #options: BackoffOptions;

  constructor(options: BackoffOptions) {
    this.#options = options;
  }

  /** Returns the next delay in milliseconds and advances. */
  next(): number {
    const ceiling = Math.min(this.#options.maxMs, this.#options.initialMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Starts over from the initial delay after a success. */
  reset(): void {
    this.#attempt = 0;
  }
}
