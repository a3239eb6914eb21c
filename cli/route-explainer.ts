import {
  normalizeRequestHost,
  parseHostPattern,
  wildcardSuffix,
} from '../data-plane/router/host.js';
import { normalizeRequestPath } from '../data-plane/router/path.js';
import { parsePattern, type PatternSegment } from '../data-plane/router/pattern.js';
import { buildRouter } from '../data-plane/router/router.js';
import type { RouterRoute } from '../data-plane/router/types.js';
import type { Route } from '../proto/gen/loom/v1/config.js';

/** The host classes the router tries, in order. */
export type HostClass = 'exact' | 'wildcard' | 'any';

const CLASS_ORDER: HostClass[] = ['exact', 'wildcard', 'any'];

/** How one segment of the winning pattern matched the request. */
export interface SegmentMatch {
  kind: PatternSegment['kind'];
  /** The segment as the pattern writes it: `users`, `:id`, `*rest`, `*` or `**`. */
  pattern: string;
  /** The request text it matched; a catch-all takes the rest of the path. */
  value: string;
}

/** A route that also matches the request on its own but loses to the winner. */
export interface LosingRoute {
  route: string;
  path: string;
  hostClass: HostClass;
  /** Why the winner is chosen, such as `segment 2: static "admin" beats param ":id"`. */
  reason: string;
}

/** A route whose path and method match the request, but none of whose hosts does. */
export interface HostMiss {
  route: string;
  path: string;
  hosts: string[];
}

/** What the router does with one request, and why. */
export type Explanation =
  | {
      kind: 'found';
      route: string;
      path: string;
      hostClass: HostClass;
      /** The route host that matched, such as `api.example.com` or `*.example.com`; empty for any. */
      host: string;
      segments: SegmentMatch[];
      params: Record<string, string>;
      losers: LosingRoute[];
    }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found'; hostMisses: HostMiss[] }
  | { kind: 'bad-request'; reason: string };

interface Candidate {
  route: Route;
  path: string;
  segments: PatternSegment[];
  hostClass: HostClass;
}

/**
 * Explains which route the real router picks for a request and by which
 * rule: the host class, the path and each segment's kind, and which other
 * routes also match the request but lose. `host` is a Host header value (a
 * port is ignored) or undefined; `path` is the raw path without the query.
 */
export function explainRequest(
  routes: readonly Route[],
  method: string,
  host: string | undefined,
  path: string,
): Explanation {
  const match = buildRouter(routes.map(toRouterRoute)).find(method, host, path);
  if (match.kind === 'not-found') {
    const requestPath = normalizeRequestPath(path) as string;
    return { kind: 'not-found', hostMisses: hostMisses(routes, method, host, requestPath) };
  }
  if (match.kind !== 'found') return match;

  const normalizedPath = normalizeRequestPath(path) as string;
  const requestHost = normalizeRequestHost(host);
  const candidates = matchingCandidates(routes, method, requestHost, normalizedPath);
  const winner = pickWinner(candidates, method, host, path, match.route);
  const losers = candidates
    .filter((candidate) => candidate !== winner && candidate.route.name !== match.route)
    .map((candidate) => describeLoser(winner, candidate));
  return {
    kind: 'found',
    route: match.route,
    path: winner.path,
    hostClass: winner.hostClass,
    host: classHost(winner.hostClass, requestHost),
    segments: segmentMatches(winner.segments, normalizedPath),
    params: { ...match.params },
    losers,
  };
}

function toRouterRoute(route: Route): RouterRoute<null> {
  return {
    name: route.name,
    hosts: route.hosts,
    paths: route.paths,
    methods: route.methods,
    value: null,
  };
}

/**
 * Returns every (route, path) pair that matches the request when it is the
 * only route, on the best host class it lists for this host.
 */
function matchingCandidates(
  routes: readonly Route[],
  method: string,
  host: string,
  path: string,
): Candidate[] {
  const firstSegment = path.slice(1).split('/', 1)[0];
  const candidates: Candidate[] = [];
  for (const route of routes) {
    const hostClass = bestHostClass(route, host);
    if (hostClass === undefined) continue;
    if (!takesMethod(route, method)) continue;

    const seen = new Set<string>();
    for (const source of route.paths) {
      const pattern = parsePattern(route.name, source);
      const first = pattern.segments[0];
      // Most routes differ in the first static segment; skipping them keeps this fast on big configs.
      if (first.kind === 'static' && first.text !== firstSegment) continue;
      if (seen.has(pattern.key)) continue;
      seen.add(pattern.key);

      const single = buildRouter([{ ...toRouterRoute(route), hosts: [], paths: [source] }]);
      if (single.find(method, undefined, path).kind === 'found') {
        candidates.push({ route, path: source, segments: pattern.segments, hostClass });
      }
    }
  }
  return candidates;
}

/** Lists the routes that would match the request with another Host header. */
function hostMisses(
  routes: readonly Route[],
  method: string,
  host: string | undefined,
  path: string,
): HostMiss[] {
  const requestHost = normalizeRequestHost(host);
  const misses: HostMiss[] = [];
  for (const route of routes) {
    if (route.hosts.length === 0 || bestHostClass(route, requestHost) !== undefined) continue;
    if (!takesMethod(route, method)) continue;

    const matching = route.paths.find((source) => {
      const single = buildRouter([{ ...toRouterRoute(route), hosts: [], paths: [source] }]);
      return single.find(method, undefined, path).kind === 'found';
    });
    if (matching !== undefined)
      misses.push({ route: route.name, path: matching, hosts: route.hosts });
  }
  return misses;
}

/** Returns the candidate the router chose: the best host class, then the best segment kinds. */
function pickWinner(
  candidates: Candidate[],
  method: string,
  host: string | undefined,
  path: string,
  routeName: string,
): Candidate {
  const own = candidates.filter((candidate) => candidate.route.name === routeName);
  if (own.length === 1) return own[0];

  // Several paths of the winning route match: the router's own choice among them decides.
  const best = [...own].sort(
    (a, b) => classRank(a.hostClass) - classRank(b.hostClass) || compareSegments(a, b),
  );
  const sameClass = own.filter((candidate) => candidate.hostClass === best[0].hostClass);
  const router = buildRouter(
    sameClass.map((candidate, index) => ({
      ...toRouterRoute(candidate.route),
      name: String(index),
      hosts: [],
      paths: [candidate.path],
    })),
  );
  const found = router.find(method, host, path);
  return found.kind === 'found' ? sameClass[Number(found.route)] : best[0];
}

function describeLoser(winner: Candidate, loser: Candidate): LosingRoute {
  const base = { route: loser.route.name, path: loser.path, hostClass: loser.hostClass };
  if (loser.hostClass !== winner.hostClass) {
    return {
      ...base,
      reason: `host class ${winner.hostClass} is tried before ${loser.hostClass}`,
    };
  }
  for (let index = 0; index < winner.segments.length; index++) {
    const [won, lost] = [winner.segments[index], loser.segments[index]];
    if (lost === undefined || won.kind === lost.kind) continue;
    return {
      ...base,
      reason:
        `segment ${index + 1}: ${won.kind} ${JSON.stringify(formatPattern(won))} beats ` +
        `${lost.kind} ${JSON.stringify(formatPattern(lost))}`,
    };
  }
  return { ...base, reason: 'the router prefers the winning pattern' };
}

/**
 * Returns whether a route on its own matches `method`: every method without a method list, and
 * HEAD when it lists GET, as the router falls back from HEAD to GET.
 */
function takesMethod(route: Route, method: string): boolean {
  if (route.methods.length === 0 || route.methods.includes(method)) return true;
  return method === 'HEAD' && route.methods.includes('GET');
}

/** Returns the best host class a route lists for the request host, or undefined when none fits. */
function bestHostClass(route: Route, host: string): HostClass | undefined {
  if (route.hosts.length === 0) return 'any';
  if (host === '') return undefined;
  // The router compares route hosts lower-cased and without one trailing dot, and a route
  // written to the store around loomctl may list `A.com.`. `explainRequest` built the router
  // first, so every host parses.
  const patterns = route.hosts.map((raw) => parseHostPattern(route.name, raw));
  if (patterns.some((pattern) => pattern.kind === 'exact' && pattern.name === host)) {
    return 'exact';
  }
  const suffix = wildcardSuffix(host);
  const wildcard = patterns.some(
    (pattern) => pattern.kind === 'wildcard' && pattern.suffix === suffix,
  );
  return suffix !== null && wildcard ? 'wildcard' : undefined;
}

function classHost(hostClass: HostClass, host: string): string {
  if (hostClass === 'exact') return host;
  return hostClass === 'wildcard' ? `*.${wildcardSuffix(host)}` : '';
}

function classRank(hostClass: HostClass): number {
  return CLASS_ORDER.indexOf(hostClass);
}

const KIND_RANK: Record<PatternSegment['kind'], number> = {
  static: 0,
  mixed: 1,
  param: 2,
  'catch-all': 3,
};

function compareSegments(a: Candidate, b: Candidate): number {
  const length = Math.min(a.segments.length, b.segments.length);
  for (let index = 0; index < length; index++) {
    const difference = KIND_RANK[a.segments[index].kind] - KIND_RANK[b.segments[index].kind];
    if (difference !== 0) return difference;
  }
  return 0;
}

function segmentMatches(segments: PatternSegment[], path: string): SegmentMatch[] {
  const parts = path.slice(1).split('/');
  return segments.map((segment, index) => ({
    kind: segment.kind,
    pattern: formatPattern(segment),
    value: segment.kind === 'catch-all' ? parts.slice(index).join('/') : (parts[index] ?? ''),
  }));
}

function formatPattern(segment: PatternSegment): string {
  switch (segment.kind) {
    case 'static':
      return segment.text;
    case 'param':
      return `:${segment.name}`;
    case 'mixed': {
      const { prefix, separators, suffix, names } = segment.mixed;
      const middle = names.map((name, i) => (i === 0 ? '' : separators[i - 1]) + `:${name}`);
      return prefix + middle.join('') + suffix;
    }
    case 'catch-all': {
      // A bare `*` or `**` names its param `*`, which the pattern does not write.
      const name = segment.name === '*' ? '' : segment.name;
      return `${segment.includesParent ? '**' : '*'}${name}`;
    }
  }
}
