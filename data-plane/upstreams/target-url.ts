import { describeTargetUrlLength, describeTargetUrlParts } from '../../config/validate.js';

/** A target URL split into the parts the proxy uses. */
export interface ParsedTargetUrl {
  /** `http://host:port` or `https://host:port`, default port omitted, as `URL.origin` gives it. */
  origin: string;
  /**
   * Path of the URL as written, with runs of trailing slashes reduced to one; empty for no path
   * or `/`. `joinPath` decides how it is joined with the request path.
   */
  basePath: string;
  /** Host name without brackets, for SNI and certificate checks. */
  hostname: string;
  /** True for https. */
  secure: boolean;
}

/**
 * Parses a target URL, or returns why it is invalid. Only absolute http and https URLs are
 * valid. Credentials, a query and a fragment are rejected because the proxy would silently
 * drop them. The length, port and host limits of `loomctl apply` apply too, so the proxy rejects
 * a URL written straight into the store as apply would.
 */
export function parseTargetUrl(url: string): ParsedTargetUrl | string {
  const tooLong = describeTargetUrlLength(url);
  if (tooLong !== undefined) return tooLong;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'invalid URL, expected an absolute URL such as http://10.0.0.5:8080';
  }

  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return `unsupported scheme "${parsed.protocol.slice(0, -1)}", expected http or https`;
  }
  if (parsed.hostname === '') {
    return 'missing host';
  }
  if (parsed.username !== '' || parsed.password !== '') {
    return 'credentials in the URL are not supported';
  }
  if (parsed.search !== '' || url.includes('?')) {
    return 'a query string is not supported in a target URL';
  }
  if (parsed.hash !== '' || url.includes('#')) {
    return 'a fragment is not supported in a target URL';
  }
  const problem = describeTargetUrlParts(parsed);
  if (problem !== undefined) return problem;

  const path = parsed.pathname.replace(/\/+$/, '/');
  return {
    origin: parsed.origin,
    basePath: path === '/' ? '' : path,
    hostname: parsed.hostname.replace(/^\[|\]$/g, ''),
    secure: parsed.protocol === 'https:',
  };
}
