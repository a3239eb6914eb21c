import { LoomError } from '../../common/errors.js';

/** A route host in matching form. */
export type HostPattern =
  /** `name` is lower-case, without a trailing dot. */
  | { kind: 'exact'; name: string }
  /** `*.example.com` has the suffix `example.com` and covers exactly one more label. */
  | { kind: 'wildcard'; suffix: string };

const OPEN_BRACKET = 0x5b;
const DOT = 0x2e;

/**
 * Parses a route host: an exact name (`api.example.com`, `[::1]`) or a
 * wildcard whose first label is `*` (`*.example.com`). Case and one trailing
 * dot are dropped.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when the host is empty, carries a
 *   port or a path, has an empty label or text after the `]` of an IPv6 literal, or has `*`
 *   anywhere but as the whole first label.
 */
export function parseHostPattern(routeName: string, host: string): HostPattern {
  const lower = host.toLowerCase();
  const name = lower.endsWith('.') ? lower.slice(0, -1) : lower;
  if (name === '') {
    rejectHost(routeName, host, 'a host must not be empty; leave hosts empty to match any host');
  }
  if (/[/\s@?#]/.test(name)) {
    rejectHost(routeName, host, 'a host is a bare name, without scheme, path or user');
  }
  if (name.startsWith('[')) {
    // A request host keeps only what ends at "]", so anything after it could never match.
    if (name.indexOf(']') !== name.length - 1 || name.length === 2) {
      rejectHost(
        routeName,
        host,
        'an IPv6 literal is one address in brackets, without a port, such as [::1]',
      );
    }
    return { kind: 'exact', name };
  }
  if (name.includes(':')) rejectHost(routeName, host, 'a host must not carry a port');

  if (name.startsWith('*.')) {
    const suffix = name.slice(2);
    if (suffix === '' || suffix.startsWith('.') || suffix.includes('*')) {
      rejectHost(
        routeName,
        host,
        'a wildcard host is "*." followed by a domain, such as *.example.com',
      );
    }
    rejectEmptyLabel(suffix, routeName, host);
    return { kind: 'wildcard', suffix };
  }
  if (name.includes('*')) {
    rejectHost(
      routeName,
      host,
      '"*" is only allowed as the whole first label, as in *.example.com',
    );
  }
  rejectEmptyLabel(name, routeName, host);
  return { kind: 'exact', name };
}

/**
 * Rejects a host name with an empty label: `a..com`, `.a.com`, or `a.com..`, which keeps one
 * trailing dot. A request host loses only one trailing dot, so `a.com..` would match only the
 * malformed request host `a.com..`.
 */
function rejectEmptyLabel(name: string, routeName: string, host: string): void {
  if (name.startsWith('.') || name.endsWith('.') || name.includes('..')) {
    rejectHost(
      routeName,
      host,
      'a host name must not have an empty label, as in "a..com" or ".a.com"',
    );
  }
}

/**
 * Throws the error of an invalid route host. It is a module function because `parseHostPattern`
 * runs once per route host of a router build, where a closure made on each call showed in
 * profiles of 100,000-route builds.
 */
function rejectHost(routeName: string, host: string, reason: string): never {
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(routeName)}: invalid host ${JSON.stringify(host)}: ${reason}`,
  );
}

/**
 * Puts a raw Host header in matching form: lower-case, without the port
 * (`[::1]:8080` becomes `[::1]`) and without one trailing dot. Returns `''`
 * when the header is missing or empty, so only any-host routes can match.
 * A malformed header is kept as it is (lower-cased) and simply matches no
 * exact or wildcard host.
 *
 * NOTE: percent-encoding is not decoded, so `api.ex%61mple.com` matches no route for
 * `api.example.com` although RFC 3986 section 6.2.2.2 makes the two equal.
 */
export function normalizeRequestHost(host: string | undefined): string {
  if (host === undefined || host.length === 0) return '';

  let end = host.length;
  if (host.charCodeAt(0) === OPEN_BRACKET) {
    const close = host.indexOf(']');
    if (close !== -1) end = close + 1;
  } else {
    const colon = host.indexOf(':');
    if (colon !== -1) end = colon;
  }
  if (end > 0 && host.charCodeAt(end - 1) === DOT) end--;

  // Native toLowerCase measured faster on Node 20 than scanning for upper
  // case first, even for a host that is already lower-case.
  const name = end === host.length ? host : host.slice(0, end);
  return name.toLowerCase();
}

/**
 * Returns the part of a normalized request host that a wildcard must name:
 * `example.com` for `api.example.com`. Returns null when the first label is
 * empty, when there is no second label, and for IPv6 literals.
 */
export function wildcardSuffix(host: string): string | null {
  if (host.charCodeAt(0) === OPEN_BRACKET) return null;
  const dot = host.indexOf('.');
  if (dot <= 0 || dot === host.length - 1) return null;
  return host.slice(dot + 1);
}
