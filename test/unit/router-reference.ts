import assert from 'node:assert/strict';

import fc from 'fast-check';

import { LoomError } from '../../common/errors.js';
import { MAX_PATH_LENGTH } from '../../data-plane/router/path.js';
import { buildRouter } from '../../data-plane/router/router.js';
import type { Router, RouterMatch, RouterRoute } from '../../data-plane/router/types.js';

// Route and request generators and a reference matcher for the router's property tests.

export type Route = RouterRoute<string>;

/** A lookup result with the bad-request reason dropped and params as a plain object. */
export type Outcome =
  | { kind: 'found'; route: string; params: [string, string][] }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found' }
  | { kind: 'bad-request' };

export interface Request {
  method: string;
  host: string | undefined;
  path: string;
}

// Reference matcher: tries every route and ranks the matches by the documented
// precedence. It shares no code with the router.

export function referencePath(path: string): string | null {
  if (path.length > MAX_PATH_LENGTH || !path.startsWith('/') || path.includes('\\')) return null;

  let text = '';
  for (let i = 0; i < path.length; i++) {
    if (path[i] !== '%') {
      text += path[i];
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
    const character = String.fromCharCode(parseInt(hex, 16));
    if (character === '\\' || character === '\0') return null;
    text += /^[A-Za-z0-9._~-]$/.test(character) ? character : '%' + hex.toUpperCase();
    i += 2;
  }
  try {
    decodeURIComponent(text);
  } catch {
    return null;
  }
  // A dot segment with a path parameter, which servlet containers resolve.
  if (text.split('/').some((segment) => /^\.\.?(;|%3B)/.test(segment))) return null;

  // remove_dot_segments as RFC 3986 section 5.2.4 writes it, for an absolute
  // path, except that a ".." with nothing left to remove is rejected.
  let input = text;
  let output = '';
  while (input.length > 0) {
    if (input.startsWith('/./') || input === '/.') {
      input = '/' + input.slice(input === '/.' ? 2 : 3);
    } else if (input.startsWith('/../') || input === '/..') {
      if (output === '') return null;
      input = '/' + input.slice(input === '/..' ? 3 : 4);
      output = output.slice(0, Math.max(output.lastIndexOf('/'), 0));
    } else {
      const next = input.indexOf('/', 1);
      const segment = next === -1 ? input : input.slice(0, next);
      output += segment;
      input = input.slice(segment.length);
    }
  }
  return output;
}

export function referenceHost(host: string | undefined): string {
  if (!host) return '';
  let name = host.toLowerCase();
  if (name.startsWith('[')) {
    if (name.includes(']')) name = name.slice(0, name.indexOf(']') + 1);
  } else {
    name = name.split(':')[0];
  }
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

export function routeHost(host: string): string {
  const name = host.toLowerCase();
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/** Returns 0 for an exact host match, 1 for a wildcard match, 2 for any host, or null. */
export function hostClass(route: Route, host: string): number | null {
  if (route.hosts.length === 0) return 2;
  let best: number | null = null;
  for (const pattern of route.hosts.map(routeHost)) {
    if (host !== '' && pattern === host) return 0;
    if (pattern.startsWith('*.') && host.endsWith(pattern.slice(1))) {
      const label = host.slice(0, host.length - pattern.length + 1);
      if (label !== '' && !label.includes('.') && !host.startsWith('[')) best = 1;
    }
  }
  return best;
}

/** A pattern segment as the reference reads it. */
export type RefSegment =
  | { kind: 'static'; text: string }
  | { kind: 'param'; name: string }
  | { kind: 'mixed'; texts: string[]; names: string[] }
  | { kind: 'catch-all'; name: string; includesParent: boolean };

/** Splits a pattern into segments; `::` is a literal colon and `:name` a param. */
export function referenceSegments(pattern: string): RefSegment[] {
  return pattern
    .slice(1)
    .split('/')
    .map((part): RefSegment => {
      const catchAll = /^(\*\*?)(\w*)$/.exec(part);
      if (catchAll) {
        return {
          kind: 'catch-all',
          name: catchAll[2] || '*',
          includesParent: catchAll[1] === '**',
        };
      }
      const texts = [''];
      const names: string[] = [];
      for (const token of part.match(/::|:\w+|[^:]/g) ?? []) {
        if (token === '::') texts[texts.length - 1] += ':';
        else if (token.startsWith(':')) {
          names.push(token.slice(1));
          texts.push('');
        } else texts[texts.length - 1] += token;
      }
      if (names.length === 0) return { kind: 'static', text: texts[0] };
      if (names.length === 1 && texts[0] === '' && texts[1] === '') {
        return { kind: 'param', name: names[0] };
      }
      return { kind: 'mixed', texts, names };
    });
}

/**
 * Returns the patterns a route path stands for: `/a/**` is `/a` (with an
 * empty catch-all) and `/a/*`; `/**` is `/*` alone.
 */
export function expandPattern(pattern: string): { segments: RefSegment[]; emptyParam?: string }[] {
  const segments = referenceSegments(pattern);
  const last = segments[segments.length - 1];
  if (last.kind !== 'catch-all' || !last.includesParent) return [{ segments }];
  const expanded: { segments: RefSegment[]; emptyParam?: string }[] = [{ segments }];
  if (segments.length > 1)
    expanded.push({ segments: segments.slice(0, -1), emptyParam: last.name });
  return expanded;
}

/** Returns the shape of a pattern; equal shapes match the same paths. */
export function shapeOf(segments: RefSegment[]): string {
  return segments
    .map((segment) => {
      if (segment.kind === 'static') return segment.text;
      if (segment.kind === 'mixed') return segment.texts.join('{}');
      return segment.kind === 'param' ? '{}' : '{*}';
    })
    .join('/');
}

/** A segment's rank: static, then mixed (by its own keys), then param, then catch-all. */
export type Rank = (number | string)[];

export interface PatternMatch {
  rank: Rank[];
  shape: string;
  params: [string, string][];
}

export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Matches one path segment against a mixed segment with a regular expression
 * whose greedy groups give each earlier param as much as it can take.
 */
export function matchMixed(texts: string[], segment: string): string[] | null {
  const source = texts.map(escapeRegExp).join('(.+)');
  let expression = expressions.get(source);
  if (expression === undefined) {
    expression = new RegExp(`^${source}$`);
    expressions.set(source, expression);
  }
  const match = expression.exec(segment);
  return match === null ? null : match.slice(1);
}

export const expressions = new Map<string, RegExp>();

export function matchPattern(
  variant: { segments: RefSegment[]; emptyParam?: string },
  segments: string[],
): PatternMatch | null {
  const parts = variant.segments;
  const rank: Rank[] = [];
  const params: [string, string][] = [];
  const done = (): PatternMatch => {
    if (variant.emptyParam !== undefined) params.push([variant.emptyParam, '']);
    return { rank, shape: shapeOf(parts), params: decodeAll(params) };
  };
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (i >= segments.length) return null;
    if (part.kind === 'catch-all') {
      params.push([part.name, segments.slice(i).join('/')]);
      rank.push([3]);
      return done();
    }
    if (part.kind === 'param') {
      if (segments[i] === '') return null;
      params.push([part.name, segments[i]]);
      rank.push([2]);
    } else if (part.kind === 'mixed') {
      const values = matchMixed(part.texts, segments[i]);
      if (values === null) return null;
      part.names.forEach((name, k) => params.push([name, values[k]]));
      const staticLength = part.texts.join('').length;
      const shape = part.texts.join('{}');
      rank.push([1, -staticLength, part.names.length, -part.texts[0].length, shape]);
    } else {
      if (segments[i] !== part.text) return null;
      rank.push([0]);
    }
  }
  return parts.length === segments.length ? done() : null;
}

export function decodeAll(params: [string, string][]): [string, string][] {
  return params.map(([name, value]) => [name, decodeURIComponent(value)]);
}

export function compareRank(a: Rank, b: Rank): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] === b[i]) continue;
    if (typeof a[i] === 'number') return (a[i] as number) - (b[i] as number);
    return a[i] < b[i] ? -1 : 1;
  }
  return a.length - b.length;
}

export function compareRanks(a: Rank[], b: Rank[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const difference = compareRank(a[i], b[i]);
    if (difference !== 0) return difference;
  }
  return a.length - b.length;
}

/**
 * Returns whether a route takes a method at one place (host class and shape):
 * a route without methods takes every method, and a GET route takes HEAD
 * unless a route at the same place lists HEAD.
 */
export function takesMethod(route: Route, method: string, samePlace: Route[]): boolean {
  if (route.methods.length === 0 || route.methods.includes(method)) return true;
  if (method !== 'HEAD' || !route.methods.includes('GET')) return false;
  return !samePlace.some((other) => other.methods.includes('HEAD'));
}

export function referenceFind(routes: Route[], request: Request): Outcome {
  if (request.path === '*') return { kind: 'not-found' };
  const path = referencePath(request.path);
  if (path === null) return { kind: 'bad-request' };
  const segments = path.slice(1).split('/');
  const host = referenceHost(request.host);

  const allow = new Set<string>();
  for (let wanted = 0; wanted <= 2; wanted++) {
    const matches: { route: Route; match: PatternMatch }[] = [];
    for (const route of routes) {
      if (hostClass(route, host) !== wanted) continue;
      for (const pattern of route.paths) {
        for (const variant of expandPattern(pattern)) {
          const match = matchPattern(variant, segments);
          if (match !== null) matches.push({ route, match });
        }
      }
    }

    let best: { route: Route; match: PatternMatch } | null = null;
    for (const candidate of matches) {
      const { route, match } = candidate;
      const samePlace = matches
        .filter((other) => other.match.shape === match.shape)
        .map((other) => other.route);
      if (!takesMethod(route, request.method, samePlace)) {
        for (const method of route.methods) allow.add(method);
        continue;
      }
      if (best === null || compareRanks(match.rank, best.match.rank) < 0) {
        best = candidate;
      } else if (compareRanks(match.rank, best.match.rank) === 0) {
        assert.equal(best.route, route, 'two routes tie, so build must reject them');
      }
    }
    if (best !== null) {
      return { kind: 'found', route: best.route.name, params: sortParams(best.match.params) };
    }
  }
  if (allow.has('GET')) allow.add('HEAD');
  return allow.size > 0
    ? { kind: 'method-not-allowed', allow: [...allow].sort() }
    : { kind: 'not-found' };
}

/** Returns the pair of routes that would match the same requests, or null. */
export function referenceConflict(routes: Route[]): [string, string] | null {
  const seen: {
    route: string;
    host: string;
    shape: string;
    pattern: string;
    methods: readonly string[];
  }[] = [];
  for (const route of routes) {
    const hosts = route.hosts.length === 0 ? ['(any)'] : [...new Set(route.hosts.map(routeHost))];
    for (const host of hosts) {
      for (const pattern of new Set(route.paths)) {
        for (const variant of expandPattern(pattern)) {
          const shape = shapeOf(variant.segments);
          for (const other of seen) {
            const overlap =
              route.methods.length === 0 ||
              other.methods.length === 0 ||
              route.methods.some((method) => other.methods.includes(method));
            const samePath = other.route === route.name && other.pattern === pattern;
            if (other.host === host && other.shape === shape && overlap && !samePath) {
              return [other.route, route.name];
            }
          }
          seen.push({ route: route.name, host, shape, pattern, methods: route.methods });
        }
      }
    }
  }
  return null;
}

export function toOutcome(match: RouterMatch<string>): Outcome {
  switch (match.kind) {
    case 'found':
      assert.equal(match.value, match.route);
      return {
        kind: 'found',
        route: match.route,
        params: sortParams(Object.entries(match.params)),
      };
    case 'method-not-allowed':
      return { kind: 'method-not-allowed', allow: match.allow };
    case 'not-found':
      return { kind: 'not-found' };
    case 'bad-request':
      return { kind: 'bad-request' };
  }
}

export function sortParams(params: [string, string][]): [string, string][] {
  return [...params].sort(([a], [b]) => {
    if (a < b) return -1;
    return a > b ? 1 : 0;
  });
}

export function shuffle<T>(items: T[], seed: number): T[] {
  const copy = [...items];
  let state = seed >>> 0;
  for (let i = copy.length - 1; i > 0; i--) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const j = state % (i + 1);
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

export function orders(routes: Route[], seed: number): Route[][] {
  return [routes, [...routes].reverse(), shuffle(routes, seed)];
}

/** Builds the routes, returning the rejection instead of throwing it. */
export function tryBuild(routes: Route[]): Router<string> | LoomError {
  try {
    return buildRouter(routes);
  } catch (error) {
    assert.ok(error instanceof LoomError, String(error));
    assert.equal(error.code, 'LOOM_SNAPSHOT_REJECTED');
    return error;
  }
}

/** Drops every route that conflicts with an earlier one. */
export function withoutConflicts(routes: Route[]): Route[] {
  const accepted: Route[] = [];
  for (const route of routes) {
    if (referenceConflict([...accepted, route]) === null) accepted.push(route);
  }
  return accepted;
}

// Generators. The small alphabet makes routes collide often; the wide one
// gives tree nodes more static children than a linear scan handles.

export const SMALL_ALPHABET = ['a', 'b', 'ab', ''];
export const WIDE_ALPHABET = [...'abcdefghijkl', 'ab', ''];
/** More than eight texts start with "s", so a node looks them up by hash, not by bucket. */
export const CROWDED_ALPHABET = [...'abcdefghijk']
  .map((letter) => 's' + letter)
  .concat(['s', 'x', '']);

/**
 * Mixed segments built from a few short texts, so that shapes collide, tie on
 * the precedence keys, and overlap on the same request segments.
 */
export const MIXED_TEMPLATES = [
  ':P.a',
  'v:P',
  'a:P',
  ':P-b',
  ':P.:Q',
  ':P-:Q',
  'v:P.:Q',
  ':P.a.b',
  ':P::b',
  ':P.',
  '.:P',
];

export function patternArbitrary(statics: string[]): fc.Arbitrary<string> {
  const segment = fc.tuple(
    fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(...statics) },
      { weight: 1, arbitrary: fc.constantFrom(':', ':', '*', '**') },
      { weight: 1, arbitrary: fc.constantFrom(...MIXED_TEMPLATES) },
    ),
    fc.constantFrom('p', 'q'),
  );
  return fc.array(segment, { minLength: 1, maxLength: 3 }).map((segments) => {
    const parts: string[] = [];
    for (const [kind, name] of segments) {
      if (kind === '*' || kind === '**') {
        parts.push(name === 'p' ? `${kind}rest` : kind);
        break;
      }
      if (kind === ':') parts.push(`:${name}${parts.length}`);
      else if (kind.includes(':')) {
        parts.push(kind.replace('P', `${name}${parts.length}`).replace('Q', `z${parts.length}`));
      } else parts.push(kind);
    }
    return '/' + parts.join('/');
  });
}

export function routeSetArbitrary(
  statics: string[],
  minRoutes: number,
  maxRoutes: number,
): fc.Arbitrary<Route[]> {
  const route = fc.record({
    hosts: fc.oneof(
      fc.constant([]),
      fc.subarray(['a.com', 'x.a.com', '*.a.com', 'A.com.', '*.x.a.com'], { minLength: 1 }),
    ),
    methods: fc.oneof(
      fc.constant([]),
      fc.subarray(['GET', 'HEAD', 'POST', 'PUT'], { minLength: 1, maxLength: 2 }),
    ),
    paths: fc.array(patternArbitrary(statics), { minLength: 1, maxLength: 2 }),
  });
  return fc
    .array(route, { minLength: minRoutes, maxLength: maxRoutes })
    .map((specs) => specs.map((spec, i): Route => ({ name: `r${i}`, value: `r${i}`, ...spec })));
}

export function requestArbitrary(statics: string[]): fc.Arbitrary<Request> {
  return fc.record({
    method: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE'),
    host: fc.constantFrom(
      undefined,
      '',
      'a.com',
      'A.COM:80',
      'a.com.',
      'x.a.com',
      'X.a.com.:8080',
      'y.x.a.com',
      'z.y.x.a.com',
      'other.com',
      '[::1]:80',
    ),
    path: fc.oneof(
      { weight: 20, arbitrary: requestPathArbitrary(statics) },
      { weight: 1, arbitrary: fc.constantFrom('*', '', 'a', 'a/b') },
    ),
  });
}

/** Request segments that the mixed templates match in one or more ways. */
export const MIXED_REQUEST_SEGMENTS = [
  'x.a',
  'a.a',
  '.a',
  'a.',
  'v1',
  'v.a',
  'va.a',
  'vb.a.b',
  'a-b',
  'a-b.a',
  'x.y-b',
  'x-y.z',
  'a.a.b',
  'b.a.a.b',
  'ab',
  'a:b',
  'x:b',
  'va.',
  'v.',
  '.v.',
  'v%2F.a',
  'a%2Eb',
];

export function requestPathArbitrary(statics: string[]): fc.Arbitrary<string> {
  const segment = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...statics, 'abc', 'A') },
    { weight: 4, arbitrary: fc.constantFrom(...MIXED_REQUEST_SEGMENTS) },
    { weight: 2, arbitrary: fc.constantFrom('.', '..', '%61', '%2e', '%2E%2e', 'a%62') },
    { weight: 1, arbitrary: fc.constantFrom('%2F', '%2f', '%C3%A9', '%252F', '%zz', '%E9') },
    { weight: 1, arbitrary: fc.constantFrom('..;a', '.%3B', 'a\\b', '%5c', '%00', 'a;b') },
  );
  return fc.array(segment, { maxLength: 4 }).map((segments) => '/' + segments.join('/'));
}
