import type { IncomingMessage } from 'node:http';

/** Reads the hash key of a request; undefined when the request has none. */
export type HashKey = (req: IncomingMessage) => string | undefined;

/**
 * Builds the key reader for a `hashOn` value: `header:NAME` (the header value; repeated headers
 * joined with commas), `cookie:NAME` (the cookie value) or `client-address` (the peer address
 * of the connection). The value must have passed config validation.
 */
export function createHashKey(hashOn: string): HashKey {
  if (hashOn === 'client-address') {
    return (req) => req.socket.remoteAddress;
  }

  const colon = hashOn.indexOf(':');
  const source = hashOn.slice(0, colon);
  const name = hashOn.slice(colon + 1);
  if (source === 'header') {
    const lower = name.toLowerCase();
    return (req) => {
      const value = req.headers[lower];
      return Array.isArray(value) ? value.join(', ') : value;
    };
  }
  return (req) => readCookie(req.headers.cookie, name);
}

/** Returns the value of cookie `name` in a Cookie header, or undefined. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) {
    return undefined;
  }
  for (const pair of header.split(';')) {
    const equals = pair.indexOf('=');
    if (equals !== -1 && pair.slice(0, equals).trim() === name) {
      return pair.slice(equals + 1).trim();
    }
  }
  return undefined;
}
