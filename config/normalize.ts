import type { Route, Target, Upstream } from '../proto/gen/loom/v1/config.js';

/**
 * Puts a route in its stored form: defaults filled, hosts lower-cased without
 * one trailing dot, methods upper-cased, and every order-insensitive list
 * sorted and deduplicated. Applying the same declaration twice therefore
 * stores the same bytes and creates no new version.
 */
export function normalizeRoute(route: Route): Route {
  return {
    name: route.name,
    hosts: sortedUnique(route.hosts.map(normalizeHostPattern)),
    paths: sortedUnique(route.paths),
    methods: sortedUnique(route.methods.map((method) => method.toUpperCase())),
    upstream: route.upstream,
  };
}

/** Puts an upstream in its stored form: targets sorted by URL, weights filled. */
export function normalizeUpstream(upstream: Upstream): Upstream {
  const targets: Target[] = upstream.targets.map((target) => ({
    url: target.url,
    weight: target.weight,
  }));
  targets.sort((a, b) => compare(a.url, b.url));
  return { name: upstream.name, targets };
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
