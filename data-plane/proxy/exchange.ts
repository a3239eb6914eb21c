import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import type { Logger } from '../../common/logger.js';
import type { Balancer, UpstreamTarget } from '../upstreams/balancer.js';
import { isReportingReset } from '../upstreams/reset-guard.js';
import { DetachableAttempt } from './detachable-attempt.js';
import { forwardInformational, MAX_INFORMATIONAL_RESPONSES } from './informational.js';
import { ObservedExchange } from './observed-exchange.js';
import { upstreamFailureOf, type ProxyObserver } from './observer.js';
import { kForwarder, markConnectionClosing, type BodyForwarder } from './pipelining.js';
import { resetConnection } from './socket-reset.js';
import { ContinueExchange } from './continue-exchange.js';
import {
  classifyUpstreamError,
  destroyResponse,
  isHttpParserError,
  isUnrequestedContinue,
  PROXY_ERRORS,
  sendErrorResponse,
  type ProxyError,
} from './error-response.js';
import {
  buildClientResponseHeaders,
  buildClientTrailers,
  removeContentLength,
  unrelayableResponse,
  type ResponseHead,
} from './headers.js';
import type { LogLimiter } from '../../common/log-limiter.js';
import { BODY_TOO_LARGE_CODE } from './prepare-request.js';
import type { RouteActions } from './route-actions.js';
import type { TrustedProxies } from './trusted-proxies.js';
import { forwardedPath } from './upstream-request.js';

/**
 * Action of the proxy on a request whose path contains `%2F` (or `%2f`), an escaped slash.
 * `keep` routes and forwards it as data inside its segment. `reject` responds with 400
 * `escaped_slash`, because an upstream that decodes `%2F` before routing would see other
 * segments than the router matched.
 */
export type EscapedSlashAction = 'keep' | 'reject';

/** State shared by every request of one proxy handler. */
export interface ProxyContext {
  readonly logger: Logger;
  /** Scheme of the listener, sent upstream as `X-Forwarded-Proto`. */
  readonly protocol: 'http' | 'https';
  /** Clients whose X-Forwarded-* headers are kept. */
  readonly trustedProxies: TrustedProxies;
  /** Default largest request body in bytes for routes that set none; 0 means no limit. */
  readonly maxRequestBodyBytes: number;
  /** Largest number of request header fields; more get 431. */
  readonly maxHeaderCount: number;
  readonly escapedSlashes: EscapedSlashAction;
  /** Idle time after which an upgraded tunnel is closed, in milliseconds. */
  readonly tunnelIdleTimeoutMs: number;
  /** Time allowed to connect and get response headers on the proxy's own connections. */
  readonly upstreamConnectTimeoutMs: number;
  readonly upstreamHeadersTimeoutMs: number;
  /** Idle time between response body bytes on the proxy's own connections; 0 means none. */
  readonly upstreamBodyTimeoutMs: number;
  /** Metrics and access log hooks. */
  readonly observer: ProxyObserver;
  /** Limits the warn lines about failed upstream requests. */
  readonly upstreamFailureLog: LogLimiter;
  /**
   * Limits the warn lines about requests with too many Loom `Via` entries. Any client can send
   * such a request, so these lines have a budget apart from `upstreamFailureLog`.
   */
  readonly requestLoopLog: LogLimiter;
  /** Limits the error lines about unexpected exceptions. */
  readonly internalErrorLog: LogLimiter;
}

/** One matched request: everything an exchange needs to send it, possibly more than once. */
export interface ForwardedRequest {
  readonly route: string;
  readonly balancer: Balancer;
  readonly actions: RouteActions;
  readonly method: string;
  /** Normalised path without the query. */
  readonly path: string;
  /** The normalised path with the query, for targets without base path or rewrite. */
  readonly pathAndQuery: string;
  /** `?` and the query as received, or empty. */
  readonly query: string;
  readonly headers: string[];
  readonly body: IncomingMessage | AsyncIterable<Buffer> | null;
  /** Request arrival, `performance.now()`. */
  readonly startTime: number;
}

/** The pipeline guard finds the exchange of a response through the same property. */
const kExchange: typeof kForwarder = kForwarder;

interface ExchangeResponse extends ServerResponse {
  [kExchange]?: ProxyExchange;
}

/** Abort reason given to undici when the client leaves; one shared instance, never logged. */
const CLIENT_CLOSED = new Error('client closed the connection');
/** Abort reason when the client's request body failed to parse; one shared instance. */
const INVALID_CLIENT_BODY = new Error('the client request body failed to parse');
/** Failure of an upstream body delimited by the connection close that ended with a reset. */
export const CLOSE_DELIMITED_RESET = Object.assign(
  new Error('the upstream reset the connection before the end of the response body'),
  { code: 'ECONNRESET' },
);
/** Abort reason when the proxy already responded to the client (per-route connect timeout). */
const ALREADY_ANSWERED = new Error('the proxy already responded to the client');

/** Scratch result of `buildClientResponseHeaders`, read right after each call. */
const RESPONSE_HEAD: ResponseHead = {
  contentLength: undefined,
  trailerIndex: -1,
  connectionTokens: undefined,
  transferEncoding: undefined,
};

/** Methods whose requests may be sent again (RFC 9110 section 9.2.2); POST and PATCH are not. */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Tells whether `request`, after `attempts` attempts and the failure `err`, may go to another
 * target: the route allows another retry, the request has no body and an idempotent method, and
 * the failure happened before the upstream could act on it.
 */
export function canRetryRequest(request: ForwardedRequest, attempts: number, err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    attempts <= request.actions.retries &&
    request.body === null &&
    IDEMPOTENT_METHODS.has(request.method) &&
    typeof code === 'string' &&
    RETRYABLE_CODES.has(code)
  );
}

/** Error codes of failures that happened before the upstream could act on the request. */
const RETRYABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/**
 * One proxied request, and the undici dispatch handler of each attempt to send it. It uses
 * undici's original handler interface (`onConnect`, `onHeaders`, `onData`, `onComplete`,
 * `onError`), which hands over raw header buffers and skips the per-request wrapper and header
 * object that the controller interface costs.
 *
 * Failures before the response headers reach the client become a JSON error response, after a
 * retry on another target when the route allows retries, the method is idempotent and the
 * request has no body. After the headers, a failure destroys the client socket, so the client
 * sees a truncated response. When the client closes the connection first, the upstream request
 * is aborted and nothing is logged above debug level.
 */
// NOTE: undici 7 supports this handler interface next to the controller one; moving to undici 8
// means porting the callbacks to `onRequestStart` and friends.
export class ProxyExchange
  extends ObservedExchange
  implements Dispatcher.DispatchHandler, BodyForwarder
{
  readonly #res: ExchangeResponse;
  readonly #socket: Socket;
  #abort: ((err?: Error) => void) | null = null;
  #resume: (() => void) | null = null;
  #connectTimer: NodeJS.Timeout | undefined;
  #status = 0;
  #clientClosed = false;
  #responseStarted = false;
  #attemptDone = true;
  #answered = false;
  #awaitingDrain = false;
  /** 1xx responses the upstream sent for this request. */
  #informational = 0;
  /** True when the client response has neither Content-Length nor chunked framing. */
  #closeDelimited = false;
  /** Fields that the upstream response's `Connection` header named, dropped from trailers. */
  #connectionTokens: string[] | undefined;
  /** Targets of the failed attempts, created by the first retry. */
  #tried: UpstreamTarget[] | undefined;
  /** Handler of the current attempt when the route has a connect timeout, which detaches it. */
  #detachable: DetachableAttempt | undefined;

  constructor(
    context: ProxyContext,
    req: IncomingMessage,
    res: ServerResponse,
    request: ForwardedRequest,
  ) {
    super(context, req, request);
    this.#res = res;
    this.#socket = req.socket;

    // The listeners are shared module functions that find the exchange through this property,
    // so a request allocates no closures. A response emits 'close' once, so `on` does what
    // `once` would without its wrapper.
    this.#res[kExchange] = this;
    res.on('close', onClientClose);
    if (res.socket === null) onQueuedClientClose(req.socket, res, () => onClientClose.call(res));
  }

  /** Sends the request to `target`. A retry goes to a target not tried yet while one exists. */
  start(target: UpstreamTarget): void {
    const request = this.request;
    const actions = request.actions;
    this.beginAttempt(target);
    this.#attemptDone = false;
    this.#abort = null;

    const path = forwardedPath(target, request);
    if (actions.connectTimeoutMs > 0) {
      this.#connectTimer = setTimeout(onConnectTimeout, actions.connectTimeoutMs, this);
      // Only an attempt that the timeout can give up needs a handler of its own.
      this.#detachable = new DetachableAttempt(this, target.state);
    }
    // `servername` is a Request option of undici 7 that its DispatchOptions type omits.
    const options: Dispatcher.DispatchOptions & { servername?: string } = {
      method: request.method,
      path,
      headers: request.headers,
      // undici streams async iterables too; its types list only streams and buffers.
      body: request.body as Dispatcher.DispatchOptions['body'],
      // Without it undici would send the client's Host as SNI and check the certificate
      // against it.
      servername: target.connect.servername,
      headersTimeout: actions.headersTimeoutMs > 0 ? actions.headersTimeoutMs : undefined,
      bodyTimeout: actions.bodyTimeoutMs > 0 ? actions.bodyTimeoutMs : undefined,
    };
    target.pool.dispatch(options, this.#detachable ?? this);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    clearTimeout(this.#connectTimer);
    if (this.#clientClosed) {
      abort(CLIENT_CLOSED);
    } else if (this.#answered) {
      abort(ALREADY_ANSWERED);
    }
  }

  onHeaders(
    statusCode: number,
    rawHeaders: Buffer[] | string[] | null,
    resume: () => void,
    statusText?: string,
  ): boolean {
    if (this.#clientClosed || this.#answered) {
      return true;
    }
    const raw = (rawHeaders ?? []) as Buffer[];
    if (statusCode < 200) {
      if (++this.#informational <= MAX_INFORMATIONAL_RESPONSES) {
        forwardInformational(this.req, this.#res, statusCode, raw);
      }
      return true;
    }

    const target = this.target;
    // A response below 500 counts as a success only once its body is complete.
    if (statusCode >= 500) {
      target.state.recordFailure();
    }

    const req = this.req;
    const res = this.#res;
    const request = this.request;
    const head = RESPONSE_HEAD;
    head.contentLength = undefined;
    head.trailerIndex = -1;
    const headers = buildClientResponseHeaders(raw, request.actions, head);
    const unrelayable = unrelayableResponse(statusCode, head);
    if (unrelayable !== undefined) {
      // The upstream connection is closed with the request, because its framing is unknown.
      this.#abort?.(unrelayable);
      return true;
    }
    // Trailers need chunked encoding toward the client, which Node.js uses only for HTTP/1.1
    // responses with a body and without Content-Length. In every other case the Trailer header
    // is dropped, because it would make `writeHead` throw.
    if (
      head.trailerIndex !== -1 &&
      (head.contentLength !== undefined ||
        req.httpVersionMinor !== 1 ||
        request.method === 'HEAD' ||
        statusCode === 204 ||
        statusCode === 304)
    ) {
      headers.splice(head.trailerIndex, 2);
    }
    // RFC 9110 section 8.6 forbids Content-Length in a 204, and a client that trusted one would
    // wait for a body that never comes.
    if (statusCode === 204 && head.contentLength !== undefined) {
      removeContentLength(headers);
    }
    // An upstream that answers before the whole request body arrived (an early 413 or 401)
    // leaves the rest of the body unread on the client connection, so it cannot be reused. An
    // upstream that also resets its connection still gets its response through, because the
    // pool's sockets keep what they read before a reset (see `keepResponseOnReset`).
    if (request.body !== null && !req.complete) {
      headers.push('connection', 'close');
      markConnectionClosing(this.#socket);
    }

    try {
      if (statusText) {
        res.writeHead(statusCode, statusText, headers);
      } else {
        res.writeHead(statusCode, headers);
      }
    } catch (err) {
      // Node.js rejects reason phrases and header values that undici accepted, so the client
      // gets a 502.
      this.#abort?.(err as Error);
      return true;
    }
    this.#status = statusCode;
    this.#responseStarted = true;
    this.#closeDelimited = !res.chunkedEncoding && head.contentLength === undefined;
    this.#connectionTokens = head.connectionTokens;
    this.#resume = resume;

    const logger = this.context.logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        { route: request.route, target: target.origin, status: statusCode },
        'upstream response started',
      );
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#clientClosed) {
      return true;
    }

    this.bytesSent += chunk.length;
    if (!this.#res.write(chunk)) {
      if (!this.#awaitingDrain) {
        this.#awaitingDrain = true;
        this.#res.once('drain', onClientDrain);
      }
      return false;
    }
    return true;
  }

  onComplete(rawTrailers: Buffer[] | string[] | null): void {
    if (this.#responseStarted && isReportingReset()) {
      // A body delimited by the connection close, cut by a reset: a failure, not the end.
      this.onError(CLOSE_DELIMITED_RESET);
      return;
    }
    this.#finishAttempt();
    if (this.#responseStarted && this.#status < 500) {
      this.target.state.recordSuccess();
    }
    if (this.#clientClosed || this.#answered) {
      return;
    }

    this.reportAttempt(undefined);

    this.#answered = true;
    const res = this.#res;
    if (rawTrailers !== null && rawTrailers.length > 0 && res.chunkedEncoding) {
      try {
        const trailers = rawTrailers as Buffer[];
        res.addTrailers(
          buildClientTrailers(trailers, this.request.actions, this.#connectionTokens),
        );
      } catch {
        // Node.js rejects trailer fields that undici accepted; the body is still complete.
      }
    }
    res.end();
    this.reportRequest(this.#status);
  }

  onError(err: Error): void {
    this.#finishAttempt();
    try {
      this.#handleUpstreamError(err);
    } catch (failure) {
      this.context.logger.error({ err: failure }, 'proxy error handling failed');
      destroyResponse(this.#res);
    }
  }

  onUpgrade(): void {
    // Never requested: upgrades go through `proxyUpgrade` on a connection of their own.
  }

  /** Aborts the upstream request when the client connection closes before the response ends. */
  handleClientClose(): void {
    this.#res[kExchange] = undefined;
    if (this.#res.writableFinished) {
      return;
    }

    this.#clientClosed = true;
    this.#abort?.(CLIENT_CLOSED);
    if (!this.#answered) {
      this.#answered = true;
      this.reportRequest(0);
    }
  }

  /**
   * Aborts the upstream request after the client's request body failed to parse. The pipeline
   * guard sends `status` in place of the response, or cuts the response when it had started.
   */
  abortInvalidBody(status: number): boolean {
    this.#res[kExchange] = undefined;
    // From here on the callbacks of the attempt write nothing to the client response.
    this.#clientClosed = true;
    if (!this.#attemptDone) {
      const logger = this.context.logger;
      if (logger.isLevelEnabled('debug')) {
        logger.debug(
          { route: this.request.route, target: this.target.origin, status },
          'upstream request aborted: the client request body failed to parse',
        );
      }
      this.#abort?.(INVALID_CLIENT_BODY);
    }
    if (!this.#answered) {
      this.#answered = true;
      this.reportRequest(this.#responseStarted ? this.#status : status);
    }
    return this.#responseStarted && this.#closeDelimited;
  }

  /** Resumes reading the upstream response once the client socket has drained. */
  handleClientDrain(): void {
    this.#awaitingDrain = false;
    if (!this.#clientClosed) {
      this.#resume?.();
    }
  }

  /**
   * Retries on another target, or sends 504, when no connection was obtained within the route's
   * connect timeout.
   */
  handleConnectTimeout(): void {
    if (this.#abort !== null || this.#answered || this.#clientClosed) {
      return;
    }
    const error = Object.assign(new Error('connect timeout of the route expired'), {
      code: 'UND_ERR_CONNECT_TIMEOUT',
    });
    this.target.state.recordFailure();
    this.reportAttempt('timeout');
    if (this.#detachable !== undefined && this.#canRetry(error)) {
      const next = this.#pickRetryTarget();
      if (next !== undefined) {
        // The waiting request leaves the target's in-flight count when undici settles it.
        this.#detachable.detach();
        this.#detachable = undefined;
        this.#attemptDone = true;
        this.#retry(error, next);
        return;
      }
    }
    this.logUpstreamFailure(error, PROXY_ERRORS.upstreamTimeout.status);
    this.#answer(PROXY_ERRORS.upstreamTimeout);
  }

  #finishAttempt(): void {
    if (this.#attemptDone) {
      return;
    }
    this.#attemptDone = true;
    this.target.state.active--;
    clearTimeout(this.#connectTimer);
  }

  #handleUpstreamError(err: Error): void {
    if ((this.#answered && !this.#responseStarted) || err === INVALID_CLIENT_BODY) {
      return;
    }
    // An upload cut short by the client also fails the upstream request, sometimes before the
    // response 'close' event has run, so a destroyed client socket counts as a client close.
    if (this.#clientClosed || this.#socket.destroyed) {
      this.#clientClosed = true;
      this.#logClientClose();
      return;
    }
    if (this.#responseStarted && isBodylessLengthMismatch(this.#status, err)) {
      this.target.state.recordSuccess();
      this.reportAttempt(undefined);
      this.#answered = true;
      this.#res.end();
      this.reportRequest(this.#status);
      return;
    }
    if (this.#responseStarted && isTrailerContentLength(err)) {
      this.#endWithoutTrailers(err);
      return;
    }
    if (!this.#responseStarted && isUnrequestedContinue(err)) {
      this.target.state.markUnrequestedContinue();
      if (this.request.body === null && IDEMPOTENT_METHODS.has(this.request.method)) {
        this.#resendOnOwnConnection();
        return;
      }
    }
    if ((err as { code?: unknown }).code === BODY_TOO_LARGE_CODE && !this.#responseStarted) {
      this.#answer(PROXY_ERRORS.payloadTooLarge, true);
      return;
    }

    const error = this.#responseStarted ? undefined : classifyUpstreamError(err);
    if (error !== undefined && error.status >= 502) {
      this.target.state.recordFailure();
    }
    this.reportAttempt(upstreamFailureOf(error));
    if (error !== undefined && this.#canRetry(err)) {
      const next = this.#pickRetryTarget();
      if (next !== undefined) {
        this.#retry(err, next);
        return;
      }
    }

    this.logUpstreamFailure(err, error?.status);
    if (error === undefined) {
      // A 5xx counted as a failure at its headers already.
      if (this.#status < 500) this.target.state.recordFailure();
      this.#answered = true;
      // A close-delimited body ends with the connection, so only a reset shows the truncation.
      if (this.#closeDelimited) {
        resetConnection(this.#socket);
      } else {
        destroyResponse(this.#res);
      }
      this.reportRequest(this.#status);
      return;
    }
    // The rest of an upload that the upstream did not take stays unread on the client
    // connection, so the connection cannot carry another request.
    this.#answer(error, this.request.body !== null && !this.req.complete);
  }

  /**
   * Ends the client response after undici rejected the upstream's trailer section, which comes
   * after the last chunk, so the relayed body is complete and only the trailers are lost.
   */
  #endWithoutTrailers(err: Error): void {
    this.target.state.recordSuccess();
    this.reportAttempt(undefined);
    this.logTrailersDropped(err, this.#status);
    this.#answered = true;
    this.#res.end();
    this.reportRequest(this.#status);
  }

  /**
   * Sends the request again to the same target through `node:http`, which skips the unrequested
   * 100 Continue that undici failed on. The new exchange responds to the client and reports the
   * request. The method is idempotent and the request has no body, so RFC 9110 section 9.2.2
   * allows sending it again.
   */
  #resendOnOwnConnection(): void {
    this.reportAttempt(upstreamFailureOf(PROXY_ERRORS.upstreamInvalidResponse));
    this.#answered = true;
    this.#res[kExchange] = undefined;
    new ContinueExchange(this.context, this.req, this.#res, this.request, false).start(this.target);
  }

  #canRetry(err: Error): boolean {
    // A 1xx response shows that the upstream acts on the request, and a forwarded one already
    // reached the client, so the request is not sent again after one.
    return this.#informational === 0 && canRetryRequest(this.request, this.attempts, err);
  }

  /** Adds the current target to those tried and returns the target of the next attempt. */
  #pickRetryTarget(): UpstreamTarget | undefined {
    const tried = (this.#tried ??= []);
    tried.push(this.target);
    return this.request.balancer.pick(this.req, tried);
  }

  #retry(err: Error, next: UpstreamTarget): void {
    this.#logRetry(err, next);
    this.context.observer.retried(this.request.route);
    this.start(next);
  }

  #answer(error: ProxyError, close = false): void {
    this.#answered = true;
    if (close) markConnectionClosing(this.#socket);
    this.#status = error.status;
    this.bytesSent += sendErrorResponse(
      this.#res,
      error,
      this.request.route,
      undefined,
      undefined,
      close,
    );
    this.reportRequest(error.status);
  }

  #logRetry(err: Error, next: UpstreamTarget): void {
    const logger = this.context.logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        {
          route: this.request.route,
          target: this.target.origin,
          next: next.origin,
          attempt: this.attempts,
          code: (err as { code?: unknown }).code,
        },
        'upstream request retried',
      );
    }
  }

  #logClientClose(): void {
    const logger = this.context.logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        { route: this.request.route, target: this.target.origin },
        'client closed the connection before the response completed',
      );
    }
  }
}

/**
 * Tells whether undici failed a 204 or 304 only because of its Content-Length. A 304 may carry
 * the Content-Length its 200 would have (RFC 9110 section 8.6), and a 204 that carries one
 * anyway still ends at its headers (RFC 9112 section 6.3), so the response is complete.
 */
// NOTE: undici 7.30 checks Content-Length against the body of every response except those to
// HEAD, and closes the upstream connection after such a 204 or 304.
function isBodylessLengthMismatch(status: number, err: Error): boolean {
  return (
    (status === 204 || status === 304) &&
    (err as { code?: unknown }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'
  );
}

/**
 * Tells whether undici or `node:http` failed a chunked response because its trailer section
 * contains Content-Length, which llhttp rejects in a message with Transfer-Encoding. In the
 * header section the same field fails the request before its headers, so after them the failure
 * can only come from the trailer section, which follows the last chunk.
 */
// NOTE: undici 7.30.3, the newest 7.x, and Node.js 20 set no llhttp leniency for this and
// discard the trailer fields they parsed before the failure, so every trailer of such a
// response is dropped.
export function isTrailerContentLength(err: Error): boolean {
  return (
    isHttpParserError(err) &&
    err.message.includes("Content-Length can't be present with Transfer-Encoding")
  );
}

function onClientClose(this: ExchangeResponse): void {
  this[kExchange]?.handleClientClose();
}

const kQueuedCloses = Symbol('loom.queuedCloses');

interface QueueingSocket extends Socket {
  /** Callbacks of the responses queued on the connection that have not finished. */
  [kQueuedCloses]?: Map<ServerResponse, () => void>;
}

/**
 * Calls `onClose` when the client connection closes before `res` finishes. Node.js 20 emits
 * 'close' only on the response it is writing, so a response queued behind other pipelined
 * responses gets none, and its upstream request would run on. One 'close' listener on the
 * socket serves every queued response.
 */
export function onQueuedClientClose(
  socket: Socket,
  res: ServerResponse,
  onClose: () => void,
): void {
  const client = socket as QueueingSocket;
  let queued = client[kQueuedCloses];
  if (queued === undefined) {
    const callbacks = new Map<ServerResponse, () => void>();
    queued = callbacks;
    client[kQueuedCloses] = callbacks;
    socket.once('close', () => {
      for (const callback of callbacks.values()) callback();
      callbacks.clear();
    });
  }
  queued.set(res, onClose);
  res.once('finish', () => queued.delete(res));
}

function onClientDrain(this: ExchangeResponse): void {
  this[kExchange]?.handleClientDrain();
}

function onConnectTimeout(exchange: ProxyExchange): void {
  exchange.handleConnectTimeout();
}
