import type { IncomingMessage } from 'node:http';
import { isIPv6, type Socket } from 'node:net';
import type { RoutingTable } from '../table.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { REQUEST_LOOP_CODE } from '../upstreams/own-connections.js';
import { PROXY_ERRORS, type ProxyError } from './error-response.js';
import type { ForwardedRequest, ProxyContext } from './exchange.js';
import { readMaxForwards, routeMethods } from './max-forwards.js';
import { describeDoubleSlash } from './route-actions.js';
import {
  buildUpstreamRequestHeaders,
  isContinueExpectation,
  scanRequestHead,
  type ClientInfo,
  type RequestHead,
} from './headers.js';

const SLASH = 0x2f;
const COLON = 0x3a;
const PERCENT = 0x25;
const QUESTION_MARK = 0x3f;
const NUMBER_SIGN = 0x23;
const OPEN_BRACKET = 0x5b;
const kClient = Symbol('loom.clientInfo');

/** Maximum length of a client's header value written to a log line. */
const MAX_LOGGED_VALUE_LENGTH = 128;
/** Message of the 400 for a `#` in the query of a request target. */
const FRAGMENT = 'fragment ("#") in request target';

interface ProxySocket extends Socket {
  [kClient]?: ClientInfo;
}

/**
 * A request the proxy can forward, the error response it gets instead, or the proxy's own 200
 * to an OPTIONS request whose Max-Forwards is 0 (`ok: 'options'`, with the `Allow` methods, or
 * none for `OPTIONS *`).
 */
export type PreparedRequest =
  | { ok: true; request: ForwardedRequest; target: UpstreamTarget; head: RequestHead }
  | {
      ok: false;
      error: ProxyError;
      route?: string;
      message?: string;
      allow?: readonly string[];
      close: boolean;
    }
  | { ok: 'options'; allow: readonly string[] | undefined };

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
  const raw = req.rawHeaders;
  if (raw.length > 2 * context.maxHeaderCount) {
    return fail(PROXY_ERRORS.tooManyHeaders, true);
  }
  const head = scanRequestHead(raw);
  const framingError = checkFraming(req, head);
  if (framingError !== undefined) {
    return fail(framingError, true);
  }
  const hasBody =
    head.transferEncoding !== undefined ||
    (head.contentLength !== undefined && head.contentLength !== '0');
  if (head.expect !== undefined && !isContinueExpectation(head.expect)) {
    context.logger.debug(
      { expect: head.expect.slice(0, MAX_LOGGED_VALUE_LENGTH), closing: hasBody },
      'request rejected: unsupported expectation',
    );
    // The body is never read, so the connection closes unless there is none.
    return fail(PROXY_ERRORS.expectationFailed, hasBody);
  }
  const method = req.method ?? 'GET';
  const maxForwards = readMaxForwards(method, head.maxForwards, head.maxForwardsCount);
  if (maxForwards.kind === 'invalid') {
    return {
      ok: false,
      error: PROXY_ERRORS.badRequest,
      message: maxForwards.message,
      close: false,
    };
  }
  let url = req.url ?? '';
  if (url.charCodeAt(0) !== SLASH) {
    const target = parseRequestTarget(method, url);
    if (target === undefined) {
      return fail(PROXY_ERRORS.invalidRequestTarget);
    }
    if (target === ASTERISK_FORM) {
      // `OPTIONS *` concerns the server itself, which is the proxy at the last hop.
      if (maxForwards.kind === 'last-hop') {
        context.logger.debug({ method, path: url }, 'request not forwarded: Max-Forwards is 0');
        return { ok: 'options', allow: undefined };
      }
      return fail(PROXY_ERRORS.routeNotFound);
    }
    // RFC 9112 section 3.2.2: the authority of an absolute-form target replaces the Host
    // header, for routing and for the request sent upstream.
    head.host = target.authority;
    url = target.pathAndQuery;
  }

  const queryStart = url.indexOf('?');
  const fragment = describeQueryFragment(url, queryStart);
  if (fragment !== undefined) {
    return { ok: false, error: PROXY_ERRORS.badRequest, message: fragment, close: false };
  }
  const path = queryStart === -1 ? url : url.slice(0, queryStart);
  if (maxForwards.kind === 'last-hop') {
    context.logger.debug({ method, path }, 'request not forwarded: Max-Forwards is 0');
    return respondAtLastHop(table, method, head.host, path);
  }
  head.forwardedMaxForwards = maxForwards.value;
  const match = table.router.find(method, head.host, path);
  switch (match.kind) {
    case 'not-found':
      if (rejectsEscapedSlash(context, path)) return fail(PROXY_ERRORS.escapedSlash);
      return fail(PROXY_ERRORS.routeNotFound);
    case 'method-not-allowed':
      if (rejectsEscapedSlash(context, path)) return fail(PROXY_ERRORS.escapedSlash);
      return { ok: false, error: PROXY_ERRORS.methodNotAllowed, allow: match.allow, close: false };
    case 'bad-request':
      return { ok: false, error: PROXY_ERRORS.badRequest, message: match.reason, close: false };
  }

  const binding = match.value;
  const route = binding.route.name;
  const actions = binding.actions;
  // The router returns the normalized path when it differs from the request's.
  const normalized = match.path ?? path;
  // Normalizing upper-cases "%2f" and never adds a "%", so one spelling is enough.
  if (context.escapedSlashes === 'reject' && normalized.indexOf('%2F') !== -1) {
    return { ok: false, error: PROXY_ERRORS.escapedSlash, route, close: false };
  }
  const doubleSlash = describeDoubleSlash(actions, normalized);
  if (doubleSlash !== undefined) {
    return {
      ok: false,
      error: PROXY_ERRORS.badRequest,
      route,
      message: doubleSlash,
      close: false,
    };
  }
  if (head.loomVias >= MAX_LOOM_VIAS) {
    reportViaLoop(context, route, head.loomVias);
    return {
      ok: false,
      error: PROXY_ERRORS.loopDetected,
      route,
      message: VIA_LOOP_MESSAGE,
      close: false,
    };
  }
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
  if (balancer === undefined) {
    reportMissingUpstream(context, table, binding.route.upstream, route);
    return { ok: false, error: PROXY_ERRORS.upstreamNotConfigured, route, close: false };
  }
  const target = balancer.pick(req);
  if (target === undefined) {
    return { ok: false, error: PROXY_ERRORS.upstreamUnavailable, route, close: false };
  }

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
    headers: buildUpstreamRequestHeaders(raw, head, client, actions, req.httpVersionMinor),
    body,
    startTime,
  };
  return { ok: true, request, target, head };
}

/**
 * Number of Loom entries in a request's `Via` at which the request counts as looping. Each Loom
 * proxy appends one, so a request that passed Loom proxies this many times came back through a
 * route whose target leads to the proxies again, such as a load balancer in front of them.
 * A deployment of more tiers of Loom proxies than this is not expected.
 */
export const MAX_LOOM_VIAS = 8;

const VIA_LOOP_MESSAGE =
  `the request passed through Loom proxies ${MAX_LOOM_VIAS} times (Via), so a target of the ` +
  "route's upstream leads back to the proxies, such as through a load balancer in front of " +
  'them; point the target at the upstream server';

function reportViaLoop(context: ProxyContext, route: string, loomVias: number): void {
  const suppressed = context.requestLoopLog.take();
  if (suppressed === undefined) return;
  context.logger.warn(
    { route, code: REQUEST_LOOP_CODE, loomVias, suppressed },
    'request loop detected',
  );
}

/**
 * Returns the message of the 400 for a "#" in the query of an origin-form target, whose query
 * starts at `queryStart` (-1 for none), or undefined when there is none. The router rejects a
 * "#" in the path. One in the query is just as invalid (RFC 9112 section 3.2), and an upstream
 * would cut the query there, so no fragment is forwarded.
 */
export function describeQueryFragment(url: string, queryStart: number): string | undefined {
  return queryStart !== -1 && url.indexOf('#', queryStart + 1) !== -1 ? FRAGMENT : undefined;
}

/** Matches an escaped slash in a raw path whose percent-encoding the router accepted. */
const ESCAPED_SLASH = /%2F/i;

/**
 * Returns whether `--escaped-slashes reject` applies to a raw path that matched no route. In a
 * path with valid percent-encoding every "%" starts an escape, so "%252F" never matches.
 */
function rejectsEscapedSlash(context: ProxyContext, path: string): boolean {
  return context.escapedSlashes === 'reject' && ESCAPED_SLASH.test(path);
}

function fail(error: ProxyError, close = false): PreparedRequest {
  return { ok: false, error, close };
}

/**
 * Builds the proxy's own response to an OPTIONS or TRACE request whose Max-Forwards is 0, as
 * its final recipient. OPTIONS gets 200 with `Allow` listing the methods of the routes that
 * match the path. TRACE gets 405, with the same list without TRACE, because the RFC 9110
 * response to TRACE echoes the request, and an echo of Cookie or Authorization lets a script
 * read credentials it cannot read otherwise (cross-site tracing). A path that no route matches
 * gets 404, as without the header.
 */
function respondAtLastHop(
  table: RoutingTable,
  method: string,
  host: string | undefined,
  path: string,
): PreparedRequest {
  const methods = routeMethods(table.router, host, path);
  switch (methods.kind) {
    case 'not-found':
      return fail(PROXY_ERRORS.routeNotFound);
    case 'bad-request':
      return { ok: false, error: PROXY_ERRORS.badRequest, message: methods.reason, close: false };
  }
  if (method === 'OPTIONS') {
    return { ok: 'options', allow: methods.allow };
  }
  const allow = methods.allow.filter((allowed) => allowed !== 'TRACE');
  return { ok: false, error: PROXY_ERRORS.traceAtLastHop, allow, close: false };
}

/**
 * Checks the version and the framing headers Node.js lets through (RFC 9112 sections 2.3, 3.2
 * and 6.1): HTTP/1.0 or HTTP/1.1, one valid Host at most, no Transfer-Encoding in HTTP/1.0, and
 * chunked as the only transfer coding. Another version gets 505, and a coding the proxy does
 * not implement 501. The others get 400.
 */
function checkFraming(req: IncomingMessage, head: RequestHead): ProxyError | undefined {
  // Node.js parses "HTTP/2.0" and HTTP/0.9 request lines, with headers, as requests of those
  // versions. They would go upstream as HTTP/1.1, without the Host check of HTTP/1.1.
  if (req.httpVersionMajor !== 1) {
    return PROXY_ERRORS.httpVersionNotSupported;
  }
  if (head.hostCount > 1) {
    return PROXY_ERRORS.multipleHosts;
  }
  if (head.hostCount === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor === 1) {
    return PROXY_ERRORS.missingHost;
  }
  if (head.host !== undefined && !isValidHost(head.host)) {
    return PROXY_ERRORS.invalidHost;
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

/** The result of `parseRequestTarget` for `OPTIONS *`. */
const ASTERISK_FORM = Symbol('loom.asteriskForm');

/** The parts of an absolute-form request target that the proxy uses. */
interface AbsoluteTarget {
  /** Host and optional port, which replace the Host header. */
  authority: string;
  /** Path, `/` when the target has none, and the query as received. */
  pathAndQuery: string;
}

/**
 * Parses a request target that is not in origin form (RFC 9112 section 3.2). Returns the parts
 * of an absolute `http` or `https` URL, `ASTERISK_FORM` for `OPTIONS *`, and undefined for
 * anything else: other schemes, an empty or invalid authority, userinfo, and `*` with any
 * method but OPTIONS.
 */
function parseRequestTarget(
  method: string,
  url: string,
): AbsoluteTarget | typeof ASTERISK_FORM | undefined {
  if (url === '*') {
    return method === 'OPTIONS' ? ASTERISK_FORM : undefined;
  }
  const scheme = url.slice(0, 8).toLowerCase();
  let start: number;
  if (scheme.startsWith('http://')) {
    start = 7;
  } else if (scheme === 'https://') {
    start = 8;
  } else {
    return undefined;
  }

  let end = start;
  while (end < url.length) {
    const code = url.charCodeAt(end);
    if (code === SLASH || code === QUESTION_MARK || code === NUMBER_SIGN) break;
    end++;
  }
  const authority = url.slice(start, end);
  // An http URI with an empty host is invalid (RFC 9110 section 4.2.1), and `isValidHost`
  // rejects the "@" of userinfo.
  if (authority === '' || authority.charCodeAt(0) === COLON || !isValidHost(authority)) {
    return undefined;
  }
  const rest = url.slice(end);
  return { authority, pathAndQuery: rest.charCodeAt(0) === SLASH ? rest : '/' + rest };
}

/** 1 for the characters of a reg-name besides percent-encoding: unreserved and sub-delims. */
const REG_NAME_CHARS = new Uint8Array(128);
for (const char of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=") {
  REG_NAME_CHARS[char.charCodeAt(0)] = 1;
}

/**
 * Tells whether a Host value is `uri-host [":" port]` (RFC 9112 section 3.2, RFC 3986 section
 * 3.2.2): a reg-name (which includes IPv4 addresses) or a bracketed IPv6 or IPvFuture literal,
 * then an optional port of at most 65535. An empty value and an empty port are valid, as the
 * grammar allows. One pass over the characters, because it runs on every request.
 */
export function isValidHost(host: string): boolean {
  if (host.charCodeAt(0) === OPEN_BRACKET) {
    const close = host.indexOf(']');
    if (close === -1 || !isValidIpLiteral(host.slice(1, close))) return false;
    if (close === host.length - 1) return true;
    return host.charCodeAt(close + 1) === COLON && isValidPort(host, close + 2);
  }
  for (let i = 0; i < host.length; i++) {
    const code = host.charCodeAt(i);
    if (code === COLON) return isValidPort(host, i + 1);
    if (code === PERCENT) {
      if (!isHexDigit(host.charCodeAt(i + 1)) || !isHexDigit(host.charCodeAt(i + 2))) return false;
      i += 2;
    } else if (code >= 128 || REG_NAME_CHARS[code] === 0) {
      return false;
    }
  }
  return true;
}

/**
 * Returns why `isValidHost` rejects a Host value, or undefined when it accepts it. The proxy
 * itself never calls it, because `loomctl explain` is the only reader of the reason.
 */
export function describeInvalidHost(host: string): string | undefined {
  if (isValidHost(host)) return undefined;

  let name = host;
  let port: string | undefined;
  if (host.charCodeAt(0) === OPEN_BRACKET) {
    const close = host.indexOf(']');
    if (close === -1) return 'the IP literal has no closing "]"';
    name = host.slice(0, close + 1);
    const rest = host.slice(close + 1);
    if (rest !== '' && rest.charCodeAt(0) !== COLON) {
      return `only ":" and a port may follow "]", not ${JSON.stringify(rest)}`;
    }
    if (!isValidIpLiteral(host.slice(1, close))) {
      return `${name} is neither an IPv6 address without a zone nor an IPvFuture literal`;
    }
    port = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = host.indexOf(':');
    if (colon !== -1) {
      name = host.slice(0, colon);
      port = host.slice(colon + 1);
    }
    const escape = /%(?![0-9A-Fa-f]{2})/.exec(name);
    if (escape !== null) return `"%" at offset ${escape.index} is not followed by two hex digits`;
    const invalid = [...name].find((char) => char.length > 1 || !isRegNameChar(char));
    if (invalid !== undefined) {
      const hint =
        invalid.charCodeAt(0) >= 128 ? '; write the name in its ASCII (punycode) form' : '';
      return `the character ${JSON.stringify(invalid)} is not allowed in a host name${hint}`;
    }
  }
  if (port !== undefined && !isValidPort(port, 0)) {
    if (/^\d+$/.test(port)) return `the port ${port} is above 65535`;
    const colons = port.includes(':') ? '; a Host value has at most one ":" outside brackets' : '';
    return `the port ${JSON.stringify(port)} is not a decimal number${colons}`;
  }
  return 'it is not a host name or IP address with an optional port';
}

function isRegNameChar(char: string): boolean {
  const code = char.charCodeAt(0);
  return code === PERCENT || (code < 128 && REG_NAME_CHARS[code] === 1);
}

/** Tells whether the text between brackets is an IPv6 address without zone or an IPvFuture. */
function isValidIpLiteral(literal: string): boolean {
  if (literal.charCodeAt(0) === 0x76 || literal.charCodeAt(0) === 0x56) {
    return /^v[0-9a-f]+\.[\w\-.~!$&'()*+,;=:]+$/i.test(literal);
  }
  // Node.js accepts a zone (`fe80::1%eth0`), which a Host value cannot carry.
  return literal.indexOf('%') === -1 && isIPv6(literal);
}

/** Tells whether `host` from `start` on is a port: decimal digits with a value up to 65535. */
function isValidPort(host: string, start: number): boolean {
  let value = 0;
  for (let i = start; i < host.length; i++) {
    const digit = host.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return false;
    value = value * 10 + digit;
    if (value > 65535) return false;
  }
  return true;
}

function isHexDigit(code: number): boolean {
  return (
    (code >= 0x30 && code <= 0x39) ||
    (code >= 0x41 && code <= 0x46) ||
    (code >= 0x61 && code <= 0x66)
  );
}

/** Upstream names already logged as missing, per routing table, so each is logged once. */
const missingUpstreamsLogged = new WeakMap<RoutingTable, Set<string>>();

/** Logs, once per table and upstream, a route whose upstream the snapshot does not contain. */
function reportMissingUpstream(
  context: ProxyContext,
  table: RoutingTable,
  upstream: string,
  route: string,
): void {
  let logged = missingUpstreamsLogged.get(table);
  if (logged === undefined) {
    logged = new Set();
    missingUpstreamsLogged.set(table, logged);
  }
  if (logged.has(upstream)) {
    return;
  }

  logged.add(upstream);
  context.logger.error(
    { route, upstream, version: table.version },
    'route upstream missing from routing configuration',
  );
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
