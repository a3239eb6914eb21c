import type { ServerDuplexStream } from '@grpc/grpc-js';

import type { Authenticator } from '../../common/auth.js';
import { toServiceError } from '../../common/grpc-errors.js';
import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

/** Default maximum of open snapshot streams per control plane. */
export const DEFAULT_MAX_STREAMS = 10_000;
/** Default rate of new snapshot streams admitted, per second. */
export const DEFAULT_ADMISSION_RATE = 25;

/** Settings of a {@link StreamAdmission}. */
export interface StreamAdmissionOptions {
  /** Maximum of open streams; a stream beyond it is refused with RESOURCE_EXHAUSTED. */
  maxStreams: number;
  /** New streams admitted per second on average. */
  ratePerSecond: number;
  /** Streams that may be admitted at once after a quiet period; defaults to `ratePerSecond`. */
  burst?: number;
  /** Checks credentials when set. */
  authenticator?: Authenticator;
  logger: Logger;
}

type StreamCall = ServerDuplexStream<unknown, unknown>;

/** Interval of the summary line about refused streams, in milliseconds. */
const REFUSAL_LOG_MS = 1_000;

/**
 * Decides whether a new snapshot stream may open. It checks credentials, the
 * number of open streams and a token bucket that paces new streams, so that
 * hundreds of proxies reconnecting to a restarted control plane are admitted
 * over seconds instead of all at once. A refused stream ends at once with
 * UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED, and the proxy
 * retries after its backoff.
 */
export class StreamAdmission {
  #open = 0;
  #tokens: number;
  #refilledAt = performance.now();
  #refused = 0;
  #refusalLog: NodeJS.Timeout | undefined;
  readonly #options: StreamAdmissionOptions;
  readonly #burst: number;
  readonly #logger: Logger;

  /**
   * @throws LoomError `LOOM_INVALID_ARGUMENT` when a limit is not a positive number.
   */
  constructor(options: StreamAdmissionOptions) {
    requirePositive('--max-streams', options.maxStreams, true);
    requirePositive('--stream-admission-rate', options.ratePerSecond, false);
    this.#options = options;
    this.#burst = Math.max(1, Math.floor(options.burst ?? options.ratePerSecond));
    this.#tokens = this.#burst;
    this.#logger = options.logger.child({ component: 'admission' });
  }

  /** Streams open now. */
  get open(): number {
    return this.#open;
  }

  /**
   * Admits `call` or ends it with an error status. Returns true when admitted;
   * the stream then counts as open until it ends.
   */
  admit(call: StreamCall): boolean {
    const refusal = this.#refusal(call);
    if (refusal !== undefined) {
      this.#noteRefusal(refusal);
      call.emit('error', toServiceError(refusal));
      return false;
    }

    this.#open += 1;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#open -= 1;
    };
    for (const event of ['cancelled', 'error', 'finish', 'close']) call.once(event, release);
    return true;
  }

  /** Stops the summary timer. */
  close(): void {
    clearTimeout(this.#refusalLog);
  }

  #refusal(call: StreamCall): LoomError | undefined {
    const denied = this.#options.authenticator?.check(call, 'stream');
    if (denied !== undefined) return denied;

    if (this.#open >= this.#options.maxStreams) {
      return new LoomError(
        'LOOM_RESOURCE_EXHAUSTED',
        `control plane serves its maximum of ${this.#options.maxStreams} streams; ` +
          'retry later or connect to another replica',
        { retryable: true },
      );
    }
    if (!this.#takeToken()) {
      return new LoomError(
        'LOOM_RESOURCE_EXHAUSTED',
        `control plane admits ${this.#options.ratePerSecond} new streams per second; retry later`,
        { retryable: true },
      );
    }
    return undefined;
  }

  #takeToken(): boolean {
    const now = performance.now();
    const refill = ((now - this.#refilledAt) / 1000) * this.#options.ratePerSecond;
    this.#tokens = Math.min(this.#burst, this.#tokens + refill);
    this.#refilledAt = now;
    if (this.#tokens < 1) return false;

    this.#tokens -= 1;
    return true;
  }

  /** Counts refusals and logs them once per interval, not once per stream. */
  #noteRefusal(error: LoomError): void {
    if (error.code !== 'LOOM_RESOURCE_EXHAUSTED') {
      this.#logger.warn({ code: error.code, reason: error.message }, 'stream rejected');
      return;
    }
    this.#refused += 1;
    if (this.#refusalLog !== undefined) return;

    this.#refusalLog = setTimeout(() => {
      this.#refusalLog = undefined;
      this.#logger.warn({ refused: this.#refused, open: this.#open }, 'streams refused');
      this.#refused = 0;
    }, REFUSAL_LOG_MS);
    this.#refusalLog.unref();
  }
}

function requirePositive(option: string, value: number, integer: boolean): void {
  const valid = Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value));
  if (valid) return;

  throw new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `invalid ${option} ${value}; expected a positive ${integer ? 'integer' : 'number'}`,
  );
}
