import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { MAX_TIMER_MS } from '../../common/timers.js';
import type { RoutingTable } from '../table.js';
import { ContinueExchange } from './continue-exchange.js';
import {
  destroyResponse,
  PROXY_ERRORS,
  sendErrorResponse,
  writeRawErrorResponse,
} from './error-response.js';
import { ProxyExchange, type EscapedSlashAction, type ProxyContext } from './exchange.js';
import { LogLimiter } from '../../common/log-limiter.js';
import { NO_OBSERVER, UNMATCHED, type ProxyObserver } from './observer.js';
import { PipelineGuard } from './pipelining.js';
import { SendWatchdog } from './send-watchdog.js';
import { prepareRequest, type PreparedRequest } from './prepare-request.js';
import { TrustedProxies } from './trusted-proxies.js';
import { DEFAULT_TUNNEL_DRAIN_TIMEOUT_MS, TunnelRegistry } from './tunnel.js';
import { proxyUpgrade } from './upgrade.js';

/** Settings of one proxy handler. */
export interface ProxyHandlerOptions {
  /** Returns the routing table in service, or undefined before the first snapshot arrives. */
  getTable(): RoutingTable | undefined;
  logger: Logger;
  /** Scheme of the listener, sent upstream as `X-Forwarded-Proto`; default `http`. */
  listenerProtocol?: 'http' | 'https';
  /** Addresses and CIDR ranges whose X-Forwarded-* headers are kept; default none. */
  trustedProxies?: readonly string[];
  /** Largest request body in bytes for routes that set none; 0 means no limit. Default 10 MiB. */
  maxRequestBodyBytes?: number;
  /** Largest number of request header fields; more get 431. Default 100. */
  maxHeaderCount?: number;
  /** Action for a path that contains `%2F` (see `EscapedSlashAction`); default `keep`. */
  escapedSlashes?: EscapedSlashAction;
  /** Idle time after which an upgraded connection is closed, in milliseconds; default 300000. */
  tunnelIdleTimeoutMs?: number;
  /**
   * Time a client connection may take no bytes while some wait to be sent to it, in
   * milliseconds; it is then cut off (see `SendWatchdog`). 0 means no limit; default 60000.
   */
  sendTimeoutMs?: number;
  /**
   * Time a tunnel stays open after a table swap left its handshake without its route, in
   * milliseconds; default 30000.
   */
  tunnelDrainTimeoutMs?: number;
  /**
   * Connect, response-header and body idle timeouts of upgrade and 100-continue requests, in
   * milliseconds; default 5000, 30000 and 30000.
   */
  upstreamConnectTimeoutMs?: number;
  upstreamHeadersTimeoutMs?: number;
  upstreamBodyTimeoutMs?: number;
  /** Metrics and access log hooks; default none. */
  observer?: ProxyObserver;
}

/** The listeners a `node:http` server needs from the proxy. */
export interface ProxyHandlers {
  /** The 'request' listener. */
  request(req: IncomingMessage, res: ServerResponse): void;
  /** The 'checkContinue' listener: requests with `Expect: 100-continue`. */
  checkContinue(req: IncomingMessage, res: ServerResponse): void;
  /** The 'upgrade' listener. */
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void;
  /** The 'connect' listener: CONNECT requests, which get 501 and a closed connection. */
  connect(req: IncomingMessage, socket: Socket): void;
  /** The 'checkExpectation' listener: requests with an `Expect` other than 100-continue. */
  checkExpectation(req: IncomingMessage, res: ServerResponse): void;
  /** The 'clientError' listener: requests that Node.js failed to parse or that timed out. */
  clientError(err: Error, socket: Socket): void;
  /** Cuts off client connections that take no bytes; its `track` is the 'connection' listener. */
  readonly sendWatchdog: SendWatchdog;
  readonly context: ProxyContext;
}

/** A `node:http` request listener. */
export type ProxyHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Default largest request body: 10 MiB. */
export const DEFAULT_MAX_REQUEST_BODY_BYTES = 10 * 1024 * 1024;
/** Default largest number of request header fields. */
export const DEFAULT_MAX_HEADER_COUNT = 100;
/** Default send timeout: 60 s, as nginx's `send_timeout`. */
export const DEFAULT_SEND_TIMEOUT_MS = 60_000;

/** Warn or error lines allowed per second for each kind of request failure. */
const FAILURE_LOG_LINES_PER_SECOND = 10;

/**
 * Creates the request listener that routes each request and proxies it to an upstream target;
 * see `createProxyHandlers`.
 */
export function createProxyHandler(options: ProxyHandlerOptions): ProxyHandler {
  return createProxyHandlers(options).request;
}

/**
 * Creates the listeners of a proxy server.
 *
 * Each request reads `getTable()` once, so it finishes on the table it started with. It is
 * matched on the method, the Host header and the path without the query, and forwarded with
 * the method, the path normalised as the router matched it (dot segments resolved, unreserved
 * escapes decoded) and rewritten by the route, and the query byte for byte. Bodies stream in
 * both directions with backpressure.
 *
 * Requests that could smuggle a second request past an intermediary (more than one Host,
 * Transfer-Encoding in HTTP/1.0, a transfer coding other than chunked) get 400 or 501 and the
 * connection is closed; Node.js itself rejects Content-Length with Transfer-Encoding and
 * repeated Content-Length.
 *
 * An Expect value other than `100-continue` gets 417 without forwarding, on every path that
 * Node.js hands such a request to. OPTIONS and TRACE forward Max-Forwards decremented by one.
 * At 0 the proxy responds itself: 200 with `Allow` to OPTIONS, 405 to TRACE (see
 * `respondAtLastHop`).
 *
 * Failures become JSON bodies `{"error", "message", "route"?}`: 503 `no_configuration`,
 * 404 `route_not_found`, 405 `method_not_allowed` with `Allow`, 400 `bad_request`,
 * 400 `escaped_slash` (only with `escapedSlashes: 'reject'`),
 * 408 `request_timeout`, 413 `payload_too_large`, 417 `expectation_failed`,
 * 431 `request_header_fields_too_large`,
 * 501 `not_implemented`,
 * 505 `http_version_not_supported`, 502 `upstream_unavailable`, 502 `upstream_unreachable`,
 * 504 `upstream_timeout`, 502 `upstream_error`, 508 `loop_detected` and 500 `internal_error`. The listeners never
 * throw.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` when `tunnelDrainTimeoutMs` is not an integer of 0
 *   or more, `sendTimeoutMs` not one from 0 to the longest Node.js timer, or `escapedSlashes`
 *   not `keep` or `reject`.
 */
export function createProxyHandlers(options: ProxyHandlerOptions): ProxyHandlers {
  const getTable = options.getTable;
  const sendTimeoutMs = options.sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS;
  if (!Number.isInteger(sendTimeoutMs) || sendTimeoutMs < 0 || sendTimeoutMs > MAX_TIMER_MS) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid sendTimeoutMs ${sendTimeoutMs}: expected an integer from 0 to ${MAX_TIMER_MS}; ` +
        `use 0 for no limit or a value such as ${DEFAULT_SEND_TIMEOUT_MS}`,
    );
  }
  const escapedSlashes = options.escapedSlashes ?? 'keep';
  if (escapedSlashes !== 'keep' && escapedSlashes !== 'reject') {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid escapedSlashes ${JSON.stringify(escapedSlashes)}: expected "keep" or "reject"`,
    );
  }
  const context: ProxyContext = {
    logger: options.logger.child({ component: 'proxy' }),
    protocol: options.listenerProtocol ?? 'http',
    trustedProxies: new TrustedProxies(options.trustedProxies ?? []),
    maxRequestBodyBytes: options.maxRequestBodyBytes ?? DEFAULT_MAX_REQUEST_BODY_BYTES,
    maxHeaderCount: options.maxHeaderCount ?? DEFAULT_MAX_HEADER_COUNT,
    escapedSlashes,
    tunnelIdleTimeoutMs: options.tunnelIdleTimeoutMs ?? 300_000,
    upstreamConnectTimeoutMs: options.upstreamConnectTimeoutMs ?? 5_000,
    upstreamHeadersTimeoutMs: options.upstreamHeadersTimeoutMs ?? 30_000,
    upstreamBodyTimeoutMs: options.upstreamBodyTimeoutMs ?? 30_000,
    observer: options.observer ?? NO_OBSERVER,
    upstreamFailureLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
    requestLoopLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
    internalErrorLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
  };
  const tunnels = new TunnelRegistry(
    getTable,
    options.tunnelDrainTimeoutMs ?? DEFAULT_TUNNEL_DRAIN_TIMEOUT_MS,
    context.logger,
  );

  const pipeline = new PipelineGuard(context.logger);

  /**
   * Routes and forwards one request. `listener` names the server event that delivered it, and
   * so how Node.js read its Expect header: 'checkContinue' for a value that contains the token
   * `100-continue`, 'checkExpectation' for any other value in HTTP/1.1.
   */
  const handle = (req: IncomingMessage, res: ServerResponse, listener: RequestListener): void => {
    if (!pipeline.admit(req, res)) {
      return;
    }
    const startTime = context.observer.enabled ? performance.now() : 0;
    try {
      let prepared = prepareRequest(context, getTable(), req, startTime);
      if (prepared.ok === true && listener === 'checkExpectation') {
        // `prepareRequest` rejects every Expect value that Node.js does not take for
        // 100-continue, so this only guards against the two checks disagreeing.
        prepared = { ok: false, error: PROXY_ERRORS.expectationFailed, close: true };
      }
      if (prepared.ok === 'options') {
        // As below: Node.js closes the connection after this response.
        if (listener === 'checkContinue') pipeline.reject(req.socket);
        const bytesSent = sendOptionsResponse(res, prepared.allow);
        reportUnforwarded(context, req, undefined, 200, bytesSent, startTime);
        return;
      }
      if (!prepared.ok) {
        // Node.js 20 closes the connection after any response to a request it took for
        // 100-continue unless a 100 went first, so the requests pipelined behind it must not be
        // forwarded either.
        if (listener === 'checkContinue') prepared.close = true;
        if (prepared.close) pipeline.reject(req.socket);
        const bytesSent = sendPreparedError(res, prepared);
        reportUnforwarded(
          context,
          req,
          prepared.route,
          prepared.error.status,
          bytesSent,
          startTime,
        );
        return;
      }
      if (listener === 'checkContinue') {
        new ContinueExchange(context, req, res, prepared.request).start(prepared.target);
      } else if (prepared.target.state.sendsUnrequestedContinue) {
        new ContinueExchange(context, req, res, prepared.request, false).start(prepared.target);
      } else {
        new ProxyExchange(context, req, res, prepared.request).start(prepared.target);
      }
    } catch (err) {
      handleInternalError(context, res, err);
    }
  };

  return {
    context,
    request: (req, res) => handle(req, res, 'request'),
    checkContinue: (req, res) => handle(req, res, 'checkContinue'),
    // Node.js sends a 417 without a body itself when this listener is missing. Through the
    // handler, the 417 carries the proxy's JSON error, the pipeline guard records the request
    // and the connection closes when a body would follow.
    checkExpectation: (req, res) => handle(req, res, 'checkExpectation'),
    clientError: pipeline.clientError,
    sendWatchdog: new SendWatchdog(sendTimeoutMs, context.logger, () =>
      context.observer.sendTimedOut(),
    ),
    connect: (req, socket) => {
      if (!pipeline.admitUpgrade(socket)) {
        return;
      }
      rejectConnect(context, req, socket);
    },
    upgrade: (req, socket, head) => {
      if (!pipeline.admitUpgrade(socket)) {
        return;
      }
      pipeline.afterQueuedResponses(socket, () => {
        try {
          proxyUpgrade(context, tunnels, getTable(), req, socket, head);
        } catch (err) {
          context.logger.error({ err }, 'proxy request failed unexpectedly');
          socket.destroy();
        }
      });
    },
  };
}

/** Server event that delivered a request to `handle`. */
type RequestListener = 'request' | 'checkContinue' | 'checkExpectation';

/**
 * Sends the proxy's own 200 to OPTIONS with Max-Forwards 0, without a body; returns its body
 * bytes, 0.
 */
function sendOptionsResponse(res: ServerResponse, allow: readonly string[] | undefined): number {
  const headers = ['content-length', '0'];
  if (allow !== undefined) headers.push('allow', allow.join(', '));
  res.writeHead(200, headers);
  res.end();
  return 0;
}

/** Sends the error response of a request that was not forwarded; returns its body bytes. */
export function sendPreparedError(
  res: ServerResponse,
  prepared: Extract<PreparedRequest, { ok: false }>,
): number {
  return sendErrorResponse(
    res,
    prepared.error,
    prepared.route,
    prepared.message,
    prepared.allow,
    prepared.close,
  );
}

/** Reports a request that the proxy responded to itself without forwarding it. */
function reportUnforwarded(
  context: ProxyContext,
  req: IncomingMessage,
  route: string | undefined,
  status: number,
  bytesSent: number,
  startTime: number,
): void {
  const observer = context.observer;
  if (observer.enabled) {
    observer.requestFinished(req, route ?? UNMATCHED, status, undefined, bytesSent, startTime);
  }
}

/** Idle time after which a rejected CONNECT connection is destroyed, in milliseconds. */
const CONNECT_LINGER_MS = 5_000;

/**
 * Rejects CONNECT with 501, because the proxy routes requests for paths and opens no tunnels to
 * authorities that clients name.
 */
function rejectConnect(context: ProxyContext, req: IncomingMessage, socket: Socket): void {
  socket.on('error', ignoreSocketError);
  const startTime = context.observer.enabled ? performance.now() : 0;
  const error = PROXY_ERRORS.connectNotSupported;
  const bytesSent = writeRawErrorResponse(socket, error);
  // Node.js no longer times this socket out, and a client that keeps its half open would hold
  // it forever.
  socket.setTimeout(CONNECT_LINGER_MS, () => socket.destroy());
  if (context.observer.enabled) {
    context.observer.requestFinished(req, UNMATCHED, error.status, undefined, bytesSent, startTime);
  }
}

function ignoreSocketError(): void {
  // The socket closes after the error, and nothing else is waiting on it.
}

function handleInternalError(context: ProxyContext, res: ServerResponse, err: unknown): void {
  const suppressed = context.internalErrorLog.take();
  if (suppressed !== undefined) {
    context.logger.error({ err, suppressed }, 'proxy request failed unexpectedly');
  }

  try {
    sendErrorResponse(res, PROXY_ERRORS.internal);
  } catch {
    destroyResponse(res);
  }
}
