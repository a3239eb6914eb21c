import { LoomError } from '../../common/errors.js';
import { HEADER_VALUE, MAX_ROUTE_RETRIES, TOKEN } from '../../config/limits.js';
import type { HeaderActions, Route } from '../../proto/gen/loom/v1/config.js';

const SLASH = 0x2f;

/**
 * What the proxy does to a matched request and its response, compiled from the route once per
 * snapshot so the request path only reads fields.
 */
export interface RouteActions {
  /** Prefix removed from the normalised path at a segment boundary; empty for none. */
  readonly stripPrefix: string;
  /** Prefix added after stripping; empty for none. */
  readonly addPrefix: string;
  /** Host header sent upstream, also when the client sent none; undefined keeps the client's. */
  readonly hostRewrite: string | undefined;
  /** True when the forwarded path can differ from the normalised request path beyond the base path. */
  readonly rewritesPath: boolean;
  /** Lower-case request header names to drop: removed and replaced headers; null for none. */
  readonly requestDrop: ReadonlySet<string> | null;
  /** Request headers to add, as a flat list of names and values, without `Via`. */
  readonly requestSet: readonly string[];
  /**
   * `Via` value that the route sets, sent before the entries of Loom proxies; undefined when the
   * route sets none.
   */
  readonly requestVia: string | undefined;
  /** Lower-case response header names to drop; null for none. */
  readonly responseDrop: ReadonlySet<string> | null;
  /** Response headers to add, as a flat list of names and values. */
  readonly responseSet: readonly string[];
  /** Per-route timeouts in milliseconds; 0 uses the pool default. */
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  /** Extra attempts for retryable requests. */
  readonly retries: number;
  /** Largest request body in bytes; 0 means no limit; undefined uses the proxy default. */
  readonly maxRequestBodyBytes: number | undefined;
}

/**
 * Compiles the actions of a stored (normalised and validated) route.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when `retries` is above `MAX_ROUTE_RETRIES`, as in a
 * value written straight into the store. Each retry is one more attempt of a failing request, so
 * a huge count would keep that request, and the proxy's CPU, busy for good. Also throws on an
 * invalid header name or value (see `compileHeaderActions`).
 */
export function compileRouteActions(route: Route): RouteActions {
  const retries = route.retries ?? 0;
  if (retries > MAX_ROUTE_RETRIES) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `route ${JSON.stringify(route.name)}: invalid retries ${retries}; expected 0 to ` +
        `${MAX_ROUTE_RETRIES}, as loomctl apply accepts`,
    );
  }
  const request = compileHeaderActions(route.requestHeaders, route.name, 'requestHeaders');
  const { set: requestSet, via: requestVia } = separateVia(request.set);
  const response = compileHeaderActions(route.responseHeaders, route.name, 'responseHeaders');
  const stripPrefix = route.stripPrefix ?? '';
  const addPrefix = route.addPrefix ?? '';
  return Object.freeze({
    stripPrefix,
    addPrefix,
    hostRewrite: route.hostRewrite,
    rewritesPath: stripPrefix !== '' || addPrefix !== '',
    requestDrop: request.drop,
    requestSet,
    requestVia,
    responseDrop: response.drop,
    responseSet: response.set,
    connectTimeoutMs: route.timeouts?.connectMs ?? 0,
    headersTimeoutMs: route.timeouts?.responseHeaderMs ?? 0,
    bodyTimeoutMs: route.timeouts?.idleBodyMs ?? 0,
    retries,
    maxRequestBodyBytes: route.maxRequestBodyBytes,
  });
}

/**
 * Compiles one route's header changes.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on a header name that is not an RFC 9110 token or a
 * value with a control character, as in a value written straight into the store. Node.js
 * rejects such a header on every request, so every request of the route would fail.
 */
function compileHeaderActions(
  actions: HeaderActions | undefined,
  routeName: string,
  field: string,
): {
  drop: ReadonlySet<string> | null;
  set: readonly string[];
} {
  if (actions === undefined) {
    return { drop: null, set: [] };
  }
  const reject = (part: 'name' | 'value', value: string) => {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `route ${JSON.stringify(routeName)} ${field}: invalid header ${part} ` +
        `${JSON.stringify(value.slice(0, 200))}, as loomctl apply rejects`,
    );
  };
  for (const name of actions.remove) {
    if (!TOKEN.test(name)) reject('name', name);
  }
  for (const header of actions.set) {
    if (!TOKEN.test(header.name)) reject('name', header.name);
    if (!HEADER_VALUE.test(header.value)) reject('value', header.value);
  }
  const drop = new Set(actions.remove.map((name) => name.toLowerCase()));
  const set: string[] = [];
  for (const header of actions.set) {
    drop.add(header.name.toLowerCase());
    set.push(header.name, header.value);
  }
  return { drop: drop.size === 0 ? null : drop, set };
}

/**
 * Splits a flat list of request headers to set into the headers other than `Via` and the
 * non-empty `Via` values joined in order. The proxy sends that value with the Loom entries in one
 * `Via` header.
 */
function separateVia(set: readonly string[]): { set: string[]; via: string | undefined } {
  const rest: string[] = [];
  let via: string | undefined;
  for (let i = 0; i < set.length; i += 2) {
    const value = set[i + 1];
    if (set[i].toLowerCase() !== 'via') {
      rest.push(set[i], value);
    } else if (value.trim() !== '') {
      via = via === undefined ? value : `${via}, ${value}`;
    }
  }
  return { set: rest, via };
}

/**
 * Returns the path sent upstream for a normalised request path (no query): strips the route's
 * prefix when the path starts with it at a segment boundary, adds the route's prefix, and joins
 * the result with the target's base path using `joinPath`. The caller must first reject a path
 * for which `remainderStartsWithDoubleSlash` is true, because the result could then start with
 * `//`.
 */
export function rewritePath(basePath: string, actions: RouteActions, path: string): string {
  const start = strippedLength(actions, path);
  const remainder = start === 0 ? path : path.slice(start);
  const base = actions.addPrefix === '' ? basePath : joinPath(basePath, actions.addPrefix);
  return joinPath(base, remainder);
}

/**
 * Tells whether the remainder of a normalised path (the path without the route's stripPrefix,
 * or the whole path when the prefix does not apply) starts with `//`, an empty first segment.
 * The proxy rejects such a request with 400. Joined to an empty base it would make a request
 * target that starts with `//`, which an upstream that resolves it against a base URL reads as
 * a host name (`new URL('//evil.example/x', base)` has host `evil.example`). The check does not
 * depend on the target or on addPrefix, so every target of the route and every retry get the
 * same result.
 */
export function remainderStartsWithDoubleSlash(actions: RouteActions, path: string): boolean {
  const start = strippedLength(actions, path);
  return path.charCodeAt(start) === SLASH && path.charCodeAt(start + 1) === SLASH;
}

/**
 * Returns the message of the proxy's 400 for a normalised path whose remainder starts with `//`
 * (see `remainderStartsWithDoubleSlash`), or undefined when the remainder does not. The message
 * names the stripPrefix only when the route has one that applies to the path.
 */
export function describeDoubleSlash(actions: RouteActions, path: string): string | undefined {
  const start = strippedLength(actions, path);
  if (path.charCodeAt(start) !== SLASH || path.charCodeAt(start + 1) !== SLASH) return undefined;

  const where =
    start === 0
      ? 'the path starts with "//"'
      : 'the path starts with "//" once the route\'s stripPrefix is removed';
  return `${where}, and an upstream could read "//name" as a host name; remove the extra "/"`;
}

/** Returns the length of the route's stripPrefix when it applies to `path`, else 0. */
function strippedLength(actions: RouteActions, path: string): number {
  const strip = actions.stripPrefix;
  if (
    strip !== '' &&
    path.startsWith(strip) &&
    (path.length === strip.length || path.charCodeAt(strip.length) === SLASH)
  ) {
    return strip.length;
  }
  return 0;
}

/**
 * Joins a target's base path with the rest of a request path so that exactly one slash
 * separates them:
 *
 * | base   | remainder | result   |
 * | ------ | --------- | -------- |
 * | ``     | ``        | `/`      |
 * | ``     | `/x`      | `/x`     |
 * | `/v1`  | ``        | `/v1`    |
 * | `/v1/` | ``        | `/v1/`   |
 * | `/v1`  | `/`       | `/v1/`   |
 * | `/v1/` | `/x`      | `/v1/x`  |
 * | `/v1`  | `-x`      | `/v1/-x` |
 *
 * An empty remainder keeps the base as written, so a trailing slash on the base survives. The
 * proxy never joins a remainder that starts with `//` (see `remainderStartsWithDoubleSlash`).
 */
export function joinPath(base: string, remainder: string): string {
  if (remainder === '') {
    return base === '' ? '/' : base;
  }
  const baseEndsWithSlash = base.charCodeAt(base.length - 1) === SLASH;
  if (remainder.charCodeAt(0) === SLASH) {
    return baseEndsWithSlash ? base + remainder.slice(1) : base + remainder;
  }
  return baseEndsWithSlash ? base + remainder : `${base}/${remainder}`;
}
