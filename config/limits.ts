import { MAX_PATH_LENGTH } from '../data-plane/router/path.js';
import { MAX_PATTERN_SEGMENTS } from '../data-plane/router/pattern.js';

export { MAX_PATTERN_SEGMENTS };

/**
 * Maximum length of a path pattern, stripPrefix or addPrefix, in characters.
 * The proxy rejects request paths longer than `MAX_PATH_LENGTH` (8,192), so a
 * longer pattern or strip prefix could never match a request.
 */
export const MAX_PATTERN_LENGTH = MAX_PATH_LENGTH;

/**
 * Matches a string with at most `MAX_PATTERN_SEGMENTS` slashes, which is how
 * segments are counted. It is the segment limit in a form that JSON Schema's
 * `pattern` can carry; `[^/]` and `/` never overlap, so matching is linear.
 */
export const PATTERN_SEGMENTS_REGEX = new RegExp(`^[^/]*(?:/[^/]*){0,${MAX_PATTERN_SEGMENTS}}$`);

/** Maximum length of a host name in characters, without `*.` and a trailing dot (RFC 1035). */
export const MAX_HOST_LENGTH = 253;

/**
 * Matches a route host as written whose name is at most `MAX_HOST_LENGTH`
 * characters: an optional `*.`, the name and an optional trailing dot, or an
 * IPv6 address in brackets, which has no length limit because of its zone.
 */
export const HOST_LENGTH_REGEX = new RegExp(
  `^(?:\\[[\\s\\S]*\\]|(?:\\*\\.)?[\\s\\S]{1,${MAX_HOST_LENGTH}}\\.?)$`,
);

/**
 * Matches a `hostRewrite` whose host is at most `MAX_HOST_LENGTH` characters,
 * not counting a trailing dot, with an optional port of up to five digits.
 */
export const HOST_PORT_LENGTH_REGEX = new RegExp(
  `^(?:\\[[^\\]]+\\]|[^:]{1,${MAX_HOST_LENGTH}}\\.?)(?::\\d{1,5})?$`,
);

/** Returns why a path pattern or prefix exceeds the limits above, or undefined when it does not. */
export function describePatternLimit(path: string): string | undefined {
  if (path.length > MAX_PATTERN_LENGTH) {
    return (
      `too long: ${path.length} characters, at most ${MAX_PATTERN_LENGTH} are allowed ` +
      'because the proxy rejects longer request paths'
    );
  }

  let segments = 0;
  for (let at = path.indexOf('/'); at !== -1; at = path.indexOf('/', at + 1)) segments++;
  if (segments > MAX_PATTERN_SEGMENTS) {
    return `too many segments: ${segments}, at most ${MAX_PATTERN_SEGMENTS} are allowed; shorten the path or end it with a catch-all such as /**`;
  }
  return undefined;
}

/** Maximum of a route's `retries`: extra attempts of one request after it failed. */
export const MAX_ROUTE_RETRIES = 5;

/** Maximum of a health-check or ejection duration, in milliseconds: one day. */
export const MAX_DURATION_MS = 86_400_000;

/** Maximum of a health check's healthy and unhealthy thresholds. */
export const MAX_HEALTH_THRESHOLD = 100;

/** Maximum of passive health's consecutive failures. */
export const MAX_CONSECUTIVE_FAILURES = 1_000;

/** RFC 9110 token: header names, cookie names. */
export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * Header value: visible ASCII and the characters U+0080 to U+00FF (obs-text, RFC 9110 section
 * 5.5), with spaces and tabs between them but not at either end.
 */
export const HEADER_VALUE =
  /^([\x21-\x7e\x80-\xff]([\x20-\x7e\t\x80-\xff]*[\x21-\x7e\x80-\xff])?)?$/;

/** Resource names: they become etcd key segments, so they stay URL- and key-safe. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The rule of {@link NAME_PATTERN}, in the words of validation messages. */
export const NAME_RULE =
  'must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit';

/**
 * Returns the message for a route or upstream name that the store does not contain. A name that
 * apply would reject also gets the naming rule, since a typo there is the likely cause.
 */
export function describeMissingResource(kind: 'route' | 'upstream', name: string): string {
  const rule = NAME_PATTERN.test(name) ? '' : ` (a ${kind} name ${NAME_RULE})`;
  return `${kind} ${JSON.stringify(name)} not found${rule}; "loomctl get ${kind}s" lists what is stored`;
}

/** A route method in stored form: upper case, at most 32 characters. */
export const METHOD_PATTERN = /^[A-Z][A-Z0-9_-]{0,31}$/;

/** The balancers of an upstream; omitted means round-robin. */
export const BALANCERS = ['round-robin', 'least-request', 'hash'] as const;

/**
 * Maximum length of an upstream target URL in characters. A target URL is an origin with an
 * optional base path, so 2,048 leaves room for any host name and a long base path, and keeps a
 * stored upstream, and every message that quotes the URL, small.
 */
export const MAX_TARGET_URL_LENGTH = 2_048;
