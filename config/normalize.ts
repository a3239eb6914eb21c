import { isUnreserved } from '../data-plane/router/path.js';
import type {
  HeaderActions,
  HealthCheck,
  Route,
  RouteTimeouts,
  Target,
  Upstream,
  UpstreamTls,
} from '../proto/gen/loom/v1/config.js';

/**
 * Puts a route in its stored form: defaults filled, hosts and hostRewrite
 * lower-cased without one trailing dot, methods upper-cased, percent-encoding of paths and
 * prefixes normalised (`normalizePathPattern`, `normalizePathPrefix`), and
 * every order-insensitive list sorted and deduplicated. Applying the same
 * declaration twice, or an equivalent spelling of it, therefore stores the
 * same bytes and creates no new version.
 */
export function normalizeRoute(route: Route): Route {
  return dropUndefined({
    name: route.name,
    hosts: sortedUnique(route.hosts.map(normalizeHostPattern)),
    paths: sortedUnique(route.paths.map(normalizePathPattern)),
    methods: sortedUnique(route.methods.map((method) => method.toUpperCase())),
    upstream: route.upstream,
    stripPrefix: normalizePathPrefix(route.stripPrefix),
    addPrefix: normalizePathPrefix(route.addPrefix),
    hostRewrite:
      route.hostRewrite === undefined ? undefined : normalizeHostRewrite(route.hostRewrite),
    requestHeaders: normalizeHeaderActions(route.requestHeaders),
    responseHeaders: normalizeHeaderActions(route.responseHeaders),
    timeouts: normalizeTimeouts(route.timeouts),
    // 0 is the default, so an explicit 0 stores the same bytes as an omitted value.
    retries: route.retries === 0 ? undefined : route.retries,
    maxRequestBodyBytes: route.maxRequestBodyBytes,
  });
}

/**
 * Puts an upstream in its stored form: target URLs normalised
 * (`normalizeTargetUrl`), targets sorted by URL, weights filled, and TLS
 * settings that are all defaults dropped.
 */
export function normalizeUpstream(upstream: Upstream): Upstream {
  const targets: Target[] = upstream.targets.map((target) => ({
    url: normalizeTargetUrl(target.url),
    weight: target.weight,
  }));
  targets.sort((a, b) => compare(a.url, b.url));
  return dropUndefined({
    name: upstream.name,
    targets,
    // round-robin is the default, so naming it or not stores the same bytes.
    balancer: upstream.balancer === 'round-robin' ? undefined : upstream.balancer,
    hashOn: normalizeHashOn(upstream.hashOn),
    healthCheck: normalizeHealthCheck(upstream.healthCheck),
    passiveHealth: upstream.passiveHealth && { ...upstream.passiveHealth },
    tls: normalizeTls(upstream.tls),
  });
}

/**
 * Copies a health check with its `host` normalised as a hostRewrite is. An absent host leaves
 * no `host` key, so upstreams stored before the field existed compare equal.
 */
function normalizeHealthCheck(check: HealthCheck | undefined): HealthCheck | undefined {
  if (check === undefined) return undefined;
  const { host, ...rest } = check;
  return host === undefined ? rest : { ...rest, host: normalizeHostRewrite(host) };
}

/**
 * Drops TLS settings that are all defaults: the proxy verifies with the system roots and the
 * target host either way, so `tls: {}` stores the same bytes as no `tls`. The other optional
 * objects of an upstream differ from leaving them out even when empty: `passiveHealth: {}`
 * turns on ejection with default settings, and `healthCheck` needs a path.
 */
function normalizeTls(tls: UpstreamTls | undefined): UpstreamTls | undefined {
  if (tls === undefined) return undefined;
  const { caFile, serverName, insecureSkipVerify } = tls;
  return caFile === '' && serverName === '' && !insecureSkipVerify
    ? undefined
    : { caFile, serverName, insecureSkipVerify };
}

/** Scheme, authority and the rest of an absolute URL written with `//`. */
const URL_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*:)\/\/([^/?#\\]*)(.*)$/s;

/**
 * Puts a target URL in stored form: scheme and host lower-cased, and the
 * default port of the scheme (or an empty port) dropped. A path of only slashes
 * is dropped too, because the proxy joins no base path for an empty path or `/`
 * (`parseTargetUrl`). IPv6 addresses keep their brackets. Any other path is
 * kept as written. Host and port are those of WHATWG URL parsing, which the
 * proxy connects to, so `http://LocalHost:80/` is stored as
 * `http://localhost`. A URL that validation rejects stays as written.
 */
export function normalizeTargetUrl(raw: string): string {
  const parts = URL_PARTS.exec(raw);
  // WHATWG parsing skips extra slashes and reads backslashes as slashes before the host, so
  // for such spellings the path after the written authority is not the parsed path.
  if (parts === null || parts[2] === '' || raw.includes('\\') || !URL.canParse(raw)) return raw;
  const url = new URL(raw);
  const isHttp = url.protocol === 'http:' || url.protocol === 'https:';
  if (!isHttp || url.username || url.password || url.search || url.hash) return raw;
  if (raw.includes('?') || raw.includes('#') || url.hostname === '') return raw;

  const path = /^\/*$/.test(parts[3]) ? '' : parts[3];
  return `${url.protocol}//${url.host}${path}`;
}

/**
 * Returns a copy of `value` without the optional fields left undefined, so equal resources also
 * compare deep-equal. It copies instead of using `delete`, which would switch V8 to slow
 * dictionary properties for each of the 100,000 routes of a large apply.
 */
function dropUndefined<T extends object>(value: T): T {
  const defined: Partial<T> = {};
  for (const key of Object.keys(value) as (keyof T)[]) {
    if (value[key] !== undefined) defined[key] = value[key];
  }
  return defined as T;
}

/**
 * Puts a path prefix in stored form: percent-encoding normalised as the proxy
 * normalises request paths, then trailing slashes dropped. `/` and the empty
 * string mean no prefix. A prefix with an invalid escape keeps its escapes as
 * written, for validation to reject.
 */
export function normalizePathPrefix(prefix: string | undefined): string | undefined {
  if (prefix === undefined) return undefined;
  const decoded = INVALID_ESCAPE.test(prefix) ? prefix : normalizePercentEscapes(prefix, false);
  const trimmed = decoded.replace(/\/+$/, '');
  return trimmed === '' ? undefined : trimmed;
}

/**
 * Puts a path pattern in stored form. In static text, escapes of unreserved
 * characters (ALPHA, DIGIT, `-`, `.`, `_`, `~`) are decoded and the hex digits
 * of every other escape upper-cased. The router compares static text that way,
 * so `/%7Eu` and `/~u` store the same pattern. An escape right after a
 * param name stays escaped when it decodes to a name character, because
 * decoding `:id%41` would make the param `idA`. Catch-all segments stay as
 * written, and so does a pattern with an invalid escape, for validation to reject.
 */
export function normalizePathPattern(pattern: string): string {
  if (pattern.indexOf('%') === -1 || INVALID_ESCAPE.test(pattern)) return pattern;
  return pattern
    .split('/')
    .map((segment) => (segment.startsWith('*') ? segment : normalizePercentEscapes(segment, true)))
    .join('/');
}

/** A `%` not followed by two hex digits. */
const INVALID_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

/**
 * Decodes escapes of unreserved characters and upper-cases the others. With
 * `params`, `:name` starts a param name (and `::` is a literal colon), so an
 * escape that would extend a name is kept. Every escape in `text` must be `%`
 * and two hex digits.
 */
function normalizePercentEscapes(text: string, params: boolean): string {
  if (text.indexOf('%') === -1) return text;

  let output = '';
  let inName = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (params && char === ':') {
      const literal = text[i + 1] === ':';
      output += literal ? '::' : ':';
      if (literal) i++;
      inName = !literal;
      continue;
    }
    if (char !== '%') {
      output += char;
      inName &&= isNameCharacter(char.charCodeAt(0));
      continue;
    }
    const hex = text.slice(i + 1, i + 3);
    const byte = Number.parseInt(hex, 16);
    const decode = isUnreserved(byte) && !(inName && isNameCharacter(byte));
    output += decode ? String.fromCharCode(byte) : `%${hex.toUpperCase()}`;
    inName = false;
    i += 2;
  }
  return output;
}

/** Returns whether a character code may appear in a param name: letters, digits and `_`. */
function isNameCharacter(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x5f
  );
}

/** Lower-cases header names, sorts both lists and drops an action that changes nothing. */
function normalizeHeaderActions(actions: HeaderActions | undefined): HeaderActions | undefined {
  if (actions === undefined) return undefined;
  const set = actions.set.map((header) => ({
    name: header.name.toLowerCase(),
    value: header.value,
  }));
  set.sort((a, b) => compare(a.name, b.name) || compare(a.value, b.value));
  const remove = sortedUnique(actions.remove.map((name) => name.toLowerCase()));
  return set.length === 0 && remove.length === 0 ? undefined : { set, remove };
}

function normalizeTimeouts(timeouts: RouteTimeouts | undefined): RouteTimeouts | undefined {
  if (timeouts === undefined) return undefined;
  const { connectMs, responseHeaderMs, idleBodyMs } = timeouts;
  return connectMs === 0 && responseHeaderMs === 0 && idleBodyMs === 0
    ? undefined
    : { connectMs, responseHeaderMs, idleBodyMs };
}

/** Lower-cases the name in `header:NAME`; cookie names are case-sensitive and stay as written. */
function normalizeHashOn(hashOn: string | undefined): string | undefined {
  if (hashOn === undefined) return undefined;
  return hashOn.toLowerCase().startsWith('header:') ? hashOn.toLowerCase() : hashOn;
}

/**
 * Lower-cases a hostRewrite and drops one trailing dot of its host, before any port, as
 * `normalizeHostPattern` does for route hosts: `Users.Internal.:8080` is stored as
 * `users.internal:8080`. NOTE: an upstream that distinguishes `name.` from `name` receives `name`.
 */
export function normalizeHostRewrite(hostRewrite: string): string {
  const lower = hostRewrite.toLowerCase();
  const port = /:\d*$/.exec(lower)?.[0] ?? '';
  const host = lower.slice(0, lower.length - port.length);
  return host.endsWith('.') ? `${host.slice(0, -1)}${port}` : lower;
}

/** Lower-cases a host pattern and drops one trailing dot. */
export function normalizeHostPattern(host: string): string {
  const lower = host.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function sortedUnique(values: string[]): string[] {
  return [...new Set(values)].sort(compare);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
