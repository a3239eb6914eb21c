import { LoomError } from '../common/errors.js';
import { matchMixedSegment } from '../data-plane/router/mixed-segment.js';
import { parsePattern, type PatternSegment } from '../data-plane/router/pattern.js';
import type { Route } from '../proto/gen/loom/v1/config.js';
import { describePatternLimit } from './limits.js';
import { normalizePathPrefix } from './normalize.js';

/** Reach of a stripPrefix over the requests that one path pattern matches. */
type StripReach =
  /** To no request: some prefix segment never equals the pattern's segment there. */
  | { kind: 'never' }
  /** Only when the params it spans have the prefix's values, such as `/p/:id` with `/p/a`. */
  | { kind: 'param'; names: string[] }
  /** To every request, or to those under a catch-all, which is the usual way to use a prefix. */
  | { kind: 'always' };

/**
 * Returns a warning message when a route's stripPrefix cannot apply to the
 * requests its paths match: the proxy strips the prefix only from a
 * normalised request path that starts with it at a segment boundary, matching
 * case. Returns a message too when the prefix applies only for one value of a
 * param on every path. Returns undefined otherwise, and for a route whose
 * paths or prefix are invalid, which validation reports.
 */
export function findUnusedStripPrefix(route: Route): string | undefined {
  const prefix = normalizePathPrefix(route.stripPrefix);
  if (prefix === undefined) return undefined;

  const prefixSegments = prefix.slice(1).split('/');
  const reaches: StripReach[] = [];
  for (const path of route.paths) {
    const segments = parsedSegments(route.name, path);
    if (segments === undefined) return undefined;
    reaches.push(stripReach(prefixSegments, segments));
  }
  if (reaches.some((reach) => reach.kind === 'always')) return undefined;

  const params = reaches.flatMap((reach) => (reach.kind === 'param' ? reach.names : []));
  if (params.length > 0) {
    const names = [...new Set(params)].map((name) => `:${name}`).join(', ');
    return (
      `strips only requests whose ${names} equals the prefix's segment there; ` +
      'use a prefix of static segments, or remove stripPrefix'
    );
  }
  const hint = route.paths.some((path) => path.toLowerCase().startsWith(prefix.toLowerCase()))
    ? ' (prefixes match case-sensitively)'
    : '';
  return (
    `never applies: no request the route's paths match starts with this prefix${hint}; ` +
    'use a prefix that starts the paths, such as the static segments before a catch-all'
  );
}

function parsedSegments(routeName: string, path: string): PatternSegment[] | undefined {
  if (describePatternLimit(path)) return undefined;
  try {
    return parsePattern(routeName, path).segments;
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    return undefined;
  }
}

/** Compares the prefix segment by segment with one pattern. */
function stripReach(prefix: string[], pattern: PatternSegment[]): StripReach {
  const names: string[] = [];
  for (let i = 0; i < prefix.length; i++) {
    const segment = pattern[i];
    // The pattern ends before the prefix does, so every request it matches is shorter.
    if (segment === undefined) return { kind: 'never' };

    switch (segment.kind) {
      case 'catch-all':
        return names.length === 0 ? { kind: 'always' } : { kind: 'param', names };
      case 'static':
        if (segment.text !== prefix[i]) return { kind: 'never' };
        break;
      case 'param':
        names.push(segment.name);
        break;
      case 'mixed':
        if (!matchMixedSegment(segment.mixed, prefix[i], 0, prefix[i].length, null, 0)) {
          return { kind: 'never' };
        }
        names.push(...segment.mixed.names);
        break;
    }
  }
  return names.length === 0 ? { kind: 'always' } : { kind: 'param', names };
}
