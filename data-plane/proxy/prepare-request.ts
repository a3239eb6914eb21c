import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { normalizeRequestPath } from '../router/path.js';
import type { RoutingTable } from '../table.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { PROXY_ERRORS, type ProxyError } from './error-response.js';
import type { ForwardedRequest, ProxyContext } from './exchange.js';
import {
  buildUpstreamRequestHeaders,
  scanRequestHead,
  type ClientInfo,
  type RequestHead,
} from './headers.js';

const SLASH = 0x2f;
const kClient = Symbol('loom.clientInfo');

interface ProxySocket extends Socket {
  [kClient]?: ClientInfo;
}

/** A request the proxy can forward, or the error response it gets instead. */
export type PreparedRequest =
  | { ok: true; request: ForwardedRequest; target: UpstreamTarget; head: RequestHead }
  | {
      ok: false;
      error: ProxyError;
      route?: string;
      message?: string;
      allow?: readonly string[];
      close: boolean;
    };

/**
 * Routes a request and builds everything needed to forward it, or returns the error response it
 * gets instead. Never writes to the client.
 */
export function prepareRequest(
  context: ProxyContext,
  table: RoutingTable | undefined,
  req: IncomingMessage,
  startTime: number,
): PreparedRequest {
  if (table === undefined) {
    return fail(PROXY_ERRORS.noConfiguration);
  }
  // Absolute-form (`http://host/path`) and asterisk-form (`*`) targets are not routed.
  const url = req.url ?? '';
  if (url.charCodeAt(0) !== SLASH) {
    return fail(PROXY_ERRORS.originFormRequired);
  }
  const raw = req.rawHeaders;
  if (raw.length > 2 * context.maxHeaderCount) {
    return fail(PROXY_ERRORS.tooManyHeaders, true);
  }
  const head = scanRequestHead(raw);
  const framingError = checkFraming(req, head);
  if (framingError !== undefined) {
    return fail(framingError, true);
  }

  const queryStart = url.indexOf('?');
  const path = queryStart === -1 ? url : url.slice(0, queryStart);
  const method = req.method ?? 'GET';
  const match = table.router.find(method, head.host, path);
  switch (match.kind) {
    case 'not-found':
      return fail(PROXY_ERRORS.routeNotFound);
    case 'method-not-allowed':
      return { ok: false, error: PROXY_ERRORS.methodNotAllowed, allow: match.allow, close: false };
    case 'bad-request':
      return { ok: false, error: PROXY_ERRORS.badRequest, message: match.reason, close: false };
  }

  const binding = match.value;
  const route = binding.route.name;
  const actions = binding.actions;
  const hasBody =
    head.transferEncoding !== undefined ||
    (head.contentLength !== undefined && head.contentLength !== '0');
  const limit = actions.maxRequestBodyBytes ?? context.maxRequestBodyBytes;
  let body: ForwardedRequest['body'] = hasBody ? req : null;
  if (hasBody && limit > 0) {
    if (head.contentLength !== undefined && Number(head.contentLength) > limit) {
      return { ok: false, error: PROXY_ERRORS.payloadTooLarge, route, close: true };
    }
    if (head.transferEncoding !== undefined) {
      body = limitBody(req, limit);
    }
  }
  const balancer = binding.balancer;
  const target = balancer?.pick(req);
  if (balancer === undefined || target === undefined) {
    return { ok: false, error: PROXY_ERRORS.upstreamUnavailable, route, close: false };
  }

  // The router matched this path, so it normalises to a string.
  const normalized = normalizeRequestPath(path) as string;
  const query = queryStart === -1 ? '' : url.slice(queryStart);
  const client = clientInfo(context, req.socket as ProxySocket);
  const request: ForwardedRequest = {
    route,
    balancer,
    actions,
    method,
    path: normalized,
    pathAndQuery: normalized === path ? url : normalized + query,
    query,
    headers: buildUpstreamRequestHeaders(raw, head, client, actions),
    body,
    startTime,
  };
  return { ok: true, request, target, head };
}

function fail(error: ProxyError, close = false): PreparedRequest {
  return { ok: false, error, close };
}

/**
 * Checks the framing headers Node.js lets through (RFC 9112 sections 3.2 and 6.1): one Host at
 * most, no Transfer-Encoding in HTTP/1.0, and chunked as the only transfer coding. A coding the
 * proxy does not implement gets 501; the others get 400.
 */
function checkFraming(req: IncomingMessage, head: RequestHead): ProxyError | undefined {
  if (head.hostCount > 1) {
    return PROXY_ERRORS.multipleHosts;
  }
  if (head.hostCount === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor === 1) {
    return PROXY_ERRORS.missingHost;
  }
  const codings = head.transferEncoding;
  if (codings === undefined) {
    return undefined;
  }
  if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
    return PROXY_ERRORS.transferEncodingInHttp10;
  }
  if (/^\s*chunked\s*$/i.test(codings)) {
    return undefined;
  }
  return /(^|,)\s*chunked\s*$/i.test(codings)
    ? PROXY_ERRORS.unsupportedTransferCoding
    : PROXY_ERRORS.chunkedNotFinal;
}

/** Error code of the failure raised when a chunked body passes its route's limit. */
export const BODY_TOO_LARGE_CODE = 'LOOM_BODY_TOO_LARGE';

/**
 * Streams a chunked request body and fails once it passes `limit` bytes. The body's own
 * iterator keeps the stream open when the consumer stops early, because destroying the
 * request would destroy the client connection before the 413 reaches it.
 */
async function* limitBody(req: IncomingMessage, limit: number): AsyncGenerator<Buffer> {
  let received = 0;
  for await (const chunk of req.iterator({ destroyOnReturn: false })) {
    received += (chunk as Buffer).length;
    if (received > limit) {
      throw Object.assign(new Error(`request body larger than ${limit} bytes`), {
        code: BODY_TOO_LARGE_CODE,
      });
    }
    yield chunk as Buffer;
  }
}

/** Returns the facts about the client connection, computed once per connection. */
function clientInfo(context: ProxyContext, socket: ProxySocket): ClientInfo {
  let info = socket[kClient];
  if (info === undefined) {
    info = {
      address: socket.remoteAddress,
      trusted: context.trustedProxies.includes(socket.remoteAddress),
      protocol: context.protocol,
      port: String(socket.localPort ?? ''),
    };
    socket[kClient] = info;
  }
  return info;
}
