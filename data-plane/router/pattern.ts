import { LoomError } from '../../common/errors.js';
import { isUnreserved, normalizePercentEncoding } from './path.js';

/** One segment of a path pattern, between two slashes. */
export type PatternSegment =
  | { kind: 'static'; text: string }
  | { kind: 'param'; name: string }
  | { kind: 'catch-all'; name: string };

/** A validated path pattern. */
export interface PathPattern {
  /** The pattern as the route wrote it. */
  source: string;
  /**
   * The pattern with static segments in normalized form. Two patterns of one
   * route with the same key match the same requests and yield the same params.
   */
  key: string;
  segments: PatternSegment[];
  /** True when every segment is static, so the pattern matches exactly one path. */
  isStatic: boolean;
}

const PARAM_NAME = /^[A-Za-z0-9_]+$/;

/**
 * Parses and validates one path pattern. A pattern starts with `/`, and each
 * segment is static text or `:name`. The last segment may also be a catch-all
 * `*name`, or a bare `*` whose param is named `*`. Static text is
 * percent-normalized like a request path, so `/%61` and `/a` are one pattern.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` naming the route, the pattern and the fix.
 */
export function parsePattern(routeName: string, source: string): PathPattern {
  const reject = (reason: string): never => {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `route ${JSON.stringify(routeName)}: invalid path pattern ${JSON.stringify(source)}: ${reason}`,
    );
  };

  if (!source.startsWith('/')) reject('a pattern must start with "/"');
  if (source.includes('?') || source.includes('#')) {
    reject('"?" and "#" are not allowed because a pattern matches the path only');
  }

  const parts = source.slice(1).split('/');
  const segments: PatternSegment[] = [];
  const names = new Set<string>();
  for (let i = 0; i < parts.length; i++) {
    const segment = parseSegment(parts[i], i === parts.length - 1, reject);
    if (segment.kind !== 'static') {
      if (names.has(segment.name)) reject(`parameter name "${segment.name}" appears twice`);
      names.add(segment.name);
    }
    segments.push(segment);
  }

  return {
    source,
    key: '/' + segments.map(formatSegment).join('/'),
    segments,
    isStatic: names.size === 0,
  };
}

/** Formats a segment as a pattern writes it, static text in normalized form. */
export function formatSegment(segment: PatternSegment): string {
  if (segment.kind === 'static') return segment.text;
  return segment.kind === 'param' ? ':' + segment.name : '*' + segment.name;
}

function parseSegment(
  part: string,
  last: boolean,
  reject: (reason: string) => never,
): PatternSegment {
  if (part.startsWith(':')) {
    const name = part.slice(1);
    if (name === '') reject('empty parameter name after ":"; write ":name"');
    checkParamName(name, reject);
    return { kind: 'param', name };
  }

  if (part.startsWith('*')) {
    if (!last) reject(`catch-all "${part}" must be the last segment`);
    if (part.length === 1) return { kind: 'catch-all', name: '*' };
    const name = part.slice(1);
    checkParamName(name, reject);
    return { kind: 'catch-all', name };
  }

  return { kind: 'static', text: parseStaticText(part, reject) };
}

function checkParamName(name: string, reject: (reason: string) => never): void {
  if (!PARAM_NAME.test(name)) {
    reject(
      `invalid parameter name "${name}"; a parameter is a whole segment and its name uses ` +
        'only letters, digits and "_" (mixed segments such as "v:version" are not supported)',
    );
  }
}

function parseStaticText(part: string, reject: (reason: string) => never): string {
  for (let i = 0; i < part.length; i++) {
    const code = part.charCodeAt(i);
    if (code === 0x3a || code === 0x2a) {
      reject(
        `segment "${part}" mixes text with "${part[i]}"; parameters and catch-alls must be ` +
          'whole segments, and mixed segments such as "v:version" are not supported',
      );
    }
    if (!isPatternCharacter(code)) {
      reject(`character ${JSON.stringify(part[i])} in segment "${part}" must be percent-encoded`);
    }
  }

  const text = normalizePercentEncoding(part);
  if (text === null) reject(`segment "${part}" has invalid percent-encoding or invalid UTF-8`);
  if (text === '.' || text === '..') {
    reject(`dot segment "${part}" never matches because request paths are resolved first`);
  }
  return text as string;
}

/** Returns whether a character may appear unescaped in static text: RFC 3986 pchar, or `%`. */
function isPatternCharacter(code: number): boolean {
  if (isUnreserved(code)) return true;
  // `%` (validated by normalizePercentEncoding), `@`, and the sub-delims except `*`.
  return "%@!$&'()+,;=".includes(String.fromCharCode(code));
}
