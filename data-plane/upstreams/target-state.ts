import type { Logger } from '../../common/logger.js';
import type { PassiveHealth } from '../../proto/gen/loom/v1/config.js';

/** Log code of a target that sent 100 Continue to a request without `Expect`. */
export const UNREQUESTED_CONTINUE_CODE = 'LOOM_UPSTREAM_UNREQUESTED_CONTINUE';

/**
 * Default time, in milliseconds, that a target stays marked for sending an unrequested 100
 * Continue. Once it ends, the target's requests go through the undici pool again, so an upstream
 * that was fixed gets the pooled connections back. An upstream that still sends the 100 is
 * marked again by the first request that fails on it.
 */
export const UNREQUESTED_CONTINUE_MARK_MS = 10 * 60 * 1_000;

/** Cause of the end of an unrequested 100 Continue mark, logged as `reason`. */
export type UnrequestedContinueUnmarkReason = 'mark expired' | 'connection pool rebuilt';

/** Passive ejection settings with defaults filled. */
export type EjectionSettings = Readonly<PassiveHealth>;

/**
 * Receives changes of a target's availability, for metrics. `target` is the target URL, because
 * targets of one upstream may share an origin and differ only by base path.
 */
export interface TargetHealthListener {
  setTargetHealthy(upstream: string, target: string, healthy: boolean): void;
  targetEjected(upstream: string, target: string): void;
}

/**
 * Live state of one target of one upstream: requests in flight, active health and passive
 * ejection. The registry keeps one object per upstream name and target URL across snapshots,
 * so a snapshot that leaves the target unchanged keeps its health and its counts.
 *
 * A target is available when its last active checks passed and it is not ejected. Balancers
 * skip unavailable targets; when every target of an upstream is unavailable they use all of
 * them (panic mode), because sending traffic to a possibly unhealthy target beats failing
 * every request.
 */
export class TargetState {
  /** Upstream name and target URL, for logs. */
  readonly upstream: string;
  readonly url: string;
  /** Requests sent to the target and not yet finished; the least-request balancer reads it. */
  active = 0;
  /** Result of active health checks; true until a check says otherwise. */
  #healthy = true;
  /** `performance.now()` until which the target is ejected; 0 when it is not. */
  #ejectedUntil = 0;
  #ejections = 0;
  #lastEjectionEnd = 0;
  #consecutiveFailures = 0;
  #ejection: EjectionSettings | undefined;
  /** Ends the current ejection on time, so an idle target's health metric does not stay 0. */
  #restoreTimer: NodeJS.Timeout | undefined;
  readonly #logger: Logger;
  readonly #listener: TargetHealthListener | undefined;
  /** `performance.now()` when the unrequested 100 Continue mark ends; 0 when not marked. */
  #unrequestedContinueUntil = 0;
  /** Time a mark for an unrequested 100 Continue lasts, in milliseconds. */
  readonly #unrequestedContinueMarkMs: number;

  constructor(
    upstream: string,
    url: string,
    logger: Logger,
    listener?: TargetHealthListener,
    unrequestedContinueMarkMs = UNREQUESTED_CONTINUE_MARK_MS,
  ) {
    this.upstream = upstream;
    this.url = url;
    this.#logger = logger;
    this.#listener = listener;
    this.#unrequestedContinueMarkMs = unrequestedContinueMarkMs;
  }

  /** True when the target may receive requests: healthy and not ejected. */
  get available(): boolean {
    return this.#healthy && (this.#ejectedUntil === 0 || this.#ejectionExpired());
  }

  /**
   * True while the target is marked for sending a 100 Continue to a request without `Expect`,
   * which undici 7 cannot read, so the proxy sends its requests through `node:http`. The mark
   * ends after the mark time, and the first read after that logs the end.
   */
  get sendsUnrequestedContinue(): boolean {
    const until = this.#unrequestedContinueUntil;
    if (until === 0) return false;
    if (performance.now() < until) return true;
    this.unmarkUnrequestedContinue('mark expired');
    return false;
  }

  /** Marks the target for sending an unrequested 100 Continue, logging the change once. */
  markUnrequestedContinue(): void {
    if (this.sendsUnrequestedContinue) return;
    this.#unrequestedContinueUntil = performance.now() + this.#unrequestedContinueMarkMs;
    this.#logger.warn(
      {
        upstream: this.upstream,
        target: this.url,
        code: UNREQUESTED_CONTINUE_CODE,
        markMs: this.#unrequestedContinueMarkMs,
      },
      'upstream target sent 100 Continue without Expect: its requests now go over connections of their own',
    );
  }

  /** Removes the unrequested 100 Continue mark, logging the change once; no-op when unmarked. */
  unmarkUnrequestedContinue(reason: UnrequestedContinueUnmarkReason): void {
    if (this.#unrequestedContinueUntil === 0) return;
    this.#unrequestedContinueUntil = 0;
    this.#logger.info(
      { upstream: this.upstream, target: this.url, code: UNREQUESTED_CONTINUE_CODE, reason },
      'upstream target unmarked: its requests go through the connection pool again',
    );
  }

  /** Result of the active health checks. */
  get healthy(): boolean {
    return this.#healthy;
  }

  /** True while a passive ejection lasts. */
  get ejected(): boolean {
    return this.#ejectedUntil !== 0 && !this.#ejectionExpired();
  }

  /**
   * Sets the passive ejection settings of the current snapshot. Undefined turns ejection off
   * and restores a target that is ejected.
   */
  configureEjection(settings: EjectionSettings | undefined): void {
    this.#ejection = settings;
    if (settings === undefined) {
      this.#consecutiveFailures = 0;
      if (this.ejected) this.#restore('passive health removed');
    }
  }

  /** Records the outcome of an active health check that changed the health of the target. */
  setHealthy(healthy: boolean, reason: string): void {
    if (this.#healthy === healthy) {
      return;
    }

    this.#healthy = healthy;
    this.#logger.info(
      { upstream: this.upstream, target: this.url, from: !healthy, to: healthy, reason },
      healthy ? 'target healthy' : 'target unhealthy',
    );
    this.#listener?.setTargetHealthy(this.upstream, this.url, this.available);
  }

  /** Records a request that got a response below 500. */
  recordSuccess(): void {
    this.#consecutiveFailures = 0;
  }

  /**
   * Records a failed request: a connection error, a timeout or a 5xx response. Ejects the target
   * after `consecutiveFailures` failures in a row for `baseEjectionMs`, doubled for each
   * ejection since the target last stayed in rotation for `maxEjectionMs`, capped at
   * `maxEjectionMs`.
   */
  recordFailure(now = performance.now()): void {
    const settings = this.#ejection;
    if (settings === undefined || this.ejected) {
      return;
    }
    this.#consecutiveFailures++;
    if (this.#consecutiveFailures < settings.consecutiveFailures) {
      return;
    }

    if (now - this.#lastEjectionEnd > settings.maxEjectionMs) {
      this.#ejections = 0;
    }
    const duration = Math.min(
      settings.baseEjectionMs * 2 ** this.#ejections,
      settings.maxEjectionMs,
    );
    this.#ejections++;
    this.#consecutiveFailures = 0;
    this.#ejectedUntil = now + duration;
    this.#lastEjectionEnd = this.#ejectedUntil;
    this.#logger.warn(
      {
        upstream: this.upstream,
        target: this.url,
        ejectionMs: duration,
        ejections: this.#ejections,
      },
      'target ejected',
    );
    this.#listener?.targetEjected(this.upstream, this.url);
    this.#scheduleRestore();
  }

  /** Stops the restore timer; call it when the target leaves its upstream or the proxy stops. */
  dispose(): void {
    clearTimeout(this.#restoreTimer);
    this.#restoreTimer = undefined;
  }

  /**
   * Restores the target when its ejection ends even if no request reads `available` then. The
   * timer is unref'd, and it waits again when it fires before `performance.now()` reaches
   * the end of the ejection.
   */
  #scheduleRestore(): void {
    this.dispose();
    const remaining = this.#ejectedUntil - performance.now();
    this.#restoreTimer = setTimeout(
      () => {
        this.#restoreTimer = undefined;
        if (this.#ejectedUntil === 0) return;
        if (performance.now() < this.#ejectedUntil) {
          this.#scheduleRestore();
          return;
        }
        this.#restore('ejection ended');
      },
      Math.max(1, Math.ceil(remaining)),
    );
    this.#restoreTimer.unref();
  }

  #ejectionExpired(): boolean {
    if (performance.now() < this.#ejectedUntil) {
      return false;
    }
    if (this.#ejectedUntil !== 0) {
      this.#restore('ejection ended');
    }
    return true;
  }

  #restore(reason: string): void {
    this.dispose();
    this.#ejectedUntil = 0;
    this.#logger.info({ upstream: this.upstream, target: this.url, reason }, 'target restored');
    this.#listener?.setTargetHealthy(this.upstream, this.url, this.#healthy);
  }
}

/**
 * Tells whether undici failed a request because the upstream sent 100 Continue to it without
 * `Expect`. undici 7.30.3 (`onHeadersComplete` in lib/dispatcher/client-h1.js) fails only the
 * request in flight with 'bad response' then, and with no request in flight it closes the
 * connection without failing one.
 */
export function isUnrequestedContinue(err: unknown): boolean {
  const failure = err as { code?: unknown; message?: unknown } | null;
  return failure?.code === 'UND_ERR_SOCKET' && failure.message === 'bad response';
}
