import type {
  HeaderActions,
  Route,
  RouteTimeouts,
  Target,
  Upstream,
} from '../proto/gen/loom/v1/config.js';

/**
 * Puts a route in its stored form: defaults filled, hosts lower-cased without
 * one trailing dot, methods upper-cased, and every order-insensitive list
 * sorted and deduplicated. Applying the same declaration twice therefore
 * stores the same bytes and creates no new version.
 */
export function normalizeRoute(route: Route): Route {
  return dropUndefined({
    name: route.name,
    hosts: sortedUnique(route.hosts.map(normalizeHostPattern)),
    paths: sortedUnique(route.paths),
    methods: sortedUnique(route.methods.map((method) => method.toUpperCase())),
    upstream: route.upstream,
    stripPrefix: normalizePrefix(route.stripPrefix),
    addPrefix: normalizePrefix(route.addPrefix),
    hostRewrite: route.hostRewrite === undefined ? undefined : route.hostRewrite.toLowerCase(),
    requestHeaders: normalizeHeaderActions(route.requestHeaders),
    responseHeaders: normalizeHeaderActions(route.responseHeaders),
    timeouts: normalizeTimeouts(route.timeouts),
    // 0 is the default, so an explicit 0 stores the same bytes as an omitted value.
    retries: route.retries === 0 ? undefined : route.retries,
    maxRequestBodyBytes: route.maxRequestBodyBytes,
  });
}

/** Puts an upstream in its stored form: targets sorted by URL, weights filled. */
export function normalizeUpstream(upstream: Upstream): Upstream {
  const targets: Target[] = upstream.targets.map((target) => ({
    url: target.url,
    weight: target.weight,
  }));
  targets.sort((a, b) => compare(a.url, b.url));
  return dropUndefined({
    name: upstream.name,
    targets,
    // round-robin is the default, so naming it or not stores the same bytes.
    balancer: upstream.balancer === 'round-robin' ? undefined : upstream.balancer,
    hashOn: normalizeHashOn(upstream.hashOn),
    healthCheck: upstream.healthCheck && { ...upstream.healthCheck },
    passiveHealth: upstream.passiveHealth && { ...upstream.passiveHealth },
    tls: upstream.tls && { ...upstream.tls },
  });
}

/** Removes the optional fields left undefined, so equal resources also compare deep-equal. */
function dropUndefined<T extends object>(value: T): T {
  for (const key of Object.keys(value) as (keyof T)[]) {
    if (value[key] === undefined) delete value[key];
  }
  return value;
}

/** Drops trailing slashes of a path prefix; `/` and the empty string mean no prefix. */
function normalizePrefix(prefix: string | undefined): string | undefined {
  if (prefix === undefined) return undefined;
  const trimmed = prefix.replace(/\/+$/, '');
  return trimmed === '' ? undefined : trimmed;
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
