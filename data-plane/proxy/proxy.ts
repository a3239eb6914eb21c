import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../../common/logger.js';
import type { RoutingTable } from '../table.js';
import { ContinueExchange } from './continue-exchange.js';
import { PROXY_ERRORS, sendErrorResponse } from './error-response.js';
import { ProxyExchange, type ProxyContext } from './exchange.js';
import { LogLimiter } from './log-limiter.js';
import { NO_OBSERVER, UNMATCHED, type ProxyObserver } from './observer.js';
import { prepareRequest, type PreparedRequest } from './prepare-request.js';
import { TrustedProxies } from './trusted-proxies.js';
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
  /** Idle time after which an upgraded connection is closed, in milliseconds; default 300000. */
  tunnelIdleTimeoutMs?: number;
  /** Connect and response-header timeouts of upgrade and 100-continue requests; default 5000 and 30000. */
  upstreamConnectTimeoutMs?: number;
  upstreamHeadersTimeoutMs?: number;
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
  readonly context: ProxyContext;
}

/** A `node:http` request listener. */
export type ProxyHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Default largest request body: 10 MiB. */
export const DEFAULT_MAX_REQUEST_BODY_BYTES = 10 * 1024 * 1024;
/** Default largest number of request header fields. */
export const DEFAULT_MAX_HEADER_COUNT = 100;

const kRejected = Symbol('loom.rejected');

interface RejectingSocket extends Socket {
  [kRejected]?: boolean;
}

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
 * Failures become JSON bodies `{"error", "message", "route"?}`: 503 `no_configuration`,
 * 404 `route_not_found`, 405 `method_not_allowed` with `Allow`, 400 `bad_request`,
 * 413 `payload_too_large`, 431 `request_header_fields_too_large`, 501 `not_implemented`,
 * 502 `upstream_unavailable`, 502 `upstream_unreachable`, 504 `upstream_timeout`,
 * 502 `upstream_error` and 500 `internal_error`. The listeners never throw.
 */
export function createProxyHandlers(options: ProxyHandlerOptions): ProxyHandlers {
  const getTable = options.getTable;
  const context: ProxyContext = {
    logger: options.logger.child({ component: 'proxy' }),
    protocol: options.listenerProtocol ?? 'http',
    trustedProxies: new TrustedProxies(options.trustedProxies ?? []),
    maxRequestBodyBytes: options.maxRequestBodyBytes ?? DEFAULT_MAX_REQUEST_BODY_BYTES,
    maxHeaderCount: options.maxHeaderCount ?? DEFAULT_MAX_HEADER_COUNT,
    tunnelIdleTimeoutMs: options.tunnelIdleTimeoutMs ?? 300_000,
    upstreamConnectTimeoutMs: options.upstreamConnectTimeoutMs ?? 5_000,
    upstreamHeadersTimeoutMs: options.upstreamHeadersTimeoutMs ?? 30_000,
    observer: options.observer ?? NO_OBSERVER,
    upstreamFailureLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
    internalErrorLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
  };

  const handle = (req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void => {
    const socket = req.socket as RejectingSocket;
    if (socket[kRejected] === true) {
      // A request pipelined behind one that was rejected with `Connection: close`; its framing
      // is not trusted, so it is not forwarded.
      socket.destroy();
      return;
    }
    const startTime = context.observer.enabled ? performance.now() : 0;
    try {
      const prepared = prepareRequest(context, getTable(), req, startTime);
      if (!prepared.ok) {
        if (prepared.close) socket[kRejected] = true;
        sendPreparedError(res, prepared);
        reportUnforwarded(context, req, prepared, startTime);
        return;
      }
      if (expectContinue) {
        new ContinueExchange(context, req, res, prepared.request).start(prepared.target);
      } else {
        new ProxyExchange(context, req, res, prepared.request).start(prepared.target);
      }
    } catch (err) {
      handleInternalError(context, res, err);
    }
  };

  return {
    context,
    request: (req, res) => handle(req, res, false),
    checkContinue: (req, res) => handle(req, res, true),
    upgrade: (req, socket, head) => {
      try {
        proxyUpgrade(context, getTable(), req, socket, head);
      } catch (err) {
        context.logger.error({ err }, 'proxy request failed unexpectedly');
        socket.destroy();
      }
    },
  };
}

/** Sends the error response of a request that was not forwarded. */
export function sendPreparedError(
  res: ServerResponse,
  prepared: Extract<PreparedRequest, { ok: false }>,
): void {
  sendErrorResponse(
    res,
    prepared.error,
    prepared.route,
    prepared.message,
    prepared.allow,
    prepared.close,
  );
}

function reportUnforwarded(
  context: ProxyContext,
  req: IncomingMessage,
  prepared: Extract<PreparedRequest, { ok: false }>,
  startTime: number,
): void {
  const observer = context.observer;
  if (observer.enabled) {
    const route = prepared.route ?? UNMATCHED;
    observer.requestFinished(req, route, prepared.error.status, undefined, 0, startTime);
  }
}

function handleInternalError(context: ProxyContext, res: ServerResponse, err: unknown): void {
  const suppressed = context.internalErrorLog.take();
  if (suppressed !== undefined) {
    context.logger.error({ err, suppressed }, 'proxy request failed unexpectedly');
  }

  try {
    sendErrorResponse(res, PROXY_ERRORS.internal);
  } catch {
    res.destroy();
  }
}
