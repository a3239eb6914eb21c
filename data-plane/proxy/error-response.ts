import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { errors } from 'undici';
import { REQUEST_LOOP_CODE } from '../upstreams/own-connections.js';

export { isUnrequestedContinue } from '../upstreams/target-state.js';

/** Stable values of the `error` field in the JSON bodies the proxy sends. */
export type ProxyErrorCode =
  | 'no_configuration'
  | 'route_not_found'
  | 'method_not_allowed'
  | 'bad_request'
  | 'escaped_slash'
  | 'payload_too_large'
  | 'expectation_failed'
  | 'request_header_fields_too_large'
  | 'request_timeout'
  | 'not_implemented'
  | 'http_version_not_supported'
  | 'upstream_unavailable'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'upstream_error'
  | 'loop_detected'
  | 'internal_error';

/** Error code of a 101 Switching Protocols that the proxy cannot turn into a tunnel. */
export const UPSTREAM_UPGRADE_CODE = 'LOOM_UPSTREAM_UPGRADE';

/**
 * Log code of an upstream response that the HTTP parser rejected (undici's `HTTPParserError`, or
 * a `node:http` error with an `HPE_` code). The parser's own code, when known, goes in the
 * `parserCode` field next to it.
 */
export const UPSTREAM_INVALID_HTTP_CODE = 'LOOM_UPSTREAM_INVALID_HTTP';

/** Status, code and message of one error response. */
export interface ProxyError {
  readonly status: number;
  readonly error: ProxyErrorCode;
  readonly message: string;
}

/** Every error response the proxy sends, keyed by cause. */
export const PROXY_ERRORS = {
  noConfiguration: {
    status: 503,
    error: 'no_configuration',
    message: 'the proxy has not received a routing configuration yet',
  },
  routeNotFound: { status: 404, error: 'route_not_found', message: 'no route matches the request' },
  methodNotAllowed: {
    status: 405,
    error: 'method_not_allowed',
    message: 'the route does not allow this method',
  },
  badRequest: { status: 400, error: 'bad_request', message: 'the request is invalid' },
  traceAtLastHop: {
    status: 405,
    error: 'method_not_allowed',
    message:
      'the proxy does not answer TRACE itself, because the echo would show credentials to scripts (cross-site tracing); send Max-Forwards of 1 or more to reach the upstream',
  },
  expectationFailed: {
    status: 417,
    error: 'expectation_failed',
    message:
      'the proxy supports only the expectation "100-continue"; send the request without the other Expect values',
  },
  escapedSlash: {
    status: 400,
    error: 'escaped_slash',
    message:
      'the path contains an escaped slash ("%2F"), which an upstream may decode to "/" and route ' +
      'differently; this proxy rejects it (--escaped-slashes reject). Use "/" between segments, ' +
      'or ask the operator for --escaped-slashes keep to pass "%2F" as data',
  },
  invalidRequestTarget: {
    status: 400,
    error: 'bad_request',
    message:
      'the request target must be a path starting with "/", an absolute http or https URL, or "*" for OPTIONS',
  },
  invalidHost: {
    status: 400,
    error: 'bad_request',
    message: 'the Host header is not a valid host name or address with an optional port',
  },
  connectNotSupported: {
    status: 501,
    error: 'not_implemented',
    message: 'the proxy does not support CONNECT; send requests with a path or an absolute URL',
  },
  httpVersionNotSupported: {
    status: 505,
    error: 'http_version_not_supported',
    message: 'the proxy accepts HTTP/1.0 and HTTP/1.1 requests only; send the request as HTTP/1.1',
  },
  multipleHosts: {
    status: 400,
    error: 'bad_request',
    message: 'the request has more than one Host header',
  },
  missingHost: {
    status: 400,
    error: 'bad_request',
    message: 'an HTTP/1.1 request needs a Host header',
  },
  transferEncodingInHttp10: {
    status: 400,
    error: 'bad_request',
    message: 'Transfer-Encoding is not allowed in an HTTP/1.0 request',
  },
  chunkedNotFinal: {
    status: 400,
    error: 'bad_request',
    message: 'the final transfer coding of a request must be chunked',
  },
  invalidChunkedBody: {
    status: 400,
    error: 'bad_request',
    message:
      'the chunked request body is invalid: each chunk needs a hex size line and data that end with CRLF',
  },
  requestTrailersTooLarge: {
    status: 431,
    error: 'request_header_fields_too_large',
    message: 'the trailer section of the request body is larger than the proxy accepts',
  },
  unsupportedTransferCoding: {
    status: 501,
    error: 'not_implemented',
    message: 'the only transfer coding the proxy accepts is chunked',
  },
  unparsableRequest: {
    status: 400,
    error: 'bad_request',
    message: 'the request is not valid HTTP/1.1 and cannot be parsed',
  },
  requestTimeout: {
    status: 408,
    error: 'request_timeout',
    message: 'the request was not received within the time the proxy allows',
  },
  chunkExtensionsTooLarge: {
    status: 413,
    error: 'payload_too_large',
    message: 'the chunk extensions of the request body are larger than the proxy accepts',
  },
  requestHeadTooLarge: {
    status: 431,
    error: 'request_header_fields_too_large',
    message: 'the request head is larger or has more header fields than the proxy accepts',
  },
  tooManyHeaders: {
    status: 431,
    error: 'request_header_fields_too_large',
    message: 'the request has more header fields than the proxy accepts',
  },
  payloadTooLarge: {
    status: 413,
    error: 'payload_too_large',
    message: 'the request body is larger than the route accepts',
  },
  requestNotForwardable: {
    status: 400,
    error: 'bad_request',
    message: 'the request cannot be forwarded to the upstream',
  },
  upstreamUnavailable: {
    status: 502,
    error: 'upstream_unavailable',
    message: 'the upstream has no target with a weight above 0',
  },
  upstreamClosed: {
    status: 502,
    error: 'upstream_unavailable',
    message: 'the connection pool of the upstream target closed before the request was sent',
  },
  upstreamNotConfigured: {
    status: 502,
    error: 'upstream_unavailable',
    message: "the route's upstream is not in the routing configuration",
  },
  upstreamUnreachable: {
    status: 502,
    error: 'upstream_unreachable',
    message: 'the upstream refused or reset the connection before responding',
  },
  upstreamNameNotResolved: {
    status: 502,
    error: 'upstream_unreachable',
    message: "the upstream target's host name could not be resolved",
  },
  upstreamTimeout: {
    status: 504,
    error: 'upstream_timeout',
    message: 'the upstream did not respond in time',
  },
  upstreamFailed: { status: 502, error: 'upstream_error', message: 'the upstream request failed' },
  upstreamInvalidResponse: {
    status: 502,
    error: 'upstream_error',
    message:
      'the upstream sent a response the proxy cannot read, such as a 100 Continue or 101 it did not request',
  },
  upstreamUnparsableResponse: {
    status: 502,
    error: 'upstream_error',
    message: 'the upstream sent a response that is not valid HTTP/1.1',
  },
  upstreamHeadersTooLarge: {
    status: 502,
    error: 'upstream_error',
    message: 'the upstream response headers are larger than the proxy accepts',
  },
  loopDetected: {
    status: 508,
    error: 'loop_detected',
    message:
      "a target of the route's upstream points at the proxy itself, so the request would come back to it; point the target at the upstream server",
  },
  internal: {
    status: 500,
    error: 'internal_error',
    message: 'the proxy failed to handle the request',
  },
} as const satisfies Record<string, ProxyError>;

/**
 * Maps an error from undici, raised before the response headers arrived, to the response the
 * client gets. Branches on the error code, and for UND_ERR_SOCKET on the message.
 */
export function classifyUpstreamError(err: unknown): ProxyError {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'HPE_HEADER_OVERFLOW') {
    return PROXY_ERRORS.upstreamHeadersTooLarge;
  }
  if (isHttpParserError(err)) {
    return PROXY_ERRORS.upstreamUnparsableResponse;
  }
  switch (code) {
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return PROXY_ERRORS.upstreamUnreachable;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return PROXY_ERRORS.upstreamNameNotResolved;
    case 'UND_ERR_SOCKET':
      return isUnexpectedResponse(err)
        ? PROXY_ERRORS.upstreamInvalidResponse
        : PROXY_ERRORS.upstreamUnreachable;
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return PROXY_ERRORS.upstreamTimeout;
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_DESTROYED':
      return PROXY_ERRORS.upstreamClosed;
    case REQUEST_LOOP_CODE:
      return PROXY_ERRORS.loopDetected;
    case UPSTREAM_UPGRADE_CODE:
      return PROXY_ERRORS.upstreamInvalidResponse;
    case 'UND_ERR_HEADERS_OVERFLOW':
      return PROXY_ERRORS.upstreamHeadersTooLarge;
    case 'UND_ERR_INVALID_ARG':
    case 'UND_ERR_NOT_SUPPORTED':
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      return PROXY_ERRORS.requestNotForwardable;
    default:
      return PROXY_ERRORS.upstreamFailed;
  }
}

/**
 * Tells whether `err` is a parser failure on the upstream response: undici's `HTTPParserError`
 * or a `node:http` error whose code starts with `HPE_`.
 */
export function isHttpParserError(err: unknown): boolean {
  if (err instanceof errors.HTTPParserError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('HPE_');
}

/**
 * Returns the fields that name an upstream failure in a log line: its code and message, or the
 * whole error with its stack trace when it has no code. A parser failure gets the code
 * {@link UPSTREAM_INVALID_HTTP_CODE} and the parser's code, when known, as `parserCode`.
 */
// NOTE: undici 7.30.3 builds `HTTPParserError` with `constants.ERROR[ret]`, which looks a number
// up in a map keyed by name. So its `code` is always undefined, and only its message names the
// cause.
export function upstreamErrorLogFields(err: Error): Record<string, unknown> {
  const code = (err as { code?: unknown }).code;
  if (isHttpParserError(err)) {
    return {
      code: UPSTREAM_INVALID_HTTP_CODE,
      ...(typeof code === 'string' ? { parserCode: code } : {}),
      error: err.message,
    };
  }
  // An error with a code (ECONNREFUSED, a timeout) is a known network outcome, whose stack trace
  // would only repeat the proxy's own frames on every line.
  return code === undefined ? { code, err } : { code, error: err.message };
}

/**
 * Tells whether undici closed the connection because of a response it does not handle, not a
 * broken connection. Such a response is a 100 Continue to a request sent without `Expect`, a
 * 101 to a request without `Upgrade`, or any response while no request was running.
 */
// NOTE: RFC 9110 section 15.2 requires clients to read 1xx responses they did not expect, but
// undici 7.30.3, the newest 7.x, fails the request on an unrequested 100 and reports it only in
// this message. The exchange sends such a request again through `node:http` when it has no body
// and an idempotent method; a request with a body gets 502.
function isUnexpectedResponse(err: unknown): boolean {
  const message = (err as { message?: unknown } | null)?.message;
  return message === 'bad response' || message === 'bad upgrade';
}

/**
 * Sends `error` as a small JSON body, naming `route` when it is known and listing `allow` in
 * an `Allow` header; `close` adds `Connection: close` so Node.js closes the connection after
 * the response. When the response headers were already sent, it destroys the socket instead,
 * so the client sees a truncated response and never a clean short one. Returns the body bytes
 * written, which is 0 for a destroyed response and for a response to HEAD, for the access log.
 */
export function sendErrorResponse(
  res: ServerResponse,
  error: ProxyError,
  route?: string,
  message: string = error.message,
  allow?: readonly string[],
  close = false,
): number {
  if (res.headersSent) {
    destroyResponse(res);
    return 0;
  }
  if (res.destroyed) {
    return 0;
  }

  const body = errorBody(error, route, message);
  const length = Buffer.byteLength(body);
  const headers = ['content-type', 'application/json', 'content-length', String(length)];
  if (allow !== undefined) {
    headers.push('allow', allow.join(', '));
  }
  if (close) {
    headers.push('connection', 'close');
  }
  // The reason phrase is explicit because a failed `writeHead` of the upstream response (an
  // invalid reason phrase or header value) leaves its reason in `res.statusMessage`, which a
  // call without one would reuse, or throw on again.
  res.writeHead(error.status, STATUS_CODES[error.status] ?? '', headers);
  res.end(body);
  // Node.js sends no body in a response to HEAD, whatever `end` gets.
  return res.req?.method === 'HEAD' ? 0 : length;
}

/**
 * Destroys `res`, so that the client sees it cut. A response still queued behind earlier
 * pipelined responses has no socket yet, and its connection is destroyed when its turn comes.
 * Node.js 20 and 22 do that themselves; Node.js 24 writes what the destroyed response buffered
 * and leaves the connection open, which a client would read as a response still arriving.
 */
export function destroyResponse(res: ServerResponse): void {
  if (res.socket === null) res.once('socket', destroySocket);
  res.destroy();
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}

/**
 * Writes `error` as a complete HTTP/1.1 response with a JSON body straight to a client socket
 * that Node.js handed over (CONNECT and upgrade requests), then ends the socket. The head has
 * the headers of `sendErrorResponse` with `close`, `Allow` included, and the `Date` that
 * Node.js adds to the others. Returns the body bytes written; 0 when the socket was no longer
 * writable and was destroyed instead.
 */
export function writeRawErrorResponse(
  socket: Socket,
  error: ProxyError,
  route?: string,
  message: string = error.message,
  allow?: readonly string[],
): number {
  if (!socket.writable) {
    socket.destroy();
    return 0;
  }

  const { text, length } = rawErrorText(error, route, message, allow);
  socket.end(text);
  return length;
}

/**
 * Returns `error` as the text of a complete HTTP/1.1 response with a JSON body, `Date`,
 * `Connection: close` and `Allow` when given, with the byte length of its body.
 */
export function rawErrorText(
  error: ProxyError,
  route?: string,
  message: string = error.message,
  allow?: readonly string[],
): { text: string; length: number } {
  const body = errorBody(error, route, message);
  const length = Buffer.byteLength(body);
  const allowLine = allow === undefined ? '' : `allow: ${allow.join(', ')}\r\n`;
  const text =
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ''}\r\n` +
    'content-type: application/json\r\n' +
    `content-length: ${length}\r\n` +
    allowLine +
    `date: ${new Date().toUTCString()}\r\n` +
    'connection: close\r\n\r\n' +
    body;
  return { text, length };
}

function errorBody(error: ProxyError, route: string | undefined, message: string): string {
  return JSON.stringify(
    route === undefined ? { error: error.error, message } : { error: error.error, message, route },
  );
}
