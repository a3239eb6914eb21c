import type { Command } from 'commander';
import { METHODS } from 'node:http';

import { ConfigError } from '../../common/errors.js';
import { loadConfigFiles } from '../../config/load.js';
import { PROXY_ERRORS } from '../../data-plane/proxy/error-response.js';
import {
  describeInvalidHost,
  describeQueryFragment,
} from '../../data-plane/proxy/prepare-request.js';
import { compileRouteActions, describeDoubleSlash } from '../../data-plane/proxy/route-actions.js';
import { normalizeRequestPath } from '../../data-plane/router/path.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import { EXIT, ExitError, exitHelp, withClient } from '../context.js';
import { addFilenameLookalikes, rejectFilenameLookalikes } from '../file-option.js';
import { offlineHeader, out, plural, printOfflineIssues } from '../output.js';
import { explainRequest, type Explanation, type HostMiss } from '../route-explainer.js';

const URL_WITH_AUTHORITY = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)(.*)$/is;
/** A method is a token (RFC 9110 sections 5.6.2 and 9.1). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Registers `loomctl explain`. */
export function registerExplain(program: Command): void {
  const explain = program
    .command('explain')
    .description(
      "Show which route a request matches and by which rule, using the proxies' router on " +
        'the stored configuration (or on files with -f).',
    )
    .argument('<method>', 'request method, such as GET')
    .argument('<url>', 'full URL (http://api.example.com/users/1) or a path (/users/1)')
    .option('--host <host>', 'Host header; overrides the host of a full URL')
    .option(
      '-f, --filename <file>',
      'explain against a config file instead of the store; repeat -f for several files',
      // No default value, so that help prints no "(default: [])".
      (file: string, files: string[] | undefined) => [...(files ?? []), file],
    );
  addFilenameLookalikes(explain)
    .addHelpText(
      'after',
      '\nThe router tries the routes of the exact host first, then the wildcard host,\n' +
        'then routes without hosts; within one, a static segment beats a param, and a\n' +
        'param beats a catch-all, read left to right. Other routes that match the same\n' +
        'request are listed with the rule that makes them lose.\n' +
        exitHelp('success', 'invalid configuration, unreachable control plane'),
    )
    .action(
      async (
        method: string,
        url: string,
        options: { host?: string; filename?: string[] },
        command: Command,
      ) => {
        rejectFilenameLookalikes(command);
        if (!TOKEN.test(method)) {
          command.error(
            `error: invalid method ${JSON.stringify(method)}: a method is one token of letters, ` +
              "digits and !#$%&'*+-.^_`|~, without spaces; give one such as GET",
            { code: 'commander.invalidArgument' },
          );
        }
        const target = splitTarget(url, options.host);
        if (target === undefined) {
          command.error(
            `error: invalid URL ${JSON.stringify(url)}; give a full URL such as ` +
              'http://api.example.com/users/1 or a path that starts with /, such as /users/1',
            { code: 'commander.invalidArgument' },
          );
        }
        const { host, pathAndQuery } = target;
        const hostProblem = host === undefined ? undefined : describeInvalidHost(host);
        if (hostProblem !== undefined) {
          command.error(
            `error: invalid Host ${JSON.stringify(host)} ` +
              `(${options.host !== undefined ? 'from --host' : 'from the URL'}): ${hostProblem}. ` +
              'Proxies respond to such a request with 400 bad_request; give a host name or address ' +
              'with an optional port, such as api.example.com or 127.0.0.1:8080',
            { code: 'commander.invalidArgument' },
          );
        }
        if (!METHODS.includes(method)) {
          printParserRejectedMethod(method);
          return;
        }
        if (method === 'CONNECT') {
          // Node.js hands CONNECT to the proxy apart from other requests, before any routing.
          const { message, status, error } = PROXY_ERRORS.connectNotSupported;
          out(`not routed: ${message}; proxies respond with ${status} ${error}`);
          return;
        }
        const queryStart = pathAndQuery.indexOf('?');
        const fragment = describeQueryFragment(pathAndQuery, queryStart);
        if (fragment !== undefined) {
          printBadRequest(fragment);
          return;
        }
        const path = queryStart === -1 ? pathAndQuery : pathAndQuery.slice(0, queryStart);
        const files = options.filename ?? [];
        const routes =
          files.length > 0
            ? (await loadFiles(files)).routes
            : (await withClient(command, (client) => client.getConfig())).routes;
        const normalized = normalizeRequestPath(path);
        if (typeof normalized === 'string' && normalized !== path) {
          out(`request path ${path} is normalised to ${normalized}, as proxies do before routing`);
        }
        // Proxies read the flag themselves, so explain cannot tell which action they run with.
        if (typeof normalized === 'string' && normalized.indexOf('%2F') !== -1) {
          out(
            'the path contains "%2F": proxies that run with --escaped-slashes reject respond with ' +
              '400 escaped_slash instead of routing it',
          );
        }
        const explanation = explainRequest(routes, method, host, path);
        const doubleSlash = describeRouteDoubleSlash(explanation, routes, normalized);
        if (doubleSlash !== undefined) {
          printBadRequest(doubleSlash);
          return;
        }
        printExplanation(explanation, routes, host);
      },
    );
}

/** Loads the files of -f; explain never writes, so errors get the header of offline checks. */
async function loadFiles(files: string[]): Promise<{ routes: Route[] }> {
  try {
    return await loadConfigFiles(files, { partial: true });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    printOfflineIssues(offlineHeader(error), error.issues);
    throw new ExitError(EXIT.error, '');
  }
}

/**
 * Splits the URL argument into the Host header and the request target (path, query and any
 * fragment), or returns undefined when it is neither a URL with a host nor a path. As proxies do
 * with an absolute-form target, a URL without a path gets `/` before the rest.
 */
function splitTarget(
  url: string,
  hostOption: string | undefined,
): { host?: string; pathAndQuery: string } | undefined {
  const full = URL_WITH_AUTHORITY.exec(url);
  if (full) {
    const authority = full[1].slice(full[1].lastIndexOf('@') + 1);
    // As in an absolute-form request target, the URL needs a host before any port.
    if (authority === '' || authority.startsWith(':')) return undefined;
    const rest = full[2];
    return {
      host: hostOption ?? authority,
      pathAndQuery: rest.startsWith('/') ? rest : '/' + rest,
    };
  }
  if (!url.startsWith('/')) return undefined;
  return { host: hostOption, pathAndQuery: url };
}

/**
 * Returns the message of the 400 that proxies send when the remainder of the path after the
 * matched route's stripPrefix starts with `//`, or undefined when they forward the request.
 */
function describeRouteDoubleSlash(
  explanation: Explanation,
  routes: Route[],
  normalizedPath: ReturnType<typeof normalizeRequestPath>,
): string | undefined {
  if (explanation.kind !== 'found' || typeof normalizedPath !== 'string') return undefined;
  const route = routes.find((candidate) => candidate.name === explanation.route);
  if (route === undefined) return undefined;
  const problem = describeDoubleSlash(compileRouteActions(route), normalizedPath);
  if (problem === undefined) return undefined;
  return `route ${explanation.route} matches by path ${explanation.path}, but ${problem}`;
}

function printBadRequest(reason: string): void {
  out(`bad request: ${reason}; proxies respond with 400 bad_request`);
}

/**
 * Prints the 400 that proxies send for a method outside `http.METHODS`: Node.js's HTTP parser
 * accepts only those, in upper case, and rejects the request before routing.
 */
function printParserRejectedMethod(method: string): void {
  printBadRequest(PROXY_ERRORS.unparsableRequest.message);
  out(
    "  Node.js's HTTP parser accepts only the methods in http.METHODS, in upper case, and " +
      `rejects ${JSON.stringify(method)} before routing`,
  );
  const upper = method.toUpperCase();
  if (METHODS.includes(upper)) out(`  methods are case-sensitive: did you mean ${upper}?`);
}

function printExplanation(explanation: Explanation, routes: Route[], host?: string): void {
  if (explanation.kind === 'bad-request') {
    printBadRequest(explanation.reason);
    return;
  }
  if (explanation.kind === 'not-found') {
    out(
      `no route matches; proxies answer 404 route_not_found (${plural(routes.length, 'route')} checked)`,
    );
    printHostMisses(explanation.hostMisses, host);
    return;
  }
  if (explanation.kind === 'method-not-allowed') {
    out(
      `no route matches this method; proxies answer 405 with Allow: ${explanation.allow.join(', ')}`,
    );
    return;
  }

  const upstream = routes.find((route) => route.name === explanation.route)?.upstream ?? '?';
  out(`route ${explanation.route} (upstream ${upstream}) matches by path ${explanation.path}`);
  const hostRule =
    explanation.hostClass === 'any'
      ? 'any host (the route lists no hosts)'
      : `host ${explanation.host}`;
  out(`  host class: ${explanation.hostClass}, ${hostRule}`);
  explanation.segments.forEach((segment, index) => {
    out(
      `  segment ${index + 1}: ${segment.kind} ${segment.pattern} = ${JSON.stringify(segment.value)}`,
    );
  });
  const params = Object.entries(explanation.params);
  if (params.length > 0) {
    out(
      `  params: ${params.map(([name, value]) => `${name}=${JSON.stringify(value)}`).join(', ')}`,
    );
  }
  if (explanation.losers.length === 0) {
    out('no other route matches this request');
    return;
  }
  out('also match, but lose to it:');
  for (const loser of explanation.losers) {
    out(
      `  route ${loser.route} path ${loser.path} (host class ${loser.hostClass}): ${loser.reason}`,
    );
  }
}

function printHostMisses(misses: HostMiss[], host: string | undefined): void {
  if (misses.length === 0) return;

  const sent = host === undefined ? 'no Host header' : `Host ${host}`;
  out(`routes that match this path and method on other hosts (the request has ${sent}):`);
  for (const miss of misses) {
    out(`  route ${miss.route} path ${miss.path} with Host ${miss.hosts.join(' or ')}`);
  }
  out(`pass --host ${misses[0].hosts[0]}, or a full URL with that host, to explain such a request`);
}
