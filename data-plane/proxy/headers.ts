import type { IncomingHttpHeaders, OutgoingHttpHeader } from 'node:http';

/**
 * Hop-by-hop headers of HTTP/1.1 plus the legacy Proxy-Connection. They describe one
 * connection, not the message, so the proxy does not forward them.
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

/**
 * Builds the upstream request headers from `rawHeaders` of the client request, a flat list of
 * names and values, and returns a new flat list.
 *
 * Hop-by-hop headers and every header named in `Connection` are dropped. `Expect` is dropped
 * too, because undici rejects it and a Node.js server without a 'checkContinue' listener has
 * already sent `100 Continue`. `Host` and all other headers keep their case and order. The client address is appended to `X-Forwarded-For`, and
 * `X-Forwarded-Proto` and `X-Forwarded-Host` are replaced by `protocol`, the listener scheme,
 * and `Host`. An undefined `clientAddress` (the socket is already closed) is not appended.
 */
export function buildUpstreamRequestHeaders(
  rawHeaders: readonly string[],
  clientAddress: string | undefined,
  protocol: string,
): string[] {
  const connectionTokens = collectConnectionTokens(rawHeaders);
  const headers: string[] = [];
  let forwardedFor: string | undefined;
  let host: string | undefined;

  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    const value = rawHeaders[i + 1];
    const lowerName = name.toLowerCase();
    if (HOP_BY_HOP.has(lowerName) || connectionTokens?.includes(lowerName)) {
      continue;
    }
    switch (lowerName) {
      case 'x-forwarded-for':
        forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
        continue;
      case 'x-forwarded-proto':
      case 'x-forwarded-host':
      case 'expect':
        continue;
      case 'host':
        host ??= value;
        break;
    }
    headers.push(name, value);
  }

  if (clientAddress !== undefined) {
    forwardedFor = forwardedFor === undefined ? clientAddress : `${forwardedFor}, ${clientAddress}`;
  }
  if (forwardedFor !== undefined) {
    headers.push('x-forwarded-for', forwardedFor);
  }
  headers.push('x-forwarded-proto', protocol);
  if (host !== undefined) {
    headers.push('x-forwarded-host', host);
  }
  return headers;
}

/**
 * Builds the client response headers from the upstream response headers, as undici parses them
 * (lower-case names, repeated headers as arrays). Drops hop-by-hop headers and every header
 * named in `Connection`. Returns a flat list of names and values for `res.writeHead`.
 */
export function buildClientResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeader[] {
  const connection = headers.connection;
  const connectionTokens =
    connection === undefined ? undefined : splitConnectionTokens(connection, undefined);
  const result: OutgoingHttpHeader[] = [];

  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || connectionTokens?.includes(name)) {
      continue;
    }
    result.push(name, value);
  }
  return result;
}

function collectConnectionTokens(rawHeaders: readonly string[]): string[] | undefined {
  let tokens: string[] | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length === 10 && rawHeaders[i].toLowerCase() === 'connection') {
      tokens = splitConnectionTokens(rawHeaders[i + 1], tokens);
    }
  }
  return tokens;
}

/** Adds the lower-case options of a `Connection` value to `tokens`, skipping known hop-by-hop names. */
function splitConnectionTokens(
  value: string | readonly string[],
  tokens: string[] | undefined,
): string[] | undefined {
  if (typeof value !== 'string') {
    for (const item of value) {
      tokens = splitConnectionTokens(item, tokens);
    }
    return tokens;
  }

  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase();
    if (name !== '' && !HOP_BY_HOP.has(name)) {
      tokens ??= [];
      tokens.push(name);
    }
  }
  return tokens;
}
