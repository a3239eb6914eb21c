import { LoomError } from '../common/errors.js';
import { parseHostPattern } from '../data-plane/router/host.js';
import { parsePattern, type PatternSegment } from '../data-plane/router/pattern.js';
import type { Route } from '../proto/gen/loom/v1/config.js';
import { describePatternLimit } from './limits.js';

/** Two routes that match the same requests, as the router would reject them. */
export interface RouteConflict {
  /** Index (in the checked list) of the route declared first. */
  first: number;
  /** Index of the route declared later; the issue points at it. */
  second: number;
  firstPath: string;
  secondPath: string;
  /** `host "a.com"`, `host "*.a.com"` or `any host`. */
  host: string;
  /** `any method` or `method GET`. */
  method: string;
}

/** A route that no request can reach, with the routes that take its requests first. */
export interface ShadowedRoute {
  index: number;
  /** Names of the routes that win every request the shadowed route matches. */
  by: string[];
}

/** One path of one route on one host class. */
interface Entry {
  index: number;
  path: string;
  methods: readonly string[];
}

/** Stands for "every method": a route without methods. */
const ANY = '';

/**
 * Finds every pair of routes that the router rejects as a conflict: the same
 * host (or both any host), the same path pattern up to param names, and an
 * overlapping method (a route without methods overlaps every method). Routes
 * with an invalid host or path are skipped; the caller reports those. The
 * result lists each pair once, in declaration order.
 */
export function findConflicts(routes: readonly Route[]): RouteConflict[] {
  const groups = new Map<string, Entry[]>();
  const conflicts: RouteConflict[] = [];
  const reported = new Set<string>();

  routes.forEach((route, index) => {
    for (const [hostKey, host] of hostClasses(route)) {
      for (const [shape, path] of pathShapes(route)) {
        const key = `${hostKey}\n${shape}`;
        const entry: Entry = { index, path, methods: route.methods };
        const group = groups.get(key) ?? [];
        for (const other of group) {
          const method = overlappingMethod(other.methods, entry.methods);
          const pair = `${other.index}/${index}`;
          if (method === undefined || reported.has(pair)) continue;
          reported.add(pair);
          conflicts.push({
            first: other.index,
            second: index,
            firstPath: other.path,
            secondPath: path,
            host,
            method: method === ANY ? 'any method' : `method ${method}`,
          });
        }
        group.push(entry);
        groups.set(key, group);
      }
    }
  });
  return conflicts;
}

/**
 * Finds routes that can never match. The router picks, per request, the
 * first host class with a route for the path and the method (exact host,
 * then the wildcard, then any host), and within a class the route whose
 * segments read left to right come first in the order static, mixed
 * (`:name.json`), param, catch-all. A path that ends in a static, mixed or
 * param segment is the most specific pattern for the requests it matches,
 * and a host class covers hosts no other class lists, so only a catch-all
 * path can lose every request: when, for each of its methods, a param route
 * takes every non-empty next segment and routes under an empty segment take
 * the rest. A route is reported when every path on every host it lists is
 * covered that way. Same-host, same-path routes with overlapping methods are
 * conflicts, which `findConflicts` reports as errors.
 */
export function findShadowedRoutes(routes: readonly Route[]): ShadowedRoute[] {
  const parsed = routes.map((route) => ({
    classes: hostClasses(route),
    paths: parsedPaths(route),
  }));
  // Only a path that ends in a catch-all can be shadowed, so without one the tries, a few Maps
  // per path segment, need not be built.
  if (!parsed.some(({ paths }) => paths.some(endsInCatchAll))) return [];

  const trees = new Map<string, TrieNode>();
  const catchAlls: TrieNode[][] = routes.map(() => []);
  const entryCounts: number[] = [];
  routes.forEach((route, index) => {
    const { classes, paths } = parsed[index];
    entryCounts.push(classes.length * paths.length);
    for (const [hostKey] of classes) {
      let tree = trees.get(hostKey);
      if (!tree) trees.set(hostKey, (tree = new TrieNode()));
      for (const segments of paths) {
        const node = tree.insert(segments, route.name, route.methods);
        const last = segments.at(-1);
        // `/a/**` also matches `/a` itself, which only a conflicting route could take.
        const parentToo = last?.kind === 'catch-all' && last.includesParent && segments.length > 1;
        if (last?.kind === 'catch-all' && !parentToo) catchAlls[index].push(node);
      }
    }
  });

  const shadowed: ShadowedRoute[] = [];
  routes.forEach((route, index) => {
    const entries = catchAlls[index];
    if (entries.length === 0 || entries.length !== entryCounts[index]) return;

    const by = new Set<string>();
    const methods = route.methods.length === 0 ? [ANY] : route.methods;
    const covered = entries.every((node) =>
      methods.every((method) => node.coversAllBelow(method, by)),
    );
    // A path covered partly by the route's own other paths still matches through them.
    if (covered && !by.has(route.name)) shadowed.push({ index, by: [...by].sort() });
  });
  return shadowed;
}

function endsInCatchAll(segments: PatternSegment[]): boolean {
  return segments.at(-1)?.kind === 'catch-all';
}

/** Routes that end at one place of a trie: one for any method, or one per method. */
class Slot {
  any: string | undefined;
  /** Created on the first route with methods, so that slots without such a route hold no Map. */
  byMethod: Map<string, string> | undefined;

  add(route: string, methods: readonly string[]): void {
    if (methods.length === 0) {
      this.any ??= route;
      return;
    }
    const byMethod = (this.byMethod ??= new Map());
    for (const method of methods) if (!byMethod.has(method)) byMethod.set(method, route);
  }

  /** Returns the route that takes `method`, where a route without methods takes every method. */
  routeFor(method: string): string | undefined {
    if (method === ANY) return this.any;
    return this.any ?? this.byMethod?.get(method);
  }
}

/**
 * The path patterns of one host class, by segment kind, as the router's tree
 * stores them. Mixed segments (`:name.json`) are static children keyed by
 * their shape: each covers only some segment values, like static text.
 */
class TrieNode {
  /** Created on the first static child, so that leaves (at least one per path) hold no Map. */
  statics: Map<string, TrieNode> | undefined;
  param: TrieNode | undefined;
  readonly end = new Slot();
  readonly catchAll = new Slot();

  /** Adds a pattern and returns the node its catch-all (if any) hangs from. */
  insert(segments: PatternSegment[], route: string, methods: readonly string[]): TrieNode {
    // A loop, not recursion, because the depth is the pattern's segment count.
    // A catch-all can only be the last segment.
    const last = segments.at(-1);
    const walked = last?.kind === 'catch-all' ? segments.slice(0, -1) : segments;
    const node = walked.reduce<TrieNode>((parent, segment) => parent.#childFor(segment), this);
    (last?.kind === 'catch-all' ? node.catchAll : node.end).add(route, methods);
    return node;
  }

  /**
   * Returns whether routes other than this node's catch-all take every path
   * below this node for `method`, adding their names to `by`. A param child
   * covers every non-empty next segment when a route ends there and
   * everything below it is covered; an empty next segment needs the same from
   * the static child with empty text.
   */
  coversAllBelow(method: string, by: Set<string>): boolean {
    return (
      coversThrough(this.param, method, by) && coversThrough(this.statics?.get(''), method, by)
    );
  }

  #childFor(segment: PatternSegment): TrieNode {
    if (segment.kind === 'static') return this.#child(segment.text);
    if (segment.kind === 'mixed') return this.#child(`~${segment.mixed.shape}`);
    // A param: `insert` stops before a catch-all, so none arrives here.
    return (this.param ??= new TrieNode());
  }

  #child(text: string): TrieNode {
    const statics = (this.statics ??= new Map());
    let child = statics.get(text);
    if (!child) statics.set(text, (child = new TrieNode()));
    return child;
  }
}

/** Returns whether `node` ends a route for `method` and covers everything below it. */
function coversThrough(node: TrieNode | undefined, method: string, by: Set<string>): boolean {
  const endRoute = node?.end.routeFor(method);
  if (!node || endRoute === undefined) return false;

  const catchAllRoute = node.catchAll.routeFor(method);
  const below = catchAllRoute !== undefined || node.coversAllBelow(method, by);
  if (!below) return false;
  by.add(endRoute);
  if (catchAllRoute !== undefined) by.add(catchAllRoute);
  return true;
}

/** Returns the host classes of a route as [tree key, label for messages]; invalid hosts are skipped. */
function hostClasses(route: Route): [string, string][] {
  if (route.hosts.length === 0) return [['any', 'any host']];

  const classes = new Map<string, string>();
  for (const raw of route.hosts) {
    try {
      const host = parseHostPattern(route.name, raw);
      if (host.kind === 'exact') classes.set(`exact:${host.name}`, `host "${host.name}"`);
      else classes.set(`wildcard:${host.suffix}`, `host "*.${host.suffix}"`);
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
    }
  }
  return [...classes];
}

/**
 * Returns each valid path of a route as its segments, one per distinct
 * pattern. Paths over the limits are skipped, which bounds the recursion of
 * `coversAllBelow` by `MAX_PATTERN_SEGMENTS`.
 */
function parsedPaths(route: Route): PatternSegment[][] {
  const byKey = new Map<string, PatternSegment[]>();
  for (const source of route.paths) {
    if (describePatternLimit(source)) continue;
    try {
      const pattern = parsePattern(route.name, source);
      if (!byKey.has(pattern.key)) byKey.set(pattern.key, pattern.segments);
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
    }
  }
  return [...byKey.values()];
}

/**
 * Returns each valid path of a route with its shape: the pattern with param
 * and catch-all names dropped, so `/u/:id` and `/u/:name` share a shape.
 */
function pathShapes(route: Route): [string, string][] {
  const shapes = new Map<string, string>();
  for (const source of route.paths) {
    try {
      const { segments } = parsePattern(route.name, source);
      const shape = segments.map(segmentShape);
      // `/a/**` also ends at `/a`, so it conflicts with a route that ends there.
      const last = segments.at(-1);
      if (last?.kind === 'catch-all' && last.includesParent && segments.length > 1) {
        const parent = shape.slice(0, -1).join('/');
        if (!shapes.has(parent)) shapes.set(parent, source);
      }
      const key = shape.join('/');
      if (!shapes.has(key)) shapes.set(key, source);
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
    }
  }
  return [...shapes];
}

function segmentShape(segment: PatternSegment): string {
  switch (segment.kind) {
    case 'static':
      return `=${segment.text}`;
    case 'param':
      return ':';
    case 'mixed':
      return `~${segment.mixed.shape}`;
    case 'catch-all':
      return '*';
  }
}

/** Returns a method both lists match (ANY when both match every method), or undefined. */
function overlappingMethod(a: readonly string[], b: readonly string[]): string | undefined {
  if (a.length === 0 && b.length === 0) return ANY;
  if (a.length === 0) return b[0];
  if (b.length === 0) return a[0];
  return a.find((method) => b.includes(method));
}
