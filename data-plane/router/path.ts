import type { RouterMatch } from './types.js';

/** Maximum length of a request path, in UTF-16 code units; longer paths are bad requests. */
export const MAX_PATH_LENGTH = 8192;

/** The `bad-request` variant of a lookup result. */
export type BadRequest = Extract<RouterMatch<never>, { kind: 'bad-request' }>;

const SLASH = 0x2f;
const DOT = 0x2e;
const HEX_DIGITS = '0123456789ABCDEF';

const PATH_TOO_LONG: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: `path longer than ${MAX_PATH_LENGTH} characters`,
});
const PATH_NOT_ABSOLUTE: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'path must start with "/"',
});
const INVALID_ENCODING: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'invalid percent-encoding or invalid UTF-8 in path',
});
const ABOVE_ROOT: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'dot segment ".." climbs above the root',
});
const BACKSLASH: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'backslash ("\\" or "%5C") in path',
});
const FRAGMENT: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'fragment ("#") in request target',
});
const NUL: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'NUL byte ("%00") in path',
});
const DOT_SEGMENT_PARAMETER: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'dot segment with a path parameter (such as "..;") in path',
});
const ENCODED_DOT_SEGMENT: BadRequest = Object.freeze({
  kind: 'bad-request',
  reason: 'dot segment next to an encoded slash (such as "..%2F") in path',
});

/**
 * Puts a raw request path (no query string) in the form the router matches:
 * percent-encoded unreserved characters decoded, other escapes upper-cased, and
 * dot segments removed as RFC 3986 section 5.2.4 describes. Empty segments and
 * case are kept. Returns a `bad-request` result for a path that is too long or
 * does not start with `/`. So does a path with an invalid escape, invalid
 * UTF-8, a raw `#`, a backslash (raw or `%5C`), `%00`, a dot segment with a path
 * parameter (`..;x`, `.;x`), a segment that contains a dot segment once `%2F` is
 * decoded (`..%2Fx`, `x%2F..`), or a `..` that climbs above the root.
 */
export function normalizeRequestPath(path: string): string | BadRequest {
  return normalizeCheckedPath(path, path.indexOf('%') !== -1);
}

/**
 * Normalizes a path like `normalizeRequestPath`, for a caller that has already
 * searched the path for `%`: `escaped` must be true exactly when the path
 * contains one. A caller that needs to know later whether param values need
 * decoding can then skip a second search.
 */
export function normalizeCheckedPath(path: string, escaped: boolean): string | BadRequest {
  if (path.length > MAX_PATH_LENGTH) return PATH_TOO_LONG;
  if (path.charCodeAt(0) !== SLASH) return PATH_NOT_ABSOLUTE;
  // Some servers read a backslash as "/", so an upstream could split a segment
  // that the router matched as one.
  if (path.indexOf('\\') !== -1) return BACKSLASH;
  // A request target has no fragment (RFC 9112 section 3.2); an upstream would cut the path at
  // "#" and see another path than the one matched.
  if (path.indexOf('#') !== -1) return FRAGMENT;

  // Most paths have neither escapes nor dot segments, so native one-character
  // scans let them through without copying.
  let normalized = path;
  if (escaped) {
    const decoded = normalizePercentEncoding(path);
    if (decoded === null) return INVALID_ENCODING;
    // Escapes are upper-cased above, so one spelling of each is enough.
    if (decoded.indexOf('%5C') !== -1) return BACKSLASH;
    if (decoded.indexOf('%00') !== -1) return NUL;
    if (decoded.indexOf('%2F') !== -1 && hasEncodedDotSegment(decoded)) {
      return ENCODED_DOT_SEGMENT;
    }
    normalized = decoded;
  }
  return hasDotSegmentStart(normalized) ? removeDotSegments(normalized) : normalized;
}

/**
 * Decodes escapes of unreserved characters (`%61` to `a`, `%2E` to `.`) and
 * upper-cases the hex digits of every other escape (`%2f` to `%2F`), so that
 * equivalent spellings of a path compare equal (RFC 3986 section 6.2.2).
 * Returns null when an escape is not `%` plus two hex digits or when the
 * escaped bytes are not valid UTF-8.
 */
export function normalizePercentEncoding(text: string): string | null {
  let index = text.indexOf('%');
  // Without escapes there is nothing to decode, and decoding cannot fail.
  if (index === -1) return text;

  let output = '';
  let copied = 0;
  while (index !== -1) {
    const high = hexValue(text.charCodeAt(index + 1));
    const low = hexValue(text.charCodeAt(index + 2));
    if (high < 0 || low < 0) return null;

    const byte = high * 16 + low;
    output += text.slice(copied, index);
    output += isUnreserved(byte)
      ? String.fromCharCode(byte)
      : '%' + HEX_DIGITS[high] + HEX_DIGITS[low];
    copied = index + 3;
    index = text.indexOf('%', copied);
  }
  output += text.slice(copied);

  return isDecodable(output) ? output : null;
}

/**
 * Decodes one parameter value. Every segment of a path that passed
 * `normalizeRequestPath` decodes, because escapes never span a raw `/`. The
 * catch only keeps `find` from throwing if that ever stops being true.
 */
export function decodeParam(raw: string): string {
  if (raw.indexOf('%') === -1) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** Returns whether a byte is an RFC 3986 unreserved character: ALPHA, DIGIT, `-`, `.`, `_`, `~`. */
export function isUnreserved(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x2d ||
    code === 0x2e ||
    code === 0x5f ||
    code === 0x7e
  );
}

function removeDotSegments(path: string): string | BadRequest {
  const segments = path.slice(1).split('/');
  const output: string[] = [];
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i];
    const last = i === segments.length - 1;
    if (isDotSegmentWithParameter(segment)) return DOT_SEGMENT_PARAMETER;
    if (segment === '.' || segment === '..') {
      if (segment === '..') {
        if (output.length === 0) return ABOVE_ROOT;
        output.pop();
      }
      // A dot segment at the end leaves a trailing slash: `/a/b/..` is `/a/`.
      if (last) output.push('');
    } else {
      output.push(segment);
    }
  }
  return '/' + output.join('/');
}

/**
 * Returns whether a segment is `.` or `..` followed by a path parameter, raw or
 * escaped (`..;x`, `.%3Bx`). Servlet containers strip the parameter and then
 * resolve the dot segment, which would lead an upstream out of the route's prefix.
 */
function isDotSegmentWithParameter(segment: string): boolean {
  if (segment.charCodeAt(0) !== DOT) return false;
  const dots = segment.charCodeAt(1) === DOT ? 2 : 1;
  return segment.startsWith(';', dots) || segment.startsWith('%3B', dots);
}

/**
 * Returns whether a segment with `%2F` contains a `.` or `..` segment, bare or with a path
 * parameter, once `%2F` is read as `/`. An upstream that decodes `%2F` before it resolves dot
 * segments would otherwise climb out of the prefix the router matched (`/info/..%2Fprivate`).
 */
function hasEncodedDotSegment(path: string): boolean {
  for (const segment of path.split('/')) {
    if (segment.indexOf('%2F') === -1) continue;
    for (const part of segment.split('%2F')) {
      if (part === '.' || part === '..' || isDotSegmentWithParameter(part)) return true;
    }
  }
  return false;
}

/** Returns whether some segment starts with ".", which every dot segment does. */
function hasDotSegmentStart(path: string): boolean {
  // On Node 20, indexOf('/.') took about three times as long as indexOf('.')
  // in a micro-benchmark, because it searches for two characters.
  for (let dot = path.indexOf('.'); dot !== -1; dot = path.indexOf('.', dot + 1)) {
    if (path.charCodeAt(dot - 1) === SLASH) return true;
  }
  return false;
}

function isDecodable(text: string): boolean {
  try {
    decodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}

/** Returns the value of a hex digit, or -1 (also for NaN, read past the end of a string). */
function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  return -1;
}
