import type { IncomingMessage } from 'node:http';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { upstreamErrorLogFields } from './error-response.js';
import type { ForwardedRequest, ProxyContext } from './exchange.js';
import type { UpstreamFailure } from './observer.js';

/** Log code of a response whose trailer section the parser rejected after a complete body. */
export const TRAILERS_DROPPED_CODE = 'LOOM_UPSTREAM_TRAILERS_DROPPED';

/**
 * The reporting part of one proxied request, shared by the exchange that sends it through undici
 * and the one that sends `Expect: 100-continue` requests through `node:http`. It counts attempts
 * and the body bytes sent to the client. Each attempt and the request reach the observer at most
 * once, and a failed upstream request gets a rate-limited warn line.
 */
export abstract class ObservedExchange {
  protected readonly context: ProxyContext;
  protected readonly req: IncomingMessage;
  protected readonly request: ForwardedRequest;
  /** Target of the current attempt, which {@link beginAttempt} sets. */
  protected target!: UpstreamTarget;
  /** Attempts started so far. */
  protected attempts = 0;
  /** Response body bytes written to the client. */
  protected bytesSent = 0;
  /** `performance.now()` when the current attempt started, or 0 with the observer off. */
  #attemptStart = 0;
  /** True once the current attempt's outcome went to the observer. */
  #attemptReported = true;
  #requestReported = false;

  constructor(context: ProxyContext, req: IncomingMessage, request: ForwardedRequest) {
    this.context = context;
    this.req = req;
    this.request = request;
  }

  /** Starts an attempt on `target`: counts it as active there and starts its clock. */
  protected beginAttempt(target: UpstreamTarget): void {
    this.target = target;
    this.attempts++;
    this.#attemptReported = false;
    target.state.active++;
    if (this.context.observer.enabled) this.#attemptStart = performance.now();
  }

  /**
   * Reports the outcome of the current attempt once. `failure` is undefined for a complete
   * upstream response, whatever its status.
   */
  protected reportAttempt(failure: UpstreamFailure | undefined): void {
    const observer = this.context.observer;
    if (this.#attemptReported || !observer.enabled) {
      return;
    }

    this.#attemptReported = true;
    observer.attemptFinished(this.target, failure, this.#attemptStart);
  }

  /** Reports the request once, with the status sent to the client or 0 when none was sent. */
  protected reportRequest(status: number): void {
    const observer = this.context.observer;
    if (this.#requestReported || !observer.enabled) {
      return;
    }

    this.#requestReported = true;
    const request = this.request;
    observer.requestFinished(
      this.req,
      request.route,
      status,
      this.target,
      this.bytesSent,
      request.startTime,
    );
  }

  /**
   * Logs a failed upstream request at warn level, within the context's rate limit. `status` is
   * the error status sent to the client, undefined when the failure came after the response
   * headers.
   */
  protected logUpstreamFailure(err: Error, status: number | undefined): void {
    const suppressed = this.context.upstreamFailureLog.take();
    if (suppressed === undefined) {
      return;
    }

    const fields = {
      route: this.request.route,
      upstream: this.target.upstream,
      target: this.target.origin,
      status,
      attempts: this.attempts,
      suppressed,
      ...upstreamErrorLogFields(err),
    };
    if (status === undefined) {
      this.context.logger.warn(fields, 'upstream response aborted after headers were sent');
    } else {
      this.context.logger.warn(fields, 'upstream request failed');
    }
  }

  /**
   * Logs at warn level, within the context's rate limit, a response whose complete body reached
   * the client without its trailers, because the trailer section contains Content-Length.
   */
  protected logTrailersDropped(err: Error, status: number): void {
    const suppressed = this.context.upstreamFailureLog.take();
    if (suppressed === undefined) {
      return;
    }

    this.context.logger.warn(
      {
        route: this.request.route,
        upstream: this.target.upstream,
        target: this.target.origin,
        code: TRAILERS_DROPPED_CODE,
        status,
        suppressed,
        error: err.message,
      },
      'upstream trailers dropped: the trailer section contains Content-Length',
    );
  }
}
