import { isIP } from 'node:net';

import { LoomError, type ConfigIssue } from '../common/errors.js';
import { buildRouter } from '../data-plane/router/router.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';

/** Path inside a config document, such as `['routes', 2, 'paths', 0]`. */
export type ConfigPath = (string | number)[];

/** Maps a config path to its source file and line, when the config came from a file. */
export type Locator = (path: ConfigPath) => { file?: string; line?: number };

const METHOD_PATTERN = /^[A-Z][A-Z0-9_-]{0,31}$/;
const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Checks a complete configuration (every route and upstream that would be
 * stored) and returns every problem found, not only the first. Inputs must be
 * normalised. An empty result means the configuration can be stored and every
 * proxy can build a routing table from it.
 */
export function validateConfig(
  routes: readonly Route[],
  upstreams: readonly Upstream[],
  locate: Locator = () => ({}),
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const report = (path: ConfigPath, issue: Omit<ConfigIssue, 'file' | 'line'>) => {
    issues.push({ ...locate(path), ...issue });
  };

  checkDuplicates(upstreams, 'upstream', 'upstreams', report);
  checkDuplicates(routes, 'route', 'routes', report);
  upstreams.forEach((upstream, index) => checkUpstream(upstream, index, report));

  const upstreamNames = new Set(upstreams.map((upstream) => upstream.name));
  const validRoutes: Route[] = [];
  routes.forEach((route, index) => {
    const before = issues.length;
    checkRoute(route, index, upstreamNames, report);
    if (issues.length === before) validRoutes.push(route);
  });
  if (issues.length === 0) checkConflicts(validRoutes, routes, report);
  return issues;
}

type Report = (path: ConfigPath, issue: Omit<ConfigIssue, 'file' | 'line'>) => void;

function checkDuplicates(
  resources: readonly { name: string }[],
  kind: 'route' | 'upstream',
  list: string,
  report: Report,
): void {
  const seen = new Set<string>();
  resources.forEach((resource, index) => {
    if (seen.has(resource.name)) {
      report([list, index, 'name'], {
        kind,
        name: resource.name,
        field: 'name',
        value: resource.name,
        message: `duplicate ${kind} name; every ${kind} needs a unique name`,
      });
    }
    seen.add(resource.name);
  });
}

function checkUpstream(upstream: Upstream, index: number, report: Report): void {
  upstream.targets.forEach((target, targetIndex) => {
    const problem = describeTargetUrlProblem(target.url);
    if (problem) {
      report(['upstreams', index, 'targets', targetIndex, 'url'], {
        kind: 'upstream',
        name: upstream.name,
        field: `targets[${targetIndex}].url`,
        value: target.url,
        message: problem,
      });
    }
  });
}

/** Returns why a target URL is unusable, or undefined when it is valid. */
export function describeTargetUrlProblem(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'invalid URL; expected http://host:port or https://host:port with an optional base path';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return `unsupported scheme "${url.protocol.slice(0, -1)}"; use http or https`;
  }
  if (url.username || url.password) return 'credentials in a target URL are not supported';
  if (url.search || url.hash || raw.includes('?') || raw.includes('#')) {
    return 'a target URL cannot carry a query or fragment';
  }
  return undefined;
}

function checkRoute(route: Route, index: number, upstreams: Set<string>, report: Report): void {
  const at = (field: string, value: unknown, message: string, path: ConfigPath) =>
    report(['routes', index, ...path], { kind: 'route', name: route.name, field, value, message });

  if (!upstreams.has(route.upstream)) {
    const known = [...upstreams].sort().join(', ') || 'none declared';
    at('upstream', route.upstream, `unknown upstream; declared upstreams: ${known}`, ['upstream']);
  }
  route.hosts.forEach((host, hostIndex) => {
    const problem = describeHostProblem(host);
    if (problem) at(`hosts[${hostIndex}]`, host, problem, ['hosts', hostIndex]);
  });
  route.methods.forEach((method, methodIndex) => {
    if (!METHOD_PATTERN.test(method)) {
      at(`methods[${methodIndex}]`, method, 'invalid method; use a token such as GET or POST', [
        'methods',
        methodIndex,
      ]);
    }
  });
  route.paths.forEach((path, pathIndex) => {
    const problem = describePathProblem(route, path);
    if (problem) at(`paths[${pathIndex}]`, path, problem, ['paths', pathIndex]);
  });
}

/** Returns why a host pattern is invalid, or undefined when it is valid. */
export function describeHostProblem(host: string): string | undefined {
  if (host.startsWith('[') && host.endsWith(']') && isIP(host.slice(1, -1)) === 6) return undefined;
  const name = host.startsWith('*.') ? host.slice(2) : host;
  const labels = name.split('.');
  if (name.length === 0 || name.length > 253 || !labels.every((label) => HOST_LABEL.test(label))) {
    return 'invalid host; use a DNS name such as api.example.com, a wildcard such as *.example.com, or [IPv6], without a port';
  }
  return undefined;
}

function describePathProblem(route: Route, path: string): string | undefined {
  try {
    buildRouter([{ name: route.name, hosts: [], methods: [], paths: [path], value: null }]);
    return undefined;
  } catch (error) {
    if (error instanceof LoomError) return error.message;
    throw error;
  }
}

function checkConflicts(valid: Route[], all: readonly Route[], report: Report): void {
  try {
    buildRouter(valid.map((route) => ({ ...route, value: null })));
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    const named = all.findIndex((route) => error.message.includes(`"${route.name}"`));
    const index = Math.max(named, 0);
    report(['routes', index], {
      kind: 'route',
      name: all[index]?.name,
      field: 'paths',
      message: error.message,
    });
  }
}
