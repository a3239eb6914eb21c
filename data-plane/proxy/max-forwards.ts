import { compareStrings } from '../router/route-index.js';
import type { Router } from '../router/types.js';
import type { RouteBinding } from '../table.js';

/**
 * Action that Max-Forwards (RFC 9110 section 7.6.2) requires of the proxy for one request. The
 * header applies to OPTIONS and TRACE only. `forward` carries the value to send upstream, or
 * undefined when the request has none or uses another method. `last-hop` means the value is 0
 * and the proxy responds itself. `invalid` means the value is not a decimal integer.
 */
export type MaxForwards =
  | { kind: 'forward'; value: string | undefined }
  | { kind: 'last-hop' }
  | { kind: 'invalid'; message: string };

const NOT_LIMITED: MaxForwards = Object.freeze({ kind: 'forward', value: undefined });
const LAST_HOP: MaxForwards = Object.freeze({ kind: 'last-hop' });

/** Maximum length of a client's header value quoted in an error message. */
const MAX_QUOTED_LENGTH = 64;

/**
 * Reads the Max-Forwards of a request. `value` is the first field value and `count` the number
 * of Max-Forwards lines. An OPTIONS or TRACE request with more than one line, an empty value or
 * anything but digits gets `invalid`, because the proxy cannot tell how many hops remain. The
 * value may have any number of digits: it is decremented as text, so an overlong value neither
 * loses precision nor costs more than one pass.
 */
export function readMaxForwards(
  method: string,
  value: string | undefined,
  count: number,
): MaxForwards {
  if (value === undefined || (method !== 'OPTIONS' && method !== 'TRACE')) {
    return NOT_LIMITED;
  }
  if (count > 1) {
    return {
      kind: 'invalid',
      message: `the ${method} request has ${count} Max-Forwards headers; send one with a decimal integer such as 10`,
    };
  }
  if (!/^[0-9]+$/.test(value)) {
    return {
      kind: 'invalid',
      message: `invalid Max-Forwards ${quote(value)}: expected a decimal integer such as 10`,
    };
  }

  let start = 0;
  while (start < value.length - 1 && value.charCodeAt(start) === 0x30) start++;
  const digits = value.slice(start);
  return digits === '0' ? LAST_HOP : { kind: 'forward', value: decrement(digits) };
}

/** Subtracts 1 from a decimal integer above 0 written without leading zeros. */
function decrement(digits: string): string {
  let last = digits.length - 1;
  while (digits.charCodeAt(last) === 0x30) last--;
  const lowered = String.fromCharCode(digits.charCodeAt(last) - 1);
  const result = digits.slice(0, last) + lowered + '9'.repeat(digits.length - 1 - last);
  // "10" becomes "09", and "1" becomes "0", which stays.
  return result.length > 1 && result.charCodeAt(0) === 0x30 ? result.slice(1) : result;
}

function quote(value: string): string {
  return value.length > MAX_QUOTED_LENGTH
    ? `${JSON.stringify(value.slice(0, MAX_QUOTED_LENGTH))} (${value.length} characters)`
    : JSON.stringify(value);
}

/**
 * Methods listed in `Allow` for a path where a route without a method list matches. Such a
 * route forwards every token method, which no list can name, so `Allow` names the RFC 9110
 * methods and adds those that other routes on the path list. CONNECT is left out, because the
 * proxy responds to it with 501.
 */
const ANY_ROUTE_METHODS: readonly string[] = Object.freeze([
  'DELETE',
  'GET',
  'HEAD',
  'OPTIONS',
  'PATCH',
  'POST',
  'PUT',
  'TRACE',
]);

/**
 * A method that no route lists: route methods are tokens that validation keeps non-empty.
 * Looking it up gives the router's 405 result, whose allow list is every method of every route
 * that matches the path, GET routes adding HEAD.
 */
const UNLISTED_METHOD = '';

/** Methods of the routes that match a request path, as the router computes them for a 405. */
export type RouteMethods =
  | { kind: 'methods'; allow: readonly string[] }
  | { kind: 'not-found' }
  | { kind: 'bad-request'; reason: string };

/**
 * Returns the methods that the routes matching `host` and `path` forward, for the `Allow`
 * header of a response the proxy sends in place of an upstream's. Where a route without a
 * method list matches, the result is `ANY_ROUTE_METHODS` plus the methods that the other
 * matching routes list, such as PROPFIND, so an extension method that no route names is
 * forwarded but not listed.
 */
export function routeMethods(
  router: Router<RouteBinding>,
  host: string | undefined,
  path: string,
): RouteMethods {
  const match = router.find(UNLISTED_METHOD, host, path);
  switch (match.kind) {
    case 'found':
      return { kind: 'methods', allow: withListedMethods(router.listMethods(host, path)) };
    case 'method-not-allowed':
      return { kind: 'methods', allow: match.allow };
    case 'not-found':
      return match;
    case 'bad-request':
      return match;
  }
}

/** Returns `ANY_ROUTE_METHODS` with the methods of `listed` that it lacks, sorted. */
function withListedMethods(listed: readonly string[]): readonly string[] {
  const extra = listed.filter((method) => !ANY_ROUTE_METHODS.includes(method));
  if (extra.length === 0) return ANY_ROUTE_METHODS;
  return [...ANY_ROUTE_METHODS, ...extra].sort(compareStrings);
}
