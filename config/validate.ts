import { METHODS } from 'node:http';
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';

import { LoomError, type ConfigIssue } from '../common/errors.js';
import { normalizePercentEncoding } from '../data-plane/router/path.js';
import { parsePattern } from '../data-plane/router/pattern.js';
import { buildRouter } from '../data-plane/router/router.js';
import {
  describePatternLimit,
  HEADER_VALUE,
  MAX_HOST_LENGTH,
  MAX_TARGET_URL_LENGTH,
  METHOD_PATTERN,
  TOKEN,
} from './limits.js';
import { normalizeHostRewrite, normalizePathPrefix, normalizeTargetUrl } from './normalize.js';
import { findConflicts, findShadowedRoutes } from './overlap.js';
import { findUnusedStripPrefix } from './strip-prefix.js';
import { suggestName } from './suggest.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';

/** Path inside a config document, such as `['routes', 2, 'paths', 0]`. */
export type ConfigPath = (string | number)[];

/** Maps a config path to its source file and line, when the config came from a file. */
export type Locator = (path: ConfigPath) => { file?: string; line?: number };

const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A path prefix: `/` and segments of RFC 3986 path characters, without a trailing slash. */
const PATH_PREFIX = /^(\/[A-Za-z0-9\-._~!$&'()*+,;=:@%]+)+$/;
/** Headers the proxy manages itself; route header actions cannot set or remove them. */
const RESERVED_HEADERS = new Set([
  'connection',
  'content-length',
  'host',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Checks a complete configuration (every route and upstream that would be
 * stored) and returns every problem found, not only the first. Inputs must be
 * normalised, except stripPrefix, addPrefix, hostRewrite and header actions,
 * which may be as written so that messages quote them as written. An empty
 * result means the configuration can be stored and every proxy can build a
 * routing table from it.
 */
export function validateConfig(
  routes: readonly Route[],
  upstreams: readonly Upstream[],
  locate: Locator = () => ({}),
  options: ValidateOptions = {},
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const report = (path: ConfigPath, issue: Omit<ConfigIssue, 'file' | 'line'>) => {
    issues.push({ ...locate(path), ...issue });
  };
  const skip = options.schemaFailures ?? NO_FAILURES;

  checkDuplicates(upstreams, 'upstream', 'upstreams', report, locate, skip);
  checkDuplicates(routes, 'route', 'routes', report, locate, skip);
  upstreams.forEach((upstream, index) => checkUpstream(upstream, index, report, skip));

  // An upstream whose name failed the schema may be the one a route names, so an unknown
  // reference is not reported until that name is fixed.
  const nameless = upstreams.some((_, index) => skip(['upstreams', index, 'name']));
  const upstreamNames =
    options.allowUndeclaredUpstreams || nameless
      ? undefined
      : new Set(upstreams.map((upstream) => upstream.name));
  const validRoutes: Route[] = [];
  routes.forEach((route, index) => {
    const before = issues.length;
    checkRoute(route, index, upstreamNames, report, skip, {
      undeclaredHint: options.undeclaredUpstreamHint,
      written: options.writtenRoute?.(index),
    });
    if (issues.length === before && !hasFailedMatch(index, skip)) validRoutes.push(route);
  });
  checkConflicts(withoutFailedMatches(routes, skip), report, locate);
  if (issues.length === 0) checkRouterBuild(validRoutes, routes, report);
  return issues;
}

/** Settings of `validateConfig`. */
export interface ValidateOptions {
  /**
   * Accept routes whose upstream is not among `upstreams`. A file applied
   * without --prune may use upstreams already stored; the control plane checks
   * those references against the merged configuration.
   */
  allowUndeclaredUpstreams?: boolean;
  /** Appended to the message about a route's unknown upstream, such as what --prune does. */
  undeclaredUpstreamHint?: string;
  /**
   * Source of each route's hosts and methods as its file spells them, in the order of the
   * normalised ones. Messages quote these, so that the user can find the value in the file.
   */
  writtenRoute?: WrittenRoute;
  /**
   * Returns true for a field that failed the schema, or that contains or is
   * inside one. Such fields hold placeholders, so the checks skip them instead
   * of reporting problems that only follow from the schema error.
   */
  schemaFailures?: SkipField;
}

/** Hosts and methods of a route as its file spells them, which the loader normalises. */
export type WrittenMatch = Pick<Route, 'hosts' | 'methods'>;

/** Returns the hosts and methods of the route at `index` as its file spells them. */
export type WrittenRoute = (index: number) => WrittenMatch | undefined;

type Report = (path: ConfigPath, issue: Omit<ConfigIssue, 'file' | 'line'>) => void;
type SkipField = (path: ConfigPath) => boolean;

/** Skip function of a configuration that passed the schema, which lets checks skip the lookups. */
const NO_FAILURES: SkipField = () => false;

/** Returns `skip` for paths inside one resource, such as `['upstreams', 3]`. */
function skipWithin(skip: SkipField, ...prefix: ConfigPath): (...path: ConfigPath) => boolean {
  if (skip === NO_FAILURES) return () => false;
  return (...path) => skip([...prefix, ...path]);
}

/** Returns whether a field that decides which requests a route matches failed the schema. */
function hasFailedMatch(index: number, skip: SkipField): boolean {
  if (skip === NO_FAILURES) return false;
  return (['hosts', 'paths', 'methods'] as const).some((field) => skip(['routes', index, field]));
}

/**
 * Returns the routes with no paths in place of those with a failed hosts,
 * paths or methods field, because once fixed they would match other requests.
 * A route without paths takes part in no conflict and shadows nothing.
 */
function withoutFailedMatches(routes: readonly Route[], skip: SkipField): readonly Route[] {
  if (skip === NO_FAILURES) return routes;
  return routes.map((route, index) =>
    hasFailedMatch(index, skip) ? { ...route, paths: [] } : route,
  );
}

/** Reports each resource whose name an earlier one has, naming where the first one is. */
function checkDuplicates(
  resources: readonly { name: string }[],
  kind: 'route' | 'upstream',
  list: string,
  report: Report,
  locate: Locator,
  skip: SkipField,
): void {
  const first = new Map<string, number>();
  resources.forEach((resource, index) => {
    if (skip([list, index, 'name'])) return;
    const firstIndex = first.get(resource.name);
    if (firstIndex === undefined) {
      first.set(resource.name, index);
      return;
    }
    report([list, index, 'name'], {
      kind,
      name: resource.name,
      field: 'name',
      value: resource.name,
      message:
        `duplicate ${kind} name; every ${kind} needs a unique name` +
        describePlace(locate([list, firstIndex, 'name']), `the first ${kind} of that name is`),
    });
  });
}

/** Returns ` (LABEL FILE:LINE)` for a place in a file, or '' when the config has no files. */
function describePlace(where: { file?: string; line?: number }, label: string): string {
  if (where.file === undefined) return '';
  return ` (${label} at ${where.file}${where.line ? `:${where.line}` : ''})`;
}

function checkUpstream(upstream: Upstream, index: number, report: Report, skip: SkipField): void {
  const at = (field: string, value: unknown, message: string, path: ConfigPath) =>
    report(['upstreams', index, ...path], {
      kind: 'upstream',
      name: upstream.name,
      field,
      value,
      message,
    });

  const skipped = skipWithin(skip, 'upstreams', index);

  const hashOnProblem =
    skipped('balancer') || skipped('hashOn')
      ? undefined
      : describeHashOnProblem(upstream.balancer, upstream.hashOn);
  if (hashOnProblem) at('hashOn', upstream.hashOn, hashOnProblem, ['hashOn']);
  const check = upstream.healthCheck;
  if (check && !skipped('healthCheck', 'path') && !/^\/[\x21-\x7e]*$/.test(check.path)) {
    at('healthCheck.path', check.path, 'invalid path; use a path such as /healthz', [
      'healthCheck',
      'path',
    ]);
  }
  const checkHost = check && !skipped('healthCheck', 'host') ? check.host : undefined;
  if (checkHost !== undefined && describeHostPortProblem(normalizeHostRewrite(checkHost))) {
    at(
      'healthCheck.host',
      checkHost,
      'invalid host; use a name such as api.internal or api.internal:8080',
      ['healthCheck', 'host'],
    );
  }
  const tls = upstream.tls;
  if (tls && !skipped('tls', 'caFile') && CONTROL_CHARACTER.test(tls.caFile)) {
    at(
      'tls.caFile',
      tls.caFile,
      'invalid caFile: the path contains a control character; give the path of a PEM file',
      ['tls', 'caFile'],
    );
  }
  const serverNameProblem =
    tls && !skipped('tls', 'serverName') ? describeServerNameProblem(tls.serverName) : undefined;
  if (serverNameProblem) {
    at('tls.serverName', tls?.serverName, serverNameProblem, ['tls', 'serverName']);
  }
  const passive = upstream.passiveHealth;
  if (passive && !skipped('passiveHealth') && passive.maxEjectionMs < passive.baseEjectionMs) {
    at(
      'passiveHealth.maxEjectionMs',
      passive.maxEjectionMs,
      `must be at least baseEjectionMs (${passive.baseEjectionMs})`,
      ['passiveHealth', 'maxEjectionMs'],
    );
  }
  // The proxy keeps one pool and one health state per target URL, so two spellings of one
  // target would share them.
  const firstByUrl = new Map<string, number>();
  upstream.targets.forEach((target, targetIndex) => {
    if (skipped('targets', targetIndex, 'url')) return;
    const problem = describeTargetUrlProblem(target.url);
    const stored = normalizeTargetUrl(target.url);
    const first = problem === undefined ? firstByUrl.get(stored) : undefined;
    if (problem === undefined && first === undefined) firstByUrl.set(stored, targetIndex);
    const message =
      problem ??
      (first === undefined
        ? undefined
        : `duplicate target: targets[${first}] is the same URL (${redactTargetUrl(stored)}); ` +
          'remove one, or merge their weights');
    if (message) {
      report(['upstreams', index, 'targets', targetIndex, 'url'], {
        kind: 'upstream',
        name: upstream.name,
        field: `targets[${targetIndex}].url`,
        value: shortened(redactTargetUrl(target.url)),
        message,
      });
    }
  });
}

/** C0 control characters and DEL. */
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/**
 * Returns why `tls.serverName` cannot name the TLS server, or undefined when it is empty, a
 * DNS name or an IP address. The proxy sends it as SNI and checks the certificate against it.
 */
function describeServerNameProblem(serverName: string): string | undefined {
  if (serverName === '' || isIP(serverName) !== 0) return undefined;
  const name = serverName.toLowerCase();
  if (!name.startsWith('*.') && !name.startsWith('[') && describeHostProblem(name) === undefined) {
    return undefined;
  }
  return (
    'invalid serverName; use the DNS name that the certificate names, such as ' +
    'api.internal, without a port or wildcard' +
    punycodeHint(serverName)
  );
}

/** Returns why the hash key of an upstream is invalid, or undefined when it is valid. */
export function describeHashOnProblem(
  balancer: string | undefined,
  hashOn: string | undefined,
): string | undefined {
  if (balancer !== 'hash') {
    return hashOn === undefined ? undefined : 'hashOn needs balancer: hash';
  }
  if (hashOn === undefined) {
    return 'balancer hash needs hashOn: header:NAME, cookie:NAME or client-address';
  }
  if (hashOn === 'client-address') return undefined;
  const [source, key] = [
    hashOn.slice(0, hashOn.indexOf(':')),
    hashOn.slice(hashOn.indexOf(':') + 1),
  ];
  if ((source === 'header' || source === 'cookie') && TOKEN.test(key)) return undefined;
  return 'invalid hashOn; use header:NAME, cookie:NAME or client-address';
}

/**
 * Returns a target URL for messages, with the password of its user information replaced by
 * `***`, and with all of it replaced when it has no `:`, because a user name alone is often a
 * token (`https://TOKEN@host`). A query or fragment, which may carry a key, becomes `?***`
 * or `#***`.
 */
export function redactTargetUrl(raw: string): string {
  // Regular expressions, not URL, because a URL that does not parse may still carry a secret.
  // The last "@" before the path ends the user information, as URL parsers read it.
  const redacted = raw.replace(/^([^:/?#]*:\/\/)([^/?#]*)@/, (_, scheme: string, user: string) => {
    const colon = user.indexOf(':');
    return colon === -1 ? `${scheme}***@` : `${scheme}${user.slice(0, colon)}:***@`;
  });
  return redacted.replace(/([?#]).*$/s, '$1***');
}

/** Returns why a target URL is unusable, or undefined when it is valid. */
export function describeTargetUrlProblem(raw: string): string | undefined {
  const tooLong = describeTargetUrlLength(raw);
  if (tooLong !== undefined) return tooLong;
  // `new URL` rejects `127.0.0.1:9001` and reads `localhost:9001` as scheme `localhost`.
  if (/^(?:\[[^\]/]*\]|[^\s/:@[\]]+):\d+(?:\/\S*)?$/.test(raw)) {
    return `missing scheme; write http://${raw} or https://${raw}`;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    const port = /^[a-z][a-z0-9+.-]*:\/\/(?:\[[^\]]*\]|[^/?#:@]*)(?::(\d+))?(?:[/?#]|$)/i.exec(
      raw,
    )?.[1];
    if (port !== undefined && Number(port) > 65_535) {
      return `port ${port} is out of range; use a port from 1 to 65535`;
    }
    return 'invalid URL; expected http://host:port or https://host:port with an optional base path';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return `unsupported scheme "${url.protocol.slice(0, -1)}"; use http or https`;
  }
  if (url.username || url.password) {
    return 'credentials in a target URL are not supported; remove user:password@ from the URL';
  }
  if (url.search || url.hash || raw.includes('?') || raw.includes('#')) {
    return 'a target URL cannot carry a query or fragment';
  }
  return describeTargetUrlParts(url);
}

/** Returns why a target URL is over `MAX_TARGET_URL_LENGTH`, or undefined when it is not. */
export function describeTargetUrlLength(raw: string): string | undefined {
  if (raw.length <= MAX_TARGET_URL_LENGTH) return undefined;
  return (
    `too long: ${raw.length} characters, at most ${MAX_TARGET_URL_LENGTH} are allowed; ` +
    'use http://host:port or https://host:port with a short base path'
  );
}

/**
 * Returns why an http or https target URL that parses is still unusable: port 0, a host name
 * over `MAX_HOST_LENGTH`, or a path that starts with "//". Apply and the proxy both run it.
 */
export function describeTargetUrlParts(url: URL): string | undefined {
  if (url.port === '0') {
    return 'port 0 cannot be connected to; use the port the upstream listens on';
  }
  // `hostname` is in ASCII (punycode) form, the form whose length DNS limits.
  const host = url.hostname.replace(/\.$/, '');
  if (!host.startsWith('[') && host.length > MAX_HOST_LENGTH) {
    return (
      `the host name has ${host.length} characters, at most ${MAX_HOST_LENGTH} are allowed ` +
      '(RFC 1035); use a shorter DNS name or an IP address'
    );
  }
  // The base path starts each request target sent to the target, and an upstream that resolves
  // `//name/x` against a base URL reads `name` as a host.
  if (/^\/\/+[^/]/.test(url.pathname)) {
    return 'a target URL path cannot start with "//", which an upstream could read as a host name; use one "/"';
  }
  return undefined;
}

function checkRoute(
  route: Route,
  index: number,
  upstreams: Set<string> | undefined,
  report: Report,
  skip: SkipField,
  messages: { undeclaredHint?: string; written?: WrittenMatch },
): void {
  const { undeclaredHint, written } = messages;
  const at = (field: string, value: unknown, message: string, path: ConfigPath) =>
    report(['routes', index, ...path], { kind: 'route', name: route.name, field, value, message });
  const skipped = skipWithin(skip, 'routes', index);

  if (upstreams && !skipped('upstream') && !upstreams.has(route.upstream)) {
    const problem = describeUnknownUpstream(route.upstream, upstreams);
    const message = undeclaredHint === undefined ? problem : `${problem}; ${undeclaredHint}`;
    at('upstream', route.upstream, message, ['upstream']);
  }
  route.hosts.forEach((host, hostIndex) => {
    const problem = skipped('hosts', hostIndex) ? undefined : describeHostProblem(host);
    const value = written?.hosts[hostIndex] ?? host;
    if (problem) at(`hosts[${hostIndex}]`, value, problem, ['hosts', hostIndex]);
  });
  route.methods.forEach((method, methodIndex) => {
    if (!skipped('methods', methodIndex) && !METHOD_PATTERN.test(method)) {
      const value = written?.methods[methodIndex] ?? method;
      at(`methods[${methodIndex}]`, value, 'invalid method; use a token such as GET or POST', [
        'methods',
        methodIndex,
      ]);
    }
  });
  route.paths.forEach((path, pathIndex) => {
    const problem = skipped('paths', pathIndex) ? undefined : describePathProblem(route, path);
    if (problem) at(`paths[${pathIndex}]`, shortened(path), problem, ['paths', pathIndex]);
  });
  for (const field of ['stripPrefix', 'addPrefix'] as const) {
    const prefix = route[field];
    const problem =
      prefix === undefined || skipped(field) ? undefined : describePrefixProblem(prefix);
    if (problem) at(field, shortened(prefix ?? ''), problem, [field]);
  }
  const hostRewrite = skipped('hostRewrite') ? undefined : route.hostRewrite;
  if (hostRewrite !== undefined && describeHostPortProblem(normalizeHostRewrite(hostRewrite))) {
    at(
      'hostRewrite',
      hostRewrite,
      'invalid host; use a name such as api.internal or api.internal:8080',
      ['hostRewrite'],
    );
  }
  for (const field of ['requestHeaders', 'responseHeaders'] as const) {
    const actions = route[field];
    if (actions === undefined || skipped(field)) continue;
    // Lower-cased names of the headers set so far, because header names are case-insensitive.
    const names = new Set<string>();
    actions.set.forEach((header, headerIndex) => {
      const path = [field, 'set', headerIndex];
      const nameProblem = describeHeaderProblem(header.name, names);
      if (nameProblem) {
        at(`${field}.set.${header.name}`, header.name, nameProblem, path);
      } else {
        const valueProblem = describeHeaderValueProblem(header.value);
        if (valueProblem) at(`${field}.set.${header.name}`, header.value, valueProblem, path);
      }
      names.add(header.name.toLowerCase());
    });
    actions.remove.forEach((name, nameIndex) => {
      const problem =
        describeHeaderProblem(name, new Set()) ??
        (names.has(name.toLowerCase()) ? 'header is both set and removed; keep one' : undefined);
      if (problem) at(`${field}.remove[${nameIndex}]`, name, problem, [field, 'remove', nameIndex]);
    });
  }
}

/** Returns a value to quote in a message, cut to its first 100 characters when longer. */
export function shortened(value: string): string {
  return value.length <= 100 ? value : `${value.slice(0, 100)}... (${value.length} characters)`;
}

/** Returns the message for a route's unknown upstream, with the closest declared name. */
function describeUnknownUpstream(name: string, declared: Set<string>): string {
  const known = [...declared].sort();
  if (known.length === 0) return 'unknown upstream; no upstream is declared';
  const suggestion = suggestName(name, known);
  const hint = suggestion === undefined ? '' : `did you mean "${suggestion}"? `;
  return `unknown upstream; ${hint}declared upstreams: ${known.join(', ')}`;
}

/**
 * Returns why a stripPrefix or addPrefix is invalid, or undefined when it is
 * valid. Dot segments are rejected in every spelling (`..`, `%2e%2E`, `..;x`)
 * because an upstream would resolve them and serve a path outside the route's prefix.
 */
export function describePrefixProblem(prefix: string): string | undefined {
  const limit = describePatternLimit(prefix);
  if (limit) return `invalid path prefix: ${limit}`;
  const normalized = normalizePathPrefix(prefix);
  if (normalized === undefined) return undefined;
  const decoded = normalizePercentEncoding(normalized);
  if (decoded === null || !PATH_PREFIX.test(normalized)) {
    return 'invalid path prefix; use segments such as /api/v1 of RFC 3986 path characters, percent-encoding others';
  }
  if (decoded.split('/').some(isDotSegment)) {
    return 'invalid path prefix: it contains a dot segment ("." or "..", also percent-encoded or followed by ";"); use segments such as /api/v1';
  }
  return undefined;
}

/** Returns whether a decoded segment is `.` or `..`, alone or with a path parameter (`..;x`). */
function isDotSegment(segment: string): boolean {
  return /^\.\.?(;|%3B|$)/.test(segment);
}

/**
 * Returns why a header name is invalid, or undefined. `seen` contains the lower-cased names
 * set before.
 */
function describeHeaderProblem(name: string, seen: Set<string>): string | undefined {
  if (!TOKEN.test(name)) return 'invalid header name; use a token such as x-request-source';
  const lower = name.toLowerCase();
  if (RESERVED_HEADERS.has(lower)) {
    return `the proxy manages this header; it cannot be set or removed (${reservedHeaderReason(lower)})`;
  }
  return seen.has(name.toLowerCase()) ? 'header set twice; keep one value' : undefined;
}

/** Explains why the proxy manages the reserved header `lower`, with the fix where one exists. */
function reservedHeaderReason(lower: string): string {
  if (lower === 'host') return 'use hostRewrite for Host';
  if (lower === 'content-length' || lower === 'transfer-encoding' || lower === 'trailer') {
    return 'the proxy frames each message itself';
  }
  return 'a hop-by-hop header applies to one connection only';
}

/** Returns why `host[:port]` is invalid, or undefined when it is valid. */
function describeHostPortProblem(value: string): string | undefined {
  const match = /^(\[[^\]]+\]|[^:]+)(:(\d{1,5}))?$/.exec(value);
  if (match === null) return 'invalid host';
  if (match[3] !== undefined && (Number(match[3]) < 1 || Number(match[3]) > 65535))
    return 'invalid port';
  if (isIP(match[1]) === 4) return undefined;
  return describeHostProblem(match[1].startsWith('*.') ? '' : match[1]);
}

/** The characters `HEADER_VALUE` accepts, worded for error messages. */
const HEADER_VALUE_LIMIT =
  'a value may contain only visible ASCII characters, characters U+0080 to U+00FF (Latin-1), ' +
  'and spaces and tabs between them';

/** Returns why a header value is invalid, or undefined when `HEADER_VALUE` accepts it. */
function describeHeaderValueProblem(value: string): string | undefined {
  if (HEADER_VALUE.test(value)) return undefined;

  for (const char of value) {
    const code = char.codePointAt(0) as number;
    if (code > 0xff) {
      const unicode = `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
      const encoded = percentEncode(char);
      const example = encoded === undefined ? '' : `, such as percent-encoded as ${encoded}`;
      return (
        `invalid header value; the character ${JSON.stringify(char)} (${unicode}) is above ` +
        `U+00FF, and ${HEADER_VALUE_LIMIT}; encode it${example}`
      );
    }
    if ((code < 0x20 && char !== '\t') || code === 0x7f) {
      return (
        `invalid header value; it contains the control character ${JSON.stringify(char)}, ` +
        `and ${HEADER_VALUE_LIMIT}; remove it`
      );
    }
  }
  return 'invalid header value; remove the spaces or tabs at its start or end';
}

/** Percent-encodes one character as UTF-8, or returns undefined for a lone surrogate. */
function percentEncode(char: string): string | undefined {
  try {
    return encodeURIComponent(char);
  } catch {
    return undefined;
  }
}

/** Returns why a host pattern is invalid, or undefined when it is valid. */
export function describeHostProblem(host: string): string | undefined {
  if (host.startsWith('[') && host.endsWith(']') && isIP(host.slice(1, -1)) === 6) return undefined;
  if (host === '*') {
    return 'invalid host "*"; omit hosts (or leave the list empty) to match any host';
  }
  const wildcard = host.startsWith('*.');
  const name = wildcard ? host.slice(2) : host;
  const labels = name.split('.');
  if (name.length === 0 || name.length > 253 || !labels.every((label) => HOST_LABEL.test(label))) {
    return (
      'invalid host; use a DNS name such as api.example.com, a wildcard such as *.example.com, or [IPv6], without a port' +
      punycodeHint(host)
    );
  }
  // RFC 3696 section 2 rules out all-digit top-level domains, so such a suffix is an IPv4 tail.
  if (wildcard && /^\d+$/.test(labels[labels.length - 1])) {
    return (
      'invalid host; a wildcard covers DNS names, and this one would match IPv4 addresses; ' +
      'list each address as its own host, such as 10.0.0.1'
    );
  }
  return undefined;
}

/** Returns a hint with the ASCII (punycode) form of an internationalised host name, or ''. */
function punycodeHint(host: string): string {
  if (/^[\x00-\x7f]*$/.test(host)) return '';
  const wildcard = host.startsWith('*.');
  const ascii = domainToASCII(wildcard ? host.slice(2) : host);
  if (ascii === '') return '';
  return `; write an internationalised name in its ASCII form: "${wildcard ? '*.' : ''}${ascii}"`;
}

function describePathProblem(route: Route, path: string): string | undefined {
  const limit = describePatternLimit(path);
  if (limit) return `invalid path pattern: ${limit}`;
  const hint = /\{\w+\}/.test(path) ? '; write a param as :name, not {name}' : '';
  try {
    // The router's own parser; the whole-config build at the end catches anything else.
    parsePattern(route.name, path);
    return undefined;
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    // The issue already names the route and the value, which the router's message repeats.
    const prefix = `route ${JSON.stringify(route.name)}: invalid path pattern ${JSON.stringify(path)}: `;
    const reason = error.message.startsWith(prefix)
      ? `invalid path pattern: ${error.message.slice(prefix.length)}`
      : error.message;
    return reason + hint;
  }
}

function checkConflicts(routes: readonly Route[], report: Report, locate: Locator): void {
  for (const conflict of findConflicts(routes)) {
    const [first, second] = [routes[conflict.first], routes[conflict.second]];
    // Two routes of one name already get the duplicate-name error, which is the one to fix.
    if (first.name === second.name) continue;
    const where = locate(['routes', conflict.first, 'name']);
    const at = where.file ? ` (${where.file}${where.line ? `:${where.line}` : ''})` : '';
    const pathIndex = Math.max(second.paths.indexOf(conflict.secondPath), 0);
    const ours = `path ${JSON.stringify(conflict.secondPath)} of route ${JSON.stringify(second.name)}`;
    const theirs = `path ${JSON.stringify(conflict.firstPath)} of route ${JSON.stringify(first.name)}`;
    report(['routes', conflict.second, 'paths', pathIndex], {
      kind: 'route',
      name: second.name,
      field: `paths[${pathIndex}]`,
      value: conflict.secondPath,
      message:
        `${ours} conflicts with ${theirs}${at}: both match ` +
        `${conflict.host}, ${conflict.method} and the same paths; ` +
        'change a path, a host or the methods of one of them',
    });
  }
}

/**
 * Builds the router as every proxy will, as a last check that catches any
 * rejection the checks above do not model.
 */
function checkRouterBuild(valid: Route[], all: readonly Route[], report: Report): void {
  try {
    buildRouter(valid.map((route) => ({ ...route, value: null })));
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    // Router messages start with the quoted name of the route being added.
    const quoted = /^route ("(?:[^"\\]|\\.)*")/.exec(error.message)?.[1];
    const name = quoted === undefined ? undefined : (JSON.parse(quoted) as string);
    const index = Math.max(
      all.findIndex((route) => route.name === name),
      0,
    );
    report(['routes', index], {
      kind: 'route',
      name: all[index]?.name,
      field: 'paths',
      message: error.message,
    });
  }
}

/**
 * Returns warnings about a configuration that is valid but likely wrong:
 * routes that can never match because other routes take all their requests
 * (see `findShadowedRoutes` for the rule), strip prefixes that never apply
 * (see `findUnusedStripPrefix`), upstreams whose targets all have weight
 * 0, and methods that the proxy's HTTP parser rejects. Inputs must be normalised, except stripPrefix, which may be as written.
 * Routes whose hosts, paths or methods failed the schema (`schemaFailures`)
 * are left out, and so are upstreams whose targets failed it.
 */
export function findConfigWarnings(
  routes: readonly Route[],
  upstreams: readonly Upstream[],
  locate: Locator = () => ({}),
  schemaFailures: SkipField = NO_FAILURES,
  writtenRoute?: WrittenRoute,
): ConfigIssue[] {
  return [
    ...findZeroWeightWarnings(upstreams, routes, locate, schemaFailures),
    ...findShadowedRouteWarnings(routes, locate, schemaFailures),
    ...findStripPrefixWarnings(routes, locate, schemaFailures),
    ...findUnknownMethodWarnings(routes, locate, schemaFailures, writtenRoute),
  ];
}

/** Methods that the proxy's HTTP parser accepts. Node.js rejects any other with 400. */
const PARSED_METHODS = new Set(METHODS);

/**
 * Returns a warning for each route method that the proxy's HTTP parser (Node.js `http.METHODS`)
 * does not accept, such as a misspelled `GETT`: no request with it reaches the router, so the
 * route never matches it. Methods are compared upper-cased, as they are stored.
 */
function findUnknownMethodWarnings(
  routes: readonly Route[],
  locate: Locator,
  skip: SkipField,
  writtenRoute: WrittenRoute | undefined,
): ConfigIssue[] {
  const warnings: ConfigIssue[] = [];
  routes.forEach((route, index) => {
    route.methods.forEach((method, methodIndex) => {
      const path = ['routes', index, 'methods', methodIndex];
      if (skip(path) || PARSED_METHODS.has(method.toUpperCase())) return;
      // An invalid method is an error already, so a warning about it would repeat the value.
      if (!METHOD_PATTERN.test(method.toUpperCase())) return;
      const suggestion = suggestName(method.toUpperCase(), PARSED_METHODS);
      const hint =
        suggestion === undefined
          ? 'use a method such as GET or POST'
          : `did you mean ${suggestion}?`;
      warnings.push({
        ...locate(path),
        kind: 'route',
        name: route.name,
        field: `methods[${methodIndex}]`,
        value: writtenRoute?.(index)?.methods[methodIndex] ?? method,
        message:
          'the proxy rejects requests with this method (400) before routing, so the route ' +
          `never matches it; ${hint}`,
        summary: 'route methods that the proxy rejects before routing',
      });
    });
  });
  return warnings;
}

/**
 * Returns a warning for each upstream whose targets all have weight 0. The
 * proxies then have no target to send its requests to and respond to each with
 * 502 `upstream_unavailable`. It is a warning, not an error, because taking
 * every target out of rotation can be deliberate, as when draining a backend.
 */
function findZeroWeightWarnings(
  upstreams: readonly Upstream[],
  routes: readonly Route[],
  locate: Locator,
  skip: SkipField,
): ConfigIssue[] {
  const warnings: ConfigIssue[] = [];
  upstreams.forEach((upstream, index) => {
    if (upstream.targets.length === 0 || skip(['upstreams', index, 'targets'])) return;
    if (upstream.targets.some((target) => target.weight > 0)) return;

    const users = routes.filter((route) => route.upstream === upstream.name);
    const names = users.map((route) => JSON.stringify(route.name)).join(', ');
    const affected = users.length > 0 ? `route(s) ${names}` : 'any route that uses it';
    warnings.push({
      ...locate(['upstreams', index, 'targets']),
      kind: 'upstream',
      name: upstream.name,
      field: 'targets',
      message:
        'every target has weight 0, so proxies respond with 502 upstream_unavailable to every ' +
        `request of ${affected}; give at least one target a weight above 0 ` +
        '(omitted, weight is 1)',
      summary: 'upstreams whose targets all have weight 0',
    });
  });
  return warnings;
}

/**
 * Returns a warning for each route whose stripPrefix never applies to a
 * request its paths match, or applies only when a param has one value.
 */
function findStripPrefixWarnings(
  routes: readonly Route[],
  locate: Locator,
  skip: SkipField,
): ConfigIssue[] {
  const warnings: ConfigIssue[] = [];
  routes.forEach((route, index) => {
    if (route.stripPrefix === undefined || skip(['routes', index, 'stripPrefix'])) return;
    if (hasFailedMatch(index, skip) || describePrefixProblem(route.stripPrefix)) return;

    const message = findUnusedStripPrefix(route);
    if (message === undefined) return;
    warnings.push({
      ...locate(['routes', index, 'stripPrefix']),
      kind: 'route',
      name: route.name,
      field: 'stripPrefix',
      value: route.stripPrefix,
      message,
      summary: 'routes whose stripPrefix does not apply to every request they match',
    });
  });
  return warnings;
}

function findShadowedRouteWarnings(
  routes: readonly Route[],
  locate: Locator,
  schemaFailures: SkipField,
): ConfigIssue[] {
  return findShadowedRoutes(withoutFailedMatches(routes, schemaFailures)).map(({ index, by }) => ({
    ...locate(['routes', index, 'name']),
    kind: 'route',
    name: routes[index].name,
    field: 'paths',
    message:
      `can never match: every request its paths match is taken first by route(s) ` +
      `${by.map((name) => JSON.stringify(name)).join(', ')}, because a static or param ` +
      'segment wins over a catch-all; remove the route or change its paths',
    summary: 'routes that can never match',
  }));
}
