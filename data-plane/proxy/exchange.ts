import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { Logger } from '../../common/logger.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { classifyUpstreamError, sendErrorResponse } from './error-response.js';
import { buildClientResponseHeaders } from './headers.js';
import type { LogLimiter } from './log-limiter.js';

/** State shared by every request of one proxy handler. */
export interface ProxyContext {
  readonly logger: Logger;
  /** Scheme of the listener, sent upstream as `X-Forwarded-Proto`. */
  readonly protocol: 'http' | 'https';
  /** Limits the warn lines about failed upstream requests. */
  readonly upstreamFailureLog: LogLimiter;
  /** Limits the error lines about unexpected exceptions. */
  readonly internalErrorLog: LogLimiter;
}

const kExchange = Symbol('loom.proxyExchange');

interface ExchangeResponse extends ServerResponse {
  [kExchange]?: ProxyExchange;
}

/** Abort reason given to undici when the client leaves; one shared instance, never logged. */
const CLIENT_CLOSED = new Error('client closed the connection');

/**
 * One proxied request: the undici dispatch handler that streams the upstream response to
 * `res`. It uses the controller-based handler API of undici 7 (`onRequestStart`,
 * `onResponseStart`, `onResponseData`, `onResponseEnd`, `onResponseError`).
 *
 * Failures before the response headers reach the client become a JSON error response. After
 * that, a failure destroys the client socket, so the client sees a truncated response. When
 * the client closes the connection first, the upstream request is aborted and nothing is logged
 * above debug level.
 */
export class ProxyExchange implements Dispatcher.DispatchHandler {
  readonly #context: ProxyContext;
  readonly #req: IncomingMessage;
  readonly #res: ExchangeResponse;
  readonly #route: Route;
  readonly #target: UpstreamTarget;
  #controller: Dispatcher.DispatchController | null = null;
  #clientClosed = false;
  #responseStarted = false;
  #awaitingDrain = false;

  constructor(
    context: ProxyContext,
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    target: UpstreamTarget,
  ) {
    this.#context = context;
    this.#req = req;
    this.#res = res;
    this.#route = route;
    this.#target = target;

    // The listeners are shared module functions that find the exchange through this property,
    // so a request allocates no closures.
    this.#res[kExchange] = this;
    res.once('close', onClientClose);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#clientClosed) {
      controller.abort(CLIENT_CLOSED);
    }
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    statusMessage?: string,
  ): void {
    // NOTE: informational 1xx responses (103 Early Hints) are not forwarded; the client
    // only gets the final response.
    if (statusCode < 200 || this.#clientClosed) {
      return;
    }

    const res = this.#res;
    try {
      const clientHeaders = buildClientResponseHeaders(headers);
      if (statusMessage) {
        res.writeHead(statusCode, statusMessage, clientHeaders);
      } else {
        res.writeHead(statusCode, clientHeaders);
      }
    } catch (err) {
      // Node.js rejects header values that undici accepted; the client gets a 502.
      controller.abort(err as Error);
      return;
    }
    this.#responseStarted = true;

    const logger = this.#context.logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        { route: this.#route.name, target: this.#target.origin, status: statusCode },
        'upstream response started',
      );
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#clientClosed) {
      return;
    }

    if (!this.#res.write(chunk) && !this.#awaitingDrain) {
      this.#awaitingDrain = true;
      controller.pause();
      this.#res.once('drain', onClientDrain);
    }
  }

  // NOTE: response trailers are not forwarded. Forwarding them would need `res.addTrailers`
  // and chunked encoding toward the client.
  onResponseEnd(): void {
    if (this.#clientClosed) {
      return;
    }
    this.#res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    try {
      this.#handleUpstreamError(err);
    } catch (failure) {
      this.#context.logger.error({ err: failure }, 'proxy error handling failed');
      this.#res.destroy();
    }
  }

  /** Aborts the upstream request when the client connection closes before the response ends. */
  handleClientClose(): void {
    this.#res[kExchange] = undefined;
    if (this.#res.writableFinished) {
      return;
    }

    this.#clientClosed = true;
    this.#controller?.abort(CLIENT_CLOSED);
  }

  /** Resumes reading the upstream response once the client socket has drained. */
  handleClientDrain(): void {
    this.#awaitingDrain = false;
    if (!this.#clientClosed) {
      this.#controller?.resume();
    }
  }

  #handleUpstreamError(err: Error): void {
    // An upload cut short by the client also fails the upstream request, sometimes before the
    // response 'close' event has run, so a destroyed client socket counts as a client close.
    if (this.#clientClosed || this.#req.socket.destroyed) {
      this.#clientClosed = true;
      this.#logClientClose();
      return;
    }

    const error = this.#responseStarted ? undefined : classifyUpstreamError(err);
    this.#logUpstreamFailure(err, error?.status);
    if (error === undefined) {
      this.#res.destroy();
      return;
    }
    sendErrorResponse(this.#res, error, this.#route.name);
  }

  #logUpstreamFailure(err: Error, status: number | undefined): void {
    const suppressed = this.#context.upstreamFailureLog.take();
    if (suppressed === undefined) {
      return;
    }

    const fields = {
      route: this.#route.name,
      upstream: this.#route.upstream,
      target: this.#target.origin,
      code: (err as { code?: unknown }).code,
      status,
      suppressed,
      err,
    };
    if (status === undefined) {
      this.#context.logger.warn(fields, 'upstream response aborted after headers were sent');
    } else {
      this.#context.logger.warn(fields, 'upstream request failed');
    }
  }

  #logClientClose(): void {
    const logger = this.#context.logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        { route: this.#route.name, target: this.#target.origin },
        'client closed the connection before the response completed',
      );
    }
  }
}

function onClientClose(this: ExchangeResponse): void {
  this[kExchange]?.handleClientClose();
}

function onClientDrain(this: ExchangeResponse): void {
  this[kExchange]?.handleClientDrain();
}
