import { MAX_PATH_LENGTH } from '../data-plane/router/path.js';

/**
 * Maximum length of a path pattern, stripPrefix or addPrefix, in characters.
 * The proxy rejects request paths longer than `MAX_PATH_LENGTH` (8,192), so a
 * longer pattern or strip prefix could never match a request.
 */
export const MAX_PATTERN_LENGTH = MAX_PATH_LENGTH;

/**
 * Maximum number of segments in a path pattern. Far above what real routes
 * use; it bounds the depth of the trees that validation and the router build.
 */
export const MAX_PATTERN_SEGMENTS = 1024;

/** Returns why a path pattern or prefix exceeds the limits above, or undefined when it does not. */
export function describePatternLimit(path: string): string | undefined {
  if (path.length > MAX_PATTERN_LENGTH) {
    return (
      `too long: ${path.length} characters, at most ${MAX_PATTERN_LENGTH} are allowed ` +
      'because the proxy rejects longer request paths'
    );
  }

  let segments = 0;
  for (let at = path.indexOf('/'); at !== -1; at = path.indexOf('/', at + 1)) segments++;
  if (segments > MAX_PATTERN_SEGMENTS) {
    return `too many segments: ${segments}, at most ${MAX_PATTERN_SEGMENTS} are allowed; shorten the path or end it with a catch-all such as /**`;
  }
  return undefined;
}
