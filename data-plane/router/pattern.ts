import { LoomError } from '../../common/errors.js';
import { createMixedSegment, type MixedSegment } from './mixed-segment.js';
import { isUnreserved, MAX_PATH_LENGTH, normalizePercentEncoding } from './path.js';

export type { MixedSegment };

/** One segment of a path pattern, between two slashes. */
export type PatternSegment =
  | { kind: 'static'; text: string }
  | { kind: 'param'; name: string }
  | { kind: 'mixed'; mixed: MixedSegment }
  /**
   * The rest of the path: `*name` or `*`. With `**name` or `**`
   * (`includesParent`), the pattern also matches the path up to the segment
   * before, without the trailing slash.
   */
  | { kind: 'catch-all'; name: string; includesParent: boolean };

/** A validated path pattern. */
export interface PathPattern {
  /** The pattern as the route wrote it. */
  readonly source: string;
  /**
   * The pattern with static text in normalized form and params as `{name}`.
   * Two patterns of one route with the same key match the same requests and
   * yield the same params.
   */
  readonly key: string;
  readonly segments: PatternSegment[];
  /** Names of the params in path order, the catch-all last. */
  readonly names: readonly string[];
  /** True when every segment is static, so the pattern matches exactly one path. */
  readonly isStatic: boolean;
}

const NO_NAMES: readonly string[] = Object.freeze([]);

class ParsedPattern implements PathPattern {
  readonly source: string;
  readonly segments: PatternSegment[];
  readonly names: readonly string[];
  readonly isStatic: boolean;

  constructor(source: string, segments: PatternSegment[], names: readonly string[]) {
    this.source = source;
    this.segments = segments;
    this.names = names;
    this.isStatic = names.length === 0;
  }

  // Computed on demand: a build needs it only for routes with several paths.
  get key(): string {
    return '/' + this.segments.map(formatSegment).join('/');
  }
}

const COLON = 0x3a;
const STAR = 0x2a;

/**
 * Characters allowed unescaped in the static text of a pattern: RFC 3986
 * pchar except `:` (which starts a param) and `*`, plus `%` (checked by
 * normalizePercentEncoding). A table, because a pattern is scanned one
 * character at a time and a 100,000-route build scans millions.
 */
const STATIC_CHARACTERS = new Uint8Array(128);
for (let code = 0; code < 128; code++) {
  if (isUnreserved(code) || "%@!$&'()+,;=".includes(String.fromCharCode(code))) {
    STATIC_CHARACTERS[code] = 1;
  }
}

/**
 * A static segment of unreserved and sub-delimiter characters only, which needs
 * neither normalization nor a check per character. One native regular
 * expression test per segment measured faster on Node 20 than the loop over
 * `STATIC_CHARACTERS` that other segments go through.
 */
const PLAIN_STATIC_SEGMENT = /^[A-Za-z0-9\-._~@!$&'()+,;=]*$/;
/**
 * Maximum number of segments in a path pattern. Far above what real routes use, it bounds the
 * depth of the trees that validation and the router build.
 */
export const MAX_PATTERN_SEGMENTS = 1024;
/** Characters of an over-long pattern quoted in its error message. */
const QUOTED_PATTERN_CHARS = 64;

/** A segment that is one whole param, `:name`. */
const PARAM_SEGMENT = /^:[A-Za-z0-9_]+$/;

/**
 * Parses and validates one path pattern. A pattern starts with `/`. Each
 * segment is static text, a param `:name`, or static text and params mixed
 * (`:name.json`, `v:version`, `:base.:ext`), where `::` is a literal `:`. The
 * last segment may also be a catch-all `*name` (bare `*` names the param `*`)
 * or a prefix catch-all `**name` (bare `**` also names it `*`). Static text is
 * percent-normalized like a request path, so `/%61` and `/a` are one pattern.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` naming the route, the pattern and the fix.
 */
export function parsePattern(routeName: string, source: string): PathPattern {
  // loomctl rejects such patterns, but one written into the store around it reaches proxies.
  // There a pattern of 600,000 segments blocked the event loop for 2.4 s in one build step.
  if (source.length > MAX_PATH_LENGTH) {
    rejectLong(
      routeName,
      source,
      `at most ${MAX_PATH_LENGTH} characters are allowed, because proxies reject longer request paths`,
    );
  }
  if (source.charCodeAt(0) !== 0x2f) reject(routeName, source, 'a pattern must start with "/"');
  if (source.includes('?') || source.includes('#')) {
    reject(
      routeName,
      source,
      '"?" and "#" are not allowed because a pattern matches the path only',
    );
  }

  // The segments come from indexOf and slice: on Node 20, split took about twice as long, and
  // a large build parses every pattern. The list is not kept after the build.
  const segments: PatternSegment[] = [];
  let names: string[] | null = null;
  for (let start = 1; ;) {
    const end = source.indexOf('/', start);
    const last = end === -1;
    const part = last ? source.slice(start) : source.slice(start, end);
    const segment = parseSegment(routeName, source, part, last);
    // Most segments are static or one param, which need no list of their names.
    if (segment.kind === 'mixed') {
      for (const name of segment.mixed.names) names = addName(routeName, source, names, name);
    } else if (segment.kind !== 'static') {
      names = addName(routeName, source, names, segment.name);
    }
    segments.push(segment);
    if (last) break;
    if (segments.length === MAX_PATTERN_SEGMENTS) {
      rejectLong(
        routeName,
        source,
        `at most ${MAX_PATTERN_SEGMENTS} segments are allowed; end the path with a catch-all such as /**`,
      );
    }
    start = end + 1;
  }
  return new ParsedPattern(source, segments, names === null ? NO_NAMES : names);
}

/** Appends a param name to a pattern's names, rejecting a name that is already there. */
function addName(
  routeName: string,
  source: string,
  names: string[] | null,
  name: string,
): string[] {
  if (names === null) return [name];
  if (names.includes(name)) reject(routeName, source, `parameter name "${name}" appears twice`);
  names.push(name);
  return names;
}

function reject(routeName: string, source: string, reason: string): never {
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(routeName)}: invalid path pattern ${JSON.stringify(source)}: ${reason}`,
  );
}

/** Rejects a pattern over a size limit, quoting only its start. */
function rejectLong(routeName: string, source: string, reason: string): never {
  const quoted = JSON.stringify(source.slice(0, QUOTED_PATTERN_CHARS));
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(routeName)}: invalid path pattern starting ${quoted} ` +
      `(${source.length} characters): ${reason}`,
  );
}

/**
 * Formats a segment for a pattern key. Params become `{name}` because `{` is
 * never in static text, while a literal `:` can be.
 */
function formatSegment(segment: PatternSegment): string {
  switch (segment.kind) {
    case 'static':
      return segment.text;
    case 'param':
      return `{${segment.name}}`;
    case 'mixed': {
      const { prefix, separators, suffix, names } = segment.mixed;
      let text = prefix;
      for (let i = 0; i < names.length; i++) {
        text += (i === 0 ? '' : separators[i - 1]) + `{${names[i]}}`;
      }
      return text + suffix;
    }
    case 'catch-all':
      return `{${segment.includesParent ? '**' : '*'}${segment.name}}`;
  }
}

function parseSegment(
  routeName: string,
  source: string,
  part: string,
  last: boolean,
): PatternSegment {
  // Most segments are plain text or one whole param; they skip the general parser below.
  // Plain text never starts with `:` or `*`, so those skip its regular expression.
  const first = part.charCodeAt(0);
  if (first === COLON) {
    if (PARAM_SEGMENT.test(part)) return { kind: 'param', name: part.slice(1) };
  } else if (first === STAR) {
    return parseCatchAll(routeName, source, part, last);
  } else {
    if (PLAIN_STATIC_SEGMENT.test(part)) return plainStatic(routeName, source, part);
    if (part.indexOf(':') === -1) return parseStatic(routeName, source, part);
  }

  // Static texts between params: the prefix, each separator, then the suffix.
  const texts: string[] = [];
  const names: string[] = [];
  let text = '';
  let runStart = 0;
  for (let i = 0; i < part.length; i++) {
    const code = part.charCodeAt(i);
    if (code === COLON) {
      text += part.slice(runStart, i);
      if (part.charCodeAt(i + 1) === COLON) {
        text += ':';
        runStart = ++i + 1;
        continue;
      }
      let end = i + 1;
      while (end < part.length && isNameCharacter(part.charCodeAt(end))) end++;
      if (end === i + 1) {
        reject(
          routeName,
          source,
          `empty parameter name after ":" in segment "${part}"; write ":name", or "::" for a literal ":"`,
        );
      }
      if (names.length > 0 && text === '') {
        reject(
          routeName,
          source,
          `parameters in segment "${part}" must be separated by static text, as in ":base.:ext"`,
        );
      }
      texts.push(normalizeStaticText(routeName, source, part, text));
      names.push(part.slice(i + 1, end));
      text = '';
      runStart = end;
      i = end - 1;
      continue;
    }
    checkStaticCharacter(routeName, source, part, i);
  }
  text += part.slice(runStart);
  texts.push(normalizeStaticText(routeName, source, part, text));

  // Only `::` brings a segment without params here, as in `things::batch` for `things:batch`.
  if (names.length === 0) return { kind: 'static', text: texts[0] };
  return { kind: 'mixed', mixed: createMixedSegment(texts, names) };
}

function parseStatic(routeName: string, source: string, part: string): PatternSegment {
  for (let i = 0; i < part.length; i++) checkStaticCharacter(routeName, source, part, i);
  return plainStatic(routeName, source, normalizeStaticText(routeName, source, part, part), part);
}

/** Returns a static segment for text in normalized form, rejecting a dot segment. */
function plainStatic(
  routeName: string,
  source: string,
  text: string,
  part: string = text,
): PatternSegment {
  if (text === '.' || text === '..') {
    reject(
      routeName,
      source,
      `dot segment "${part}" never matches because request paths are resolved first`,
    );
  }
  return { kind: 'static', text };
}

function checkStaticCharacter(routeName: string, source: string, part: string, i: number): void {
  const code = part.charCodeAt(i);
  if (code === STAR) {
    reject(
      routeName,
      source,
      `segment "${part}" mixes text with "*"; a catch-all is a whole last segment such as "*rest" or "**"`,
    );
  }
  if (code >= 128 || STATIC_CHARACTERS[code] === 0) {
    reject(
      routeName,
      source,
      `character ${JSON.stringify(part[i])} in segment "${part}" must be percent-encoded`,
    );
  }
}

function parseCatchAll(
  routeName: string,
  source: string,
  part: string,
  last: boolean,
): PatternSegment {
  if (!last) reject(routeName, source, `catch-all "${part}" must be the last segment`);
  const includesParent = part.charCodeAt(1) === STAR;
  const name = part.slice(includesParent ? 2 : 1);
  if (name === '') return { kind: 'catch-all', name: '*', includesParent };

  for (let i = 0; i < name.length; i++) {
    if (!isNameCharacter(name.charCodeAt(i))) {
      reject(
        routeName,
        source,
        `invalid catch-all name "${name}" in "${part}"; a name uses only letters, digits and "_"`,
      );
    }
  }
  return { kind: 'catch-all', name, includesParent };
}

function normalizeStaticText(
  routeName: string,
  source: string,
  part: string,
  text: string,
): string {
  const normalized = normalizePercentEncoding(text);
  if (normalized === null) {
    reject(routeName, source, `segment "${part}" has invalid percent-encoding or invalid UTF-8`);
  }
  return normalized;
}

/** Returns whether a character may appear in a param name: letters, digits and `_`. */
function isNameCharacter(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x5f
  );
}
