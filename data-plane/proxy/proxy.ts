import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../../common/logger.js';
import type { RouterMatch } from '../router/types.js';
import type { RouteBinding, RoutingTable } from '../table.js';
import { PROXY_ERRORS, sendErrorResponse } from './error-response.js';
import { ProxyExchange, type ProxyContext } from './exchange.js';
import { buildUpstreamRequestHeaders } from './headers.js';
import { LogLimiter } from './log-limiter.js';

/** Settings of one proxy handler. */
export interface ProxyHandlerOptions {
  /** Returns the routing table in service, or undefined before the first snapshot arrives. */
  getTable(): RoutingTable | undefined;
  logger: Logger;
  /** Scheme of the listener, sent upstream as `X-Forwarded-Proto`; default `http`. */
  listenerProtocol?: 'http' | 'https';
}

/** A `node:http` request listener. */
export type ProxyHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Warn or error lines allowed per second for each kind of request failure. */
const FAILURE_LOG_LINES_PER_SECOND = 10;

const SLASH = 0x2f;

/**
 * Creates the request listener that routes each request and proxies it to an upstream target.
 *
 * The handler reads `getTable()` once per request, so a request finishes on the table it
 * started with. It matches the method, the Host header and the path without the query, and
 * forwards the method, the target's base path joined with the path, and the query byte for
 * byte. Bodies stream in both directions with backpressure. Hop-by-hop headers are removed in
 * both directions and `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` are set.
 *
 * Failures become JSON bodies `{"error", "message", "route"?}`: 503 `no_configuration`,
 * 404 `route_not_found`, 405 `method_not_allowed` with `Allow`, 400 `bad_request`,
 * 502 `upstream_unavailable`, 502 `upstream_unreachable`, 504 `upstream_timeout`,
 * 502 `upstream_error` and 500 `internal_error`. The handler never throws.
 */
export function createProxyHandler(options: ProxyHandlerOptions): ProxyHandler {
  const getTable = options.getTable;
  const context: ProxyContext = {
    logger: options.logger.child({ component: 'proxy' }),
    protocol: options.listenerProtocol ?? 'http',
    upstreamFailureLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
    internalErrorLog: new LogLimiter(FAILURE_LOG_LINES_PER_SECOND, 1_000),
  };

  return function handleProxyRequest(req: IncomingMessage, res: ServerResponse): void {
    try {
      proxyRequest(context, getTable(), req, res);
    } catch (err) {
      handleInternalError(context, res, err);
    }
  };
}

function proxyRequest(
  context: ProxyContext,
  table: RoutingTable | undefined,
  req: IncomingMessage,
  res: ServerResponse,
): void {
  if (table === undefined) {
    sendErrorResponse(res, PROXY_ERRORS.noConfiguration);
    return;
  }
  // Absolute-form (`http://host/path`) and asterisk-form (`*`) targets are not routed.
  const url = req.url ?? '';
  if (url.charCodeAt(0) !== SLASH) {
    sendErrorResponse(res, PROXY_ERRORS.originFormRequired);
    return;
  }

  const queryStart = url.indexOf('?');
  const path = queryStart === -1 ? url : url.slice(0, queryStart);
  const method = req.method ?? 'GET';
  const match = table.router.find(method, req.headers.host, path);
  if (match.kind !== 'found') {
    sendRouteMiss(res, match);
    return;
  }

  const binding = match.value;
  const target = binding.balancer?.pick();
  if (target === undefined) {
    sendErrorResponse(res, PROXY_ERRORS.upstreamUnavailable, binding.route.name);
    return;
  }

  const headers = buildUpstreamRequestHeaders(
    req.rawHeaders,
    req.socket.remoteAddress,
    context.protocol,
  );
  const exchange = new ProxyExchange(context, req, res, binding.route, target);
  // The base path has no trailing slash and `url` starts with one, so the join never
  // produces `//`. The query stays attached to `url` and is forwarded unchanged.
  target.pool.dispatch(
    { method, path: target.basePath + url, headers, body: hasBody(req) ? req : null },
    exchange,
  );
}

function sendRouteMiss(
  res: ServerResponse,
  match: Exclude<RouterMatch<RouteBinding>, { kind: 'found' }>,
): void {
  switch (match.kind) {
    case 'not-found':
      sendErrorResponse(res, PROXY_ERRORS.routeNotFound);
      return;
    case 'method-not-allowed':
      sendErrorResponse(res, PROXY_ERRORS.methodNotAllowed, undefined, undefined, match.allow);
      return;
    case 'bad-request':
      sendErrorResponse(res, PROXY_ERRORS.badRequest, undefined, match.reason);
      return;
  }
}

/**
 * Tells whether the request has a body to stream: only `Transfer-Encoding` or a non-zero
 * `Content-Length` announces one. Passing the empty stream of a GET would make undici send
 * the GET with chunked encoding.
 */
function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) {
    return true;
  }
  const contentLength = req.headers['content-length'];
  return contentLength !== undefined && contentLength !== '0';
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
