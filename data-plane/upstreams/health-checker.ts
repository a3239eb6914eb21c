import type { IncomingMessage, RequestOptions } from 'node:http';
import type { Pool } from 'undici';
import type { Logger } from '../../common/logger.js';
import type { HealthCheck } from '../../proto/gen/loom/v1/config.js';
import type { TargetConnectOptions } from './balancer.js';
import { isUnrequestedContinue, type TargetState } from './target-state.js';
import { requestTarget } from './target-request.js';

/**
 * Health from elsewhere, in place of a checker's own requests: `attach` is called by `start()`,
 * keeps the target's health up to date, and returns the function that `stop()` calls.
 */
export interface HealthSource {
  attach(state: TargetState): () => void;
}

let healthSource: HealthSource | undefined;

/** Largest health check response body read, in bytes; the connection of a longer one closes. */
const MAX_BODY_BYTES = 128 * 1024;

/** Upper bound of the random delay before a checker's first check, in milliseconds. */
export const MAX_FIRST_CHECK_DELAY_MS = 1_000;

/** Share of `intervalMs` by which each later check is randomly moved earlier or later. */
export const INTERVAL_JITTER = 0.1;

/**
 * Returns the delay before a checker's first check: uniform in [0, min(intervalMs, 1 s)).
 * Checkers started by one snapshot then do not all send at the same instant. `random` returns a
 * number in [0, 1), as `Math.random` does.
 */
export function firstCheckDelay(intervalMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(intervalMs, MAX_FIRST_CHECK_DELAY_MS));
}

/**
 * Returns the delay until the next check: `intervalMs` moved by up to 10% either way, and at
 * least 1 ms. Without it, checkers that once ran in step would stay in step for good.
 */
export function nextCheckDelay(intervalMs: number, random: () => number = Math.random): number {
  const jitter = (random() * 2 - 1) * INTERVAL_JITTER * intervalMs;
  return Math.max(1, Math.round(intervalMs + jitter));
}

/**
 * Makes every checker started after the call take its target's health from `source` and send no
 * requests; undefined restores the requests. Each worker of a multi-process proxy sets it,
 * because the primary checks the targets once for all workers.
 */
export function setHealthSource(source: HealthSource | undefined): void {
  healthSource = source;
}

/**
 * Active health check of one target: every `intervalMs` it sends `GET path` through the
 * target's pool, or over a connection of its own while the target is marked for an unrequested
 * 100 Continue, and reads the status. 2xx and 3xx pass. Any other status, a connection error,
 * or headers and body that do not arrive within `timeoutMs` fail. Only the first 128 KiB of a
 * body are read, and the connection of a longer one is closed.
 * `unhealthyThreshold` failures in a row mark the target unhealthy and `healthyThreshold`
 * passes in a row mark it healthy again. The first check runs after a random delay of up to
 * `min(intervalMs, 1 s)`, and each interval varies by up to 10% either way, so the checks of
 * many targets spread out. Timers are unref'd, so checks never keep the process alive.
 */
export class HealthChecker {
  readonly settings: Readonly<HealthCheck>;
  readonly #pool: Pool;
  readonly #state: TargetState;
  /** Host header sent with every check. */
  readonly hostHeader: string;
  readonly #logger: Logger;
  /** How to reach the target outside the pool; undefined checks only through the pool. */
  readonly #connect: TargetConnectOptions | undefined;
  #timer: NodeJS.Timeout | undefined;
  #passes = 0;
  #failures = 0;
  #stopped = false;
  #detach: (() => void) | undefined;

  constructor(
    pool: Pool,
    state: TargetState,
    settings: Readonly<HealthCheck>,
    hostHeader: string,
    logger: Logger,
    connect?: TargetConnectOptions,
  ) {
    this.settings = settings;
    this.#pool = pool;
    this.#state = state;
    this.hostHeader = hostHeader;
    this.#logger = logger;
    this.#connect = connect;
  }

  start(): void {
    if (healthSource !== undefined) {
      this.#detach = healthSource.attach(this.#state);
      return;
    }
    this.#schedule(firstCheckDelay(this.settings.intervalMs));
  }

  /** Stops the checks; a check in flight finishes but changes nothing. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#detach?.();
  }

  #schedule(delay: number): void {
    if (this.#stopped) {
      return;
    }
    this.#timer = setTimeout(() => void this.#run(), delay);
    this.#timer.unref();
  }

  async #run(): Promise<void> {
    const failure = await this.#check();
    if (this.#stopped) {
      return;
    }

    if (failure === undefined) {
      this.#failures = 0;
      this.#passes++;
      if (this.#passes >= this.settings.healthyThreshold) {
        this.#state.setHealthy(true, 'health check passed');
      }
    } else {
      this.#passes = 0;
      this.#failures++;
      if (this.#logger.isLevelEnabled('debug')) {
        this.#logger.debug(
          { upstream: this.#state.upstream, target: this.#state.url, failure },
          'health check failed',
        );
      }
      if (this.#failures >= this.settings.unhealthyThreshold) {
        this.#state.setHealthy(false, failure);
      }
    }
    this.#schedule(nextCheckDelay(this.settings.intervalMs));
  }

  /**
   * Runs one check; returns undefined when it passed, otherwise why it failed. undici fails a
   * request on a 100 Continue that it did not request, so a target marked for sending one is
   * checked over a connection of its own through `node:http`, which skips the 100. A check
   * that fails on the 100 marks the target and is sent again that way.
   */
  async #check(): Promise<string | undefined> {
    const timeoutMs = this.settings.timeoutMs;
    // The deadline covers the whole check. Without it, a body that trickles in faster than the
    // idle body timeout, or a request queued behind busy pool connections, keeps this check and
    // every later check of the target waiting for as long as the upstream sends.
    const signal = AbortSignal.timeout(timeoutMs);
    if (this.#state.sendsUnrequestedContinue) {
      return this.#checkOwnConnection(signal);
    }
    try {
      const response = await this.#pool.request({
        method: 'GET',
        path: this.settings.path,
        headers: { host: this.hostHeader, 'user-agent': 'loom-health-check' },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal,
      });
      await response.body.dump({ limit: MAX_BODY_BYTES, signal });
      const status = response.statusCode;
      return status >= 200 && status < 400 ? undefined : `status ${status}`;
    } catch (err) {
      if (signal.aborted) {
        return `no complete response within ${timeoutMs} ms`;
      }
      if (isUnrequestedContinue(err)) {
        this.#state.markUnrequestedContinue();
        return this.#checkOwnConnection(signal);
      }
      const code = (err as { code?: unknown }).code;
      return typeof code === 'string' ? code : String(err);
    }
  }

  /** Runs one check through `node:http` on a connection of its own, within `signal`. */
  async #checkOwnConnection(signal: AbortSignal): Promise<string | undefined> {
    const connect = this.#connect;
    if (connect === undefined) return 'unrequested 100 Continue';
    const options: RequestOptions = {
      host: connect.hostname,
      port: connect.port,
      method: 'GET',
      path: this.settings.path,
      headers: { host: this.hostHeader, 'user-agent': 'loom-health-check' },
      agent: false,
      signal,
    };
    const request = requestTarget(connect, options);
    try {
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        request.once('response', resolve);
        // A listener that stays attached, so an error after the response is not unhandled.
        request.on('error', reject);
        request.end();
      });
      await readAtMost(response, MAX_BODY_BYTES);
      const status = response.statusCode ?? 0;
      return status >= 200 && status < 400 ? undefined : `status ${status}`;
    } catch (err) {
      if (signal.aborted) {
        return `no complete response within ${this.settings.timeoutMs} ms`;
      }
      const code = (err as { code?: unknown }).code;
      return typeof code === 'string' ? code : String(err);
    } finally {
      request.destroy();
    }
  }
}

/** Reads `response` to its end, or destroys it once more than `limit` bytes arrived. */
async function readAtMost(response: IncomingMessage, limit: number): Promise<void> {
  let bytes = 0;
  for await (const chunk of response) {
    bytes += (chunk as Buffer).length;
    if (bytes > limit) {
      response.destroy();
      return;
    }
  }
}
