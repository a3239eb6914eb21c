import { HeaderNameCache, type HeaderName } from './header-names.js';
import type { RouteActions } from './route-actions.js';

/** What the first pass over the client's raw headers found. */
export interface RequestHead {
  /**
   * Host the request is for: the first Host value, replaced by the authority of an absolute-form
   * request target; undefined when absent.
   */
  host: string | undefined;
  /** Number of Host lines; more than one is a bad request. */
  hostCount: number;
  /** Transfer-Encoding values joined with commas; undefined when absent. */
  transferEncoding: string | undefined;
  /** Content-Length value; undefined when absent. Node.js already rejected invalid ones. */
  contentLength: string | undefined;
  /** Lower-case header names listed in Connection, which are dropped too; undefined for none. */
  connectionTokens: string[] | undefined;
  /** True when the client's TE header lists `trailers`. */
  acceptsTrailers: boolean;
  /** Expect values joined with commas; undefined when absent. */
  expect: string | undefined;
  /** First Max-Forwards value; undefined when absent. */
  maxForwards: string | undefined;
  /** Number of Max-Forwards lines. */
  maxForwardsCount: number;
  /**
   * Value sent upstream in place of the client's Max-Forwards: the decremented value of an
   * OPTIONS or TRACE request. Undefined forwards the client's lines unchanged.
   */
  forwardedMaxForwards: string | undefined;
  /** Number of `Via` entries that a Loom proxy added (`1.1 loom`, `1.0 loom`). */
  loomVias: number;
}

/**
 * Headers of HTTP/1.1 that describe one connection, not the message, plus the legacy
 * Proxy-Connection. The proxy never forwards them; Trailer is forwarded on responses only
 * when the trailers themselves are (see `buildClientResponseHeaders`).
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/** Scans the client's raw headers for the values that routing and framing checks need. */
export function scanRequestHead(raw: readonly string[]): RequestHead {
  const head: RequestHead = {
    host: undefined,
    hostCount: 0,
    transferEncoding: undefined,
    contentLength: undefined,
    connectionTokens: undefined,
    acceptsTrailers: false,
    expect: undefined,
    maxForwards: undefined,
    maxForwardsCount: 0,
    forwardedMaxForwards: undefined,
    loomVias: 0,
  };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    // Only a few lengths can name a header of interest, so most names are never lower-cased.
    switch (name.length) {
      case 2:
        if (name.toLowerCase() === 'te') {
          head.acceptsTrailers ||= /(^|,)\s*trailers\s*(;|,|$)/i.test(raw[i + 1]);
        }
        break;
      case 3:
        if (name.toLowerCase() === 'via') head.loomVias += countLoomVias(raw[i + 1]);
        break;
      case 4:
        if (name.toLowerCase() === 'host') {
          head.host ??= raw[i + 1];
          head.hostCount++;
        }
        break;
      case 6:
        // Accept, Cookie and Origin have the same length, so the first letter decides.
        if ((name.charCodeAt(0) | 0x20) === 0x65 && name.toLowerCase() === 'expect') {
          const value = raw[i + 1];
          head.expect = head.expect === undefined ? value : `${head.expect}, ${value}`;
        }
        break;
      case 10:
        if (name.toLowerCase() === 'connection') {
          head.connectionTokens = splitConnectionTokens(raw[i + 1], head.connectionTokens);
        }
        break;
      case 12:
        // Content-Type has the same length and is far more common, so the first letter decides.
        if ((name.charCodeAt(0) | 0x20) === 0x6d && name.toLowerCase() === 'max-forwards') {
          head.maxForwards ??= raw[i + 1];
          head.maxForwardsCount++;
        }
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          head.contentLength = raw[i + 1];
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          const value = raw[i + 1];
          head.transferEncoding =
            head.transferEncoding === undefined ? value : `${head.transferEncoding}, ${value}`;
        }
        break;
    }
  }
  return head;
}

/** Matches one `Via` entry that a Loom proxy added, between commas. */
const LOOM_VIA = /(?:^|,)[ \t]*1\.[01][ \t]+loom[ \t]*(?=,|$)/g;

/** Returns the number of Loom entries in one `Via` header value. */
function countLoomVias(value: string): number {
  // A value without "loom" has no Loom entry, so the regex runs only where one may be.
  if (value.indexOf('loom') === -1) return 0;
  let count = 0;
  LOOM_VIA.lastIndex = 0;
  while (LOOM_VIA.exec(value) !== null) count++;
  return count;
}

/**
 * Returns the Loom entries of a `Via` value as one value, such as `1.1 loom, 1.0 loom`, or
 * undefined when it has none.
 */
function loomViaEntries(value: string | undefined): string | undefined {
  if (value === undefined || value.indexOf('loom') === -1) return undefined;
  let entries: string | undefined;
  LOOM_VIA.lastIndex = 0;
  for (let match = LOOM_VIA.exec(value); match !== null; match = LOOM_VIA.exec(value)) {
    // The match starts at the comma before the entry, if any, and may have spaces around it.
    const entry = match[0].replace(/^,?[ \t]*/, '').trimEnd();
    entries = entries === undefined ? entry : `${entries}, ${entry}`;
  }
  return entries;
}

/** Connection facts the request header builder needs about the client. */
export interface ClientInfo {
  /** Remote address of the client socket; undefined when the socket already closed. */
  address: string | undefined;
  /** True when the client is a trusted proxy whose X-Forwarded-* headers are kept. */
  trusted: boolean;
  /** Scheme of the listener, `http` or `https`. */
  protocol: string;
  /** Port of the listener, as text. */
  port: string;
}

/** `Via` entries of the proxy for HTTP/1.1 and HTTP/1.0 requests (RFC 9110 section 7.6.3). */
const VIA_HTTP_11 = '1.1 loom';
const VIA_HTTP_10 = '1.0 loom';

/**
 * Builds the upstream request headers from the client's `rawHeaders` (a flat list of names and
 * values) and returns a new flat list.
 *
 * - Hop-by-hop headers and every header named in `Connection` are dropped; `TE: trailers` is
 *   sent when the client accepts trailers, because the proxy forwards them.
 * - `Expect` is dropped: the 100-continue exchange is handled by the proxy (see
 *   `ContinueExchange`), and undici rejects the header.
 * - `Max-Forwards` is sent as `head.forwardedMaxForwards` when that is set.
 * - `Host` comes first, set to `actions.hostRewrite` or else to `head.host`, so a `Connection`
 *   token cannot remove it. Without either (HTTP/1.0 without Host), undici sends the target's
 *   host.
 * - From a trusted client, `X-Forwarded-For` gets the client address appended and the other
 *   `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are kept, with `X-Forwarded-Proto`,
 *   `-Host` and `-Port` added from the listener when missing. From any other client, every
 *   `X-Forwarded-*`, `Forwarded` and `X-Real-IP` header is dropped, and `X-Forwarded-For`, `-Proto`, `-Host` and `-Port`
 *   are set from the connection, the listener and the client's Host.
 * - `Via` gets `1.1 loom` (or `1.0 loom` for an HTTP/1.0 client) appended to the client's
 *   values, as RFC 9110 section 7.6.3 requires of a gateway. A route that removes or sets `Via`
 *   replaces the client's entries of other intermediaries only, so the entries of Loom proxies
 *   and the proxy's own entry are always sent, and loop detection counts every pass.
 * - The route's request header actions remove and set the other headers last.
 */
export function buildUpstreamRequestHeaders(
  raw: readonly string[],
  head: RequestHead,
  client: ClientInfo,
  actions: RouteActions,
  httpMinor = 1,
): string[] {
  const connectionTokens = head.connectionTokens;
  const drop = actions.requestDrop;
  const trusted = client.trusted;
  const headers: string[] = [];
  const host = actions.hostRewrite ?? head.host;
  if (host !== undefined) headers.push('host', host);
  let forwardedFor: string | undefined;
  let forwardedProto = false;
  let forwardedHost = false;
  let forwardedPort = false;
  let via: string | undefined;

  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    let value = raw[i + 1];
    const lower = name.toLowerCase();
    switch (lower) {
      case 'connection':
      case 'keep-alive':
      case 'proxy-connection':
      case 'te':
      case 'trailer':
      case 'transfer-encoding':
      case 'upgrade':
      case 'proxy-authenticate':
      case 'proxy-authorization':
      case 'expect':
      // Belongs to the h2c upgrade, which the proxy never forwards (see upgrade-protocols.ts).
      case 'http2-settings':
        continue;
      case 'host':
        continue;
      case 'x-forwarded-for':
        if (trusted) {
          forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
        }
        continue;
      case 'x-forwarded-proto':
        if (!trusted) continue;
        forwardedProto = true;
        break;
      case 'x-forwarded-host':
        if (!trusted) continue;
        forwardedHost = true;
        break;
      case 'x-forwarded-port':
        if (!trusted) continue;
        forwardedPort = true;
        break;
      case 'forwarded':
      case 'x-real-ip':
        if (!trusted) continue;
        break;
      case 'max-forwards':
        value = head.forwardedMaxForwards ?? value;
        break;
      case 'via':
        // Sent after the loop with the proxy's entry appended. A Connection token for Via
        // drops only the client's values.
        if (connectionTokens === undefined || !connectionTokens.includes(lower)) {
          via = via === undefined ? value : `${via}, ${value}`;
        }
        continue;
      default:
        if (!trusted && lower.startsWith('x-forwarded-')) continue;
    }
    if (connectionTokens !== undefined && connectionTokens.includes(lower)) continue;
    if (drop !== null && drop.has(lower)) continue;
    headers.push(name, value);
  }

  if (head.acceptsTrailers) headers.push('te', 'trailers');
  if (client.address !== undefined) {
    forwardedFor =
      forwardedFor === undefined ? client.address : `${forwardedFor}, ${client.address}`;
  }
  if (forwardedFor !== undefined) headers.push('x-forwarded-for', forwardedFor);
  if (!forwardedProto) headers.push('x-forwarded-proto', client.protocol);
  if (!forwardedHost && head.host !== undefined) headers.push('x-forwarded-host', head.host);
  if (!forwardedPort) headers.push('x-forwarded-port', client.port);
  if (drop !== null && drop.has('via')) {
    const loomVias = loomViaEntries(via);
    const routeVia = actions.requestVia;
    via =
      routeVia === undefined || loomVias === undefined
        ? (routeVia ?? loomVias)
        : `${routeVia}, ${loomVias}`;
  }
  const entry = httpMinor === 0 ? VIA_HTTP_10 : VIA_HTTP_11;
  headers.push('via', via === undefined ? entry : `${via}, ${entry}`);
  const set = actions.requestSet;
  for (let i = 0; i < set.length; i++) headers.push(set[i]);
  return headers;
}

/**
 * Builds the client response headers from undici's raw upstream headers (a flat list of
 * Buffers). Drops hop-by-hop headers, except `Trailer`, and every header named in
 * `Connection`, applies the route's response header actions, and returns a flat list of names
 * and values for `res.writeHead`. `head` receives the upstream Content-Length and the index of
 * the `Trailer` name in the result, so the caller can drop it when trailers cannot be sent, and
 * the upstream Transfer-Encoding, which `unrelayableResponse` checks.
 */
export function buildClientResponseHeaders(
  raw: readonly (Buffer | string)[],
  actions: RouteActions,
  head: ResponseHead,
): string[] {
  // Nearly every response has a `Connection` that names no header, so one pass is enough. A
  // value that names headers stops the first pass, and a second pass drops those headers.
  return (
    copyResponseHeaders(raw, actions, head, undefined) ??
    (copyResponseHeaders(raw, actions, head, collectConnectionTokens(raw)) as string[])
  );
}

/**
 * Copies the response headers as `buildClientResponseHeaders` describes. `connectionTokens`
 * undefined means that they are not known yet, and then a `Connection` value that names
 * headers returns null.
 */
function copyResponseHeaders(
  raw: readonly (Buffer | string)[],
  actions: RouteActions,
  head: ResponseHead,
  connectionTokens: string[] | undefined,
): string[] | null {
  head.contentLength = undefined;
  head.trailerIndex = -1;
  let transferEncoding: string | undefined;
  const drop = actions.responseDrop;
  const headers: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const field = raw[i];
    const rawValue = raw[i + 1];
    let name: string;
    let lower: string;
    let cached: HeaderName | undefined;
    let value: string | undefined;
    if (typeof field === 'string') {
      name = field;
      lower = field.toLowerCase();
    } else {
      cached = RESPONSE_NAMES.lookup(field);
      name = cached.text;
      lower = cached.lower;
    }
    switch (lower) {
      case 'connection':
        if (
          connectionTokens === undefined &&
          splitConnectionTokens(valueText(cached, rawValue), undefined) !== undefined
        ) {
          return null;
        }
        continue;
      case 'transfer-encoding':
        value = valueText(cached, rawValue);
        transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
        continue;
      case 'keep-alive':
      case 'proxy-connection':
      case 'te':
      case 'upgrade':
      case 'proxy-authenticate':
      case 'proxy-authorization':
        continue;
      case 'content-length':
        value = valueText(cached, rawValue);
        head.contentLength = value;
        break;
    }
    if (connectionTokens !== undefined && connectionTokens.includes(lower)) continue;
    if (drop !== null && drop.has(lower)) continue;
    if (lower === 'trailer') {
      if (head.trailerIndex !== -1) continue;
      head.trailerIndex = headers.length;
    }
    headers.push(name, value ?? valueText(cached, rawValue));
  }
  head.transferEncoding = transferEncoding;
  head.connectionTokens = connectionTokens?.length === 0 ? undefined : connectionTokens;
  const set = actions.responseSet;
  for (let i = 0; i < set.length; i++) headers.push(set[i]);
  return headers;
}

/** Returns a raw header value as text, through the value memory of its cached name. */
function valueText(cached: HeaderName | undefined, value: Buffer | string): string {
  return cached === undefined ? toText(value) : RESPONSE_NAMES.valueText(cached, value as Buffer);
}

/** Returns the lower-case names that the `Connection` fields of raw headers list. */
function collectConnectionTokens(raw: readonly (Buffer | string)[]): string[] {
  let tokens: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const field = raw[i];
    if (field.length === 10 && toText(field).toLowerCase() === 'connection') {
      tokens = splitConnectionTokens(toText(raw[i + 1]), tokens);
    }
  }
  return tokens ?? [];
}

/**
 * Removes every Content-Length field from a flat list of header names and values. A 204 goes
 * to the client without one: RFC 9110 section 8.6 forbids it there, and a client that believed
 * it would read the start of the next response as the body of the 204.
 */
export function removeContentLength(headers: string[]): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i].length === 14 && headers[i].toLowerCase() === 'content-length') {
      headers.splice(i, 2);
    }
  }
}

/** Names of upstream response headers, which repeat on every response. */
const RESPONSE_NAMES = new HeaderNameCache();

/** Facts about the upstream response head collected while its headers are copied. */
export interface ResponseHead {
  /** Content-Length of the upstream response; undefined when absent. */
  contentLength: string | undefined;
  /** Index of the `Trailer` name in the built list; -1 when absent. */
  trailerIndex: number;
  /** Lower-case names that the response's `Connection` header lists; undefined for none. */
  connectionTokens?: string[] | undefined;
  /** Transfer-Encoding values of the upstream response joined with commas; undefined when absent. */
  transferEncoding?: string | undefined;
}

/**
 * Returns an error when the proxy cannot relay an upstream response head, or undefined:
 * - a status above 599, which RFC 9110 section 15 leaves undefined; Node.js and undici pass
 *   any three digits on, and a client could not tell what such a response means.
 * - a transfer coding other than chunked, such as `gzip, chunked`. undici removes only the
 *   chunked framing, and the proxy drops the Transfer-Encoding header as hop-by-hop, so
 *   relaying the body would hand the client gzip-coded bytes without saying so.
 */
export function unrelayableResponse(status: number, head: ResponseHead): Error | undefined {
  if (status > 599) {
    return Object.assign(
      new Error(
        `the upstream response has status ${status}, outside the 100 to 599 that HTTP defines`,
      ),
      { code: 'LOOM_UPSTREAM_STATUS' },
    );
  }
  const codings = head.transferEncoding;
  if (codings === undefined || /^\s*chunked\s*$/i.test(codings)) {
    return undefined;
  }
  return Object.assign(
    new Error(
      `the upstream response has the unsupported transfer coding "${codings}", and the proxy decodes only chunked`,
    ),
    { code: 'LOOM_UPSTREAM_TRANSFER_CODING' },
  );
}

/**
 * Fields that never reach the client as trailers: the hop-by-hop ones, and those that RFC 9110
 * section 6.5.1 keeps out of trailers because a recipient must see them before the content.
 * These cover framing, routing, authentication, request modifiers and response controls
 * (Set-Cookie included). Content format fields are matched by their `content-` prefix.
 */
const TRAILER_DENYLIST = new Set([
  ...HOP_BY_HOP,
  'host',
  'authorization',
  'www-authenticate',
  'cookie',
  'set-cookie',
  'cache-control',
  'expect',
  'max-forwards',
  'pragma',
  'range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'if-range',
  'age',
  'date',
  'expires',
  'location',
  'retry-after',
  'vary',
  'warning',
]);

/**
 * Builds the client trailers from the upstream's raw trailers as `[name, value]` pairs for
 * `res.addTrailers`. Drops the fields in `TRAILER_DENYLIST`, every `Content-*` field, the
 * fields named in `connectionTokens` (from the response head) or in a `Connection` trailer,
 * and the route's removed response headers.
 */
export function buildClientTrailers(
  raw: readonly (Buffer | string)[],
  actions: RouteActions,
  connectionTokens: readonly string[] | undefined,
): [string, string][] {
  let trailerTokens: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (toText(raw[i]).toLowerCase() === 'connection') {
      trailerTokens = splitConnectionTokens(toText(raw[i + 1]), trailerTokens);
    }
  }

  const drop = actions.responseDrop;
  const pairs: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = toText(raw[i]);
    const lower = name.toLowerCase();
    if (TRAILER_DENYLIST.has(lower) || lower.startsWith('content-')) continue;
    if (connectionTokens?.includes(lower) || trailerTokens?.includes(lower)) continue;
    if (drop !== null && drop.has(lower)) continue;
    pairs.push([name, toText(raw[i + 1])]);
  }
  return pairs;
}

/** A list member of only spaces and tabs, the whitespace that HTTP allows around members. */
const OPTIONAL_WHITESPACE = /^[ \t]*$/;
const CONTINUE_MEMBER = /^[ \t]*100-continue[ \t]*$/i;

/**
 * Tells whether an Expect value is the 100-continue expectation and nothing else: each member
 * of the list, compared without case and surrounding whitespace, is `100-continue`. Empty list
 * members are skipped, as RFC 9110 section 5.6.1 requires of recipients, but at least one member
 * must be there.
 */
export function isContinueExpectation(value: string): boolean {
  let members = 0;
  for (const member of value.split(',')) {
    if (OPTIONAL_WHITESPACE.test(member)) continue;
    if (!CONTINUE_MEMBER.test(member)) return false;
    members++;
  }
  return members > 0;
}

/** Adds the lower-case options of a `Connection` value to `tokens`, skipping hop-by-hop names. */
export function splitConnectionTokens(
  value: string,
  tokens: string[] | undefined,
): string[] | undefined {
  // Nearly every upstream response carries `Connection: keep-alive` or `close`, which name no
  // header, so the split is skipped for them.
  if (value.length === 10 || value.length === 5) {
    const lower = value.toLowerCase();
    if (lower === 'keep-alive' || lower === 'close') return tokens;
  }
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase();
    if (name !== '' && name !== 'close' && !HOP_BY_HOP.has(name)) {
      tokens ??= [];
      tokens.push(name);
    }
  }
  return tokens;
}

/** Tells whether a lower-case header name is hop-by-hop. */
export function isHopByHop(lower: string): boolean {
  return HOP_BY_HOP.has(lower);
}

/** Header bytes as text: undici hands over Buffers, `node:http` strings; latin1 keeps every byte. */
export function toText(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('latin1');
}
