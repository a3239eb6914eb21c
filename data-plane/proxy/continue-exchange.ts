import type { ClientRequest, IncomingMessage, InformationEvent, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { hadWriteReset, keepResponseOnReset } from '../upstreams/reset-guard.js';
import {
  classifyUpstreamError,
  PROXY_ERRORS,
  UPSTREAM_UPGRADE_CODE,
  sendErrorResponse,
  type ProxyError,
} from './error-response.js';
import {
  canRetryRequest,
  CLOSE_DELIMITED_RESET,
  isTrailerContentLength,
  onQueuedClientClose,
  type ForwardedRequest,
  type ProxyContext,
} from './exchange.js';
import { forwardInformational, MAX_INFORMATIONAL_RESPONSES } from './informational.js';
import { ObservedExchange } from './observed-exchange.js';
import { resetConnection } from './socket-reset.js';
import { upstreamFailureOf } from './observer.js';
import { markConnectionClosing } from './pipelining.js';
import {
  buildClientResponseHeaders,
  buildClientTrailers,
  removeContentLength,
  unrelayableResponse,
  type ResponseHead,
} from './headers.js';
import { BODY_TOO_LARGE_CODE } from './prepare-request.js';
import { limitBodyIdleTime } from './body-idle-timer.js';
import { forwardedPath, openUpstreamRequest } from './upstream-request.js';

/** Failure of a request without `Upgrade` that got 101 Switching Protocols; one instance. */
const UNREQUESTED_SWITCH = Object.assign(
  new Error('the upstream sent 101 Switching Protocols to a request without Upgrade'),
  { code: UPSTREAM_UPGRADE_CODE },
);

/**
 * Time the proxy waits for the upstream's `100 Continue` before it sends the body anyway, as
 * RFC 9110 section 10.1.1 asks of clients; some servers never send 100.
 */
const CONTINUE_WAIT_MS = 1_000;

/**
 * One request with `Expect: 100-continue`. Node.js calls the 'checkContinue' listener instead
 * of answering 100 itself, so the proxy forwards the expectation: it sends the request head
 * with `Expect: 100-continue` on a connection of its own (undici rejects the header) and
 * relays what the upstream answers first. A 100 tells the client to send the body, which then
 * streams to the upstream; a final status (401, 413, 417) reaches the client before it sent
 * the body, with `Connection: close`, because the unread body makes the connection unusable.
 * When the upstream stays silent for a second, the proxy answers 100 itself.
 *
 * Without `expectContinue` the request goes without `Expect` and its body at once. The proxy
 * sends requests that way to a target that sends 100 Continue unrequested, which undici 7
 * cannot read and `node:http` skips. Such a request is retried on another target under the
 * rules of `ProxyExchange`: only without a body, with an idempotent method, and before any
 * response or 1xx.
 */
// NOTE: every failure here closes the client connection. A target that sends 100 unrequested
// stays marked for `UNREQUESTED_CONTINUE_MARK_MS`, until its pool is rebuilt, or until it leaves
// the config. After the mark ends, a request with a body to a target that still sends the 100
// gets 502 again.
export class ContinueExchange extends ObservedExchange {
  readonly #res: ServerResponse;
  #upstream: ClientRequest | undefined;
  #continueTimer: NodeJS.Timeout | undefined;
  #headersTimer: NodeJS.Timeout | undefined;
  #bodySent = false;
  /** The request body streams to the upstream: set by the 100, cleared when it ends. */
  #uploading = false;
  /** Set once a final response of 300 or more arrived during the upload, which then stops. */
  #uploadStopped = false;
  #source: Readable | undefined;
  #response: IncomingMessage | undefined;
  /**
   * True once the client response went out without Content-Length or chunked framing (HTTP/1.0
   * clients), so its body ends with the connection and only a reset shows a cut.
   */
  #closeDelimited = false;
  #done = false;
  /** False when the client sent no `Expect`, so the body goes without waiting for a 100. */
  readonly #expectContinue: boolean;
  /** 1xx responses other than 100 of the current attempts; one rules out a retry. */
  #informational = 0;
  /** Targets of the failed attempts, created by the first retry. */
  #tried: UpstreamTarget[] | undefined;

  constructor(
    context: ProxyContext,
    req: IncomingMessage,
    res: ServerResponse,
    request: ForwardedRequest,
    expectContinue = true,
  ) {
    super(context, req, request);
    this.#res = res;
    this.#expectContinue = expectContinue;
  }

  start(target: UpstreamTarget): void {
    const request = this.request;
    this.beginAttempt(target);

    const headers = this.#expectContinue
      ? [...request.headers, 'expect', '100-continue']
      : request.headers.slice();
    const actions = request.actions;
    const context = this.context;
    const upstream = openUpstreamRequest(
      target,
      request.method,
      forwardedPath(target, request),
      headers,
      actions.connectTimeoutMs > 0 ? actions.connectTimeoutMs : context.upstreamConnectTimeoutMs,
    );
    this.#upstream = upstream;
    // An early response that arrives right before a reset reaches the client, as in the pool.
    upstream.once('socket', keepResponseOnReset);
    upstream.on('continue', () => this.#sendBody());
    upstream.on('information', (info: InformationEvent) => {
      // As for other requests, the first few 1xx responses reach the client. Node.js emits this
      // event for a 100 too, which forwardInformational skips, and no 101 comes here.
      if (info.statusCode > 100) this.#informational++;
      if (this.#informational > MAX_INFORMATIONAL_RESPONSES) return;
      forwardInformational(this.req, this.#res, info.statusCode, info.rawHeaders);
    });
    upstream.on('response', (response: IncomingMessage) => this.#relay(response));
    // Node.js hands a 101 to this listener. Without one it closes the connection and emits
    // neither 'response' nor 'error', and the client got no response.
    upstream.on('upgrade', (_response: IncomingMessage, socket: Socket) => {
      socket.destroy();
      this.#fail(UNREQUESTED_SWITCH);
    });
    upstream.on('error', (err: Error) => {
      // The upload can fail after the whole response arrived; its 'end' finishes the exchange.
      // A retry destroyed the upstream request of an earlier attempt, whose errors are stale.
      if (this.#response?.complete !== true && upstream === this.#upstream) this.#fail(err);
    });
    if (this.attempts === 1) this.#watchClientClose();
    upstream.flushHeaders();

    if (this.#expectContinue) {
      this.#continueTimer = setTimeout(() => this.#sendBody(), CONTINUE_WAIT_MS);
    } else {
      this.#sendBody();
    }
    const headersTimeout =
      actions.headersTimeoutMs > 0 ? actions.headersTimeoutMs : context.upstreamHeadersTimeoutMs;
    if (headersTimeout > 0) {
      this.#headersTimer = setTimeout(() => {
        upstream.destroy(
          Object.assign(new Error('headers timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
        );
      }, headersTimeout);
    }
  }

  /** Ends the exchange when the client connection closes; called once, at the first attempt. */
  #watchClientClose(): void {
    let closed = false;
    const onClientClose = (): void => {
      if (closed) return;
      closed = true;
      if (!this.#done) {
        // Releases the target's in-flight count, which the least-request balancer reads.
        this.#finish();
        this.#upstream?.destroy();
      }
      this.reportRequest(this.#res.writableFinished ? this.#res.statusCode : 0);
    };
    this.#res.once('close', onClientClose);
    if (this.#res.socket === null) onQueuedClientClose(this.req.socket, this.#res, onClientClose);
  }

  #sendBody(): void {
    clearTimeout(this.#continueTimer);
    const upstream = this.#upstream;
    if (this.#bodySent || this.#done || upstream === undefined) {
      return;
    }

    this.#bodySent = true;
    if (this.#expectContinue && !this.#res.headersSent) this.#res.writeContinue();
    const body = this.request.body;
    if (body === null) {
      upstream.end();
      return;
    }
    const source = body === this.req ? this.req : Readable.from(body);
    source.on('error', (err: Error) => upstream.destroy(err));
    this.#uploading = true;
    this.#source = source;
    source.once('end', () => (this.#uploading = false));
    source.pipe(upstream);
  }

  #relay(response: IncomingMessage): void {
    clearTimeout(this.#continueTimer);
    clearTimeout(this.#headersTimer);
    this.#response = response;
    // A server may respond while it reads the body, so only a rejection stops the upload, as
    // curl does. The client's unsent body then makes its connection close after the response.
    if (this.#uploading && (response.statusCode ?? 0) >= 300) {
      this.#uploadStopped = true;
      this.#source?.unpipe(this.#upstream);
    }
    const res = this.#res;
    const status = response.statusCode ?? 502;
    // A response below 500 counts as a success only once its body is complete.
    if (status >= 500) {
      this.target.state.recordFailure();
    }

    const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
    const headers = buildClientResponseHeaders(response.rawHeaders, this.request.actions, head);
    const unrelayable = unrelayableResponse(status, head);
    if (unrelayable !== undefined) {
      response.destroy();
      this.#fail(unrelayable);
      return;
    }
    if (head.trailerIndex !== -1) headers.splice(head.trailerIndex, 2);
    if (status === 204 && head.contentLength !== undefined) removeContentLength(headers);
    if (!this.#bodySent || !this.req.complete) {
      headers.push('connection', 'close');
      markConnectionClosing(this.req.socket);
    }
    try {
      res.writeHead(status, response.statusMessage ?? '', headers);
    } catch (err) {
      response.destroy();
      this.#fail(err as Error);
      return;
    }
    this.#closeDelimited = !res.chunkedEncoding && head.contentLength === undefined;

    const actions = this.request.actions;
    limitBodyIdleTime(
      response,
      res,
      actions.bodyTimeoutMs > 0 ? actions.bodyTimeoutMs : this.context.upstreamBodyTimeoutMs,
    );
    response.on('data', (chunk: Buffer) => {
      this.bytesSent += chunk.length;
      if (!res.write(chunk)) {
        response.pause();
        res.once('drain', () => response.resume());
      }
    });
    const closeDelimited =
      response.headers['content-length'] === undefined &&
      response.headers['transfer-encoding'] === undefined &&
      status !== 204 &&
      status !== 304 &&
      this.request.method !== 'HEAD';
    response.on('end', () => {
      if (closeDelimited && hadWriteReset(this.#upstream?.socket)) {
        // The end of input came from a reset that an upload write reported: a cut, not the end.
        this.#fail(CLOSE_DELIMITED_RESET);
        return;
      }
      if (response.rawTrailers.length > 0 && res.chunkedEncoding) {
        try {
          res.addTrailers(
            buildClientTrailers(response.rawTrailers, actions, head.connectionTokens),
          );
        } catch {
          // Invalid trailer fields are dropped; the body is complete.
        }
      }
      if (status < 500) this.target.state.recordSuccess();
      this.#finish();
      this.reportAttempt(undefined);
      res.end();
      if (!this.#bodySent || this.#uploadStopped) this.#upstream?.destroy();
    });
    response.on('error', (err: Error) => this.#fail(err));
  }

  #fail(err: Error): void {
    clearTimeout(this.#continueTimer);
    clearTimeout(this.#headersTimer);
    if (this.#done) {
      return;
    }
    if (this.#response !== undefined && this.#res.headersSent && isTrailerContentLength(err)) {
      this.#endWithoutTrailers(this.#response, err);
      return;
    }
    this.#finish();
    this.#upstream?.destroy();
    if (this.#retry(err)) return;

    const code = (err as { code?: unknown }).code;
    let error: ProxyError = classifyUpstreamError(err);
    if (code === BODY_TOO_LARGE_CODE) {
      error = PROXY_ERRORS.payloadTooLarge;
    } else {
      // A 5xx response counted as a failure at its headers already.
      const counted = (this.#response?.statusCode ?? 0) >= 500;
      if (error.status >= 502 && !counted) this.target.state.recordFailure();
      this.reportAttempt(upstreamFailureOf(this.#res.headersSent ? undefined : error));
    }
    // After the response headers the client gets no error status but a cut response.
    this.logUpstreamFailure(err, this.#res.headersSent ? undefined : error.status);
    markConnectionClosing(this.req.socket);
    const socket = this.req.socket;
    if (this.#res.headersSent && this.#closeDelimited && this.#res.socket === socket) {
      // A FIN would end such a body as if it were complete.
      resetConnection(socket);
      return;
    }
    this.bytesSent += sendErrorResponse(
      this.#res,
      error,
      this.request.route,
      undefined,
      undefined,
      true,
    );
  }

  /**
   * Ends the client response after `node:http` rejected the upstream's trailer section, as
   * `ProxyExchange` does for undici: the parser reached the trailers after the last chunk, so
   * the body is complete and only the trailers are lost.
   */
  #endWithoutTrailers(response: IncomingMessage, err: Error): void {
    // Node.js 20 emits the parser error before the 'data' events of the chunks parsed in the
    // same read, and then destroys the response with its buffer. Reading the buffer now sends
    // those chunks to the client through the 'data' listener.
    while (response.read() !== null);
    const status = response.statusCode ?? 0;
    if (status < 500) this.target.state.recordSuccess();
    this.#finish();
    this.reportAttempt(undefined);
    this.logTrailersDropped(err, status);
    this.#res.end();
    this.#upstream?.destroy();
  }

  /**
   * Starts the next attempt on another target when the failure allows a retry, as
   * `ProxyExchange` does: only a request sent without `Expect` and without a body, with an
   * idempotent method, before any response or 1xx. Returns false when no retry started.
   */
  #retry(err: Error): boolean {
    const request = this.request;
    if (
      this.#expectContinue ||
      this.#response !== undefined ||
      this.#informational > 0 ||
      this.#res.headersSent ||
      !canRetryRequest(request, this.attempts, err)
    ) {
      return false;
    }
    const tried = (this.#tried ??= []);
    tried.push(this.target);
    const next = request.balancer.pick(this.req, tried);
    if (next === undefined) return false;

    this.target.state.recordFailure();
    this.reportAttempt(upstreamFailureOf(classifyUpstreamError(err)));
    this.context.observer.retried(request.route);
    this.#done = false;
    this.#bodySent = false;
    this.start(next);
    return true;
  }

  #finish(): void {
    if (this.#done) {
      return;
    }
    this.#done = true;
    this.target.state.active--;
  }
}
