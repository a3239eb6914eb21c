import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { LoomError } from '../../common/errors.js';
import { MAX_PATH_LENGTH } from '../../data-plane/router/path.js';
import { buildRouter } from '../../data-plane/router/router.js';
import type { Router, RouterMatch, RouterRoute } from '../../data-plane/router/types.js';
import { shuffle } from './router-reference.js';

interface RouteSpec {
  name: string;
  paths: string[];
  hosts?: string[];
  methods?: string[];
}

type Outcome =
  | { route: string; params: Record<string, string> }
  | { allow: string[] }
  | 'not-found'
  | 'bad-request';

interface Case {
  path: string;
  method?: string;
  host?: string;
  /** A route name alone means a match without params. */
  expected: Outcome | string;
}

interface Scenario {
  name: string;
  routes: RouteSpec[];
  cases: Case[];
}

function toRoutes(specs: RouteSpec[]): RouterRoute<string>[] {
  return specs.map((spec) => ({
    name: spec.name,
    hosts: spec.hosts ?? [],
    paths: spec.paths,
    methods: spec.methods ?? [],
    value: `value of ${spec.name}`,
  }));
}

/** Returns the routes in their original order, reversed, and shuffled with a fixed seed. */
function orders<T>(items: T[]): { label: string; items: T[] }[] {
  return [
    { label: 'original', items },
    { label: 'reversed', items: [...items].reverse() },
    { label: 'shuffled', items: shuffle(items, 0x5eed) },
  ];
}

function toOutcome(match: RouterMatch<string>): Outcome {
  switch (match.kind) {
    case 'found':
      assert.equal(match.value, `value of ${match.route}`);
      assert.equal('toString' in match.params, false);
      // Object.fromEntries defines keys, so a `__proto__` param survives the copy.
      return { route: match.route, params: Object.fromEntries(Object.entries(match.params)) };
    case 'method-not-allowed':
      return { allow: match.allow };
    case 'not-found':
      return 'not-found';
    case 'bad-request':
      assert.ok(match.reason.length > 0);
      return 'bad-request';
  }
}

function expectedOutcome(expected: Outcome | string): Outcome {
  if (expected === 'not-found' || expected === 'bad-request') return expected;
  return typeof expected === 'string' ? { route: expected, params: {} } : expected;
}

const scenarios: Scenario[] = [
  {
    name: 'static branch backtracks to param',
    routes: [
      { name: 'hello', paths: ['/text/hello'] },
      { name: 'test', paths: ['/text/:e/test'] },
      { name: 'top', paths: ['/:c'] },
    ],
    cases: [
      { path: '/text/hellos/test', expected: { route: 'test', params: { e: 'hellos' } } },
      { path: '/text/hello/test', expected: { route: 'test', params: { e: 'hello' } } },
      { path: '/text/hello', expected: 'hello' },
      { path: '/text', expected: { route: 'top', params: { c: 'text' } } },
      { path: '/text/hello/other', expected: 'not-found' },
    ],
  },
  {
    name: 'param beside static',
    routes: [
      { name: 'param', paths: ['/:param'] },
      { name: 'static', paths: ['/static'] },
    ],
    cases: [
      { path: '/s', expected: { route: 'param', params: { param: 's' } } },
      { path: '/static', expected: 'static' },
      { path: '/statics', expected: { route: 'param', params: { param: 'statics' } } },
      { path: '/stati', expected: { route: 'param', params: { param: 'stati' } } },
      { path: '/', expected: 'not-found' },
    ],
  },
  {
    name: 'static prefixes do not capture param',
    routes: [
      { name: 'ab1', paths: ['/ab1'] },
      { name: 'ab2', paths: ['/ab2'] },
      { name: 'ac', paths: ['/ac'] },
      { name: 'params', paths: ['/:params'] },
      { name: 'static-test', paths: ['/static-test'] },
    ],
    cases: [
      { path: '/abcdef', expected: { route: 'params', params: { params: 'abcdef' } } },
      { path: '/ab1', expected: 'ab1' },
      { path: '/ab', expected: { route: 'params', params: { params: 'ab' } } },
      { path: '/a', expected: { route: 'params', params: { params: 'a' } } },
      { path: '/static-test', expected: 'static-test' },
      { path: '/static', expected: { route: 'params', params: { params: 'static' } } },
      { path: '/static-tests', expected: { route: 'params', params: { params: 'static-tests' } } },
    ],
  },
  {
    name: 'catch-all needs a segment boundary',
    routes: [{ name: 'c', paths: ['/c/*rest'] }],
    cases: [
      { path: '/cart', expected: 'not-found' },
      { path: '/cAnything', expected: 'not-found' },
      { path: '/c', expected: 'not-found' },
      { path: '/c/', expected: { route: 'c', params: { rest: '' } } },
      { path: '/c/a', expected: { route: 'c', params: { rest: 'a' } } },
      { path: '/c/a/b', expected: { route: 'c', params: { rest: 'a/b' } } },
      { path: '/c//a', expected: { route: 'c', params: { rest: '/a' } } },
      { path: '/c/a%2Fb', expected: { route: 'c', params: { rest: 'a/b' } } },
    ],
  },
  {
    name: 'empty segments never match params',
    routes: [
      { name: 'params', paths: ['/a/:b/:c/d'] },
      { name: 'double-slash', paths: ['/x//y'] },
      { name: 'between', paths: ['/p/:x/q'] },
    ],
    cases: [
      { path: '/a///d', expected: 'not-found' },
      { path: '/a/b//d', expected: 'not-found' },
      { path: '/a/b/c/d', expected: { route: 'params', params: { b: 'b', c: 'c' } } },
      { path: '/x//y', expected: 'double-slash' },
      { path: '/x/y', expected: 'not-found' },
      { path: '/p//q', expected: 'not-found' },
    ],
  },
  {
    name: 'static beats param beats catch-all',
    routes: [
      { name: 'static', paths: ['/a/b'] },
      { name: 'param', paths: ['/a/:x'] },
      { name: 'catch-all', paths: ['/a/*rest'] },
      { name: 'first-param', paths: ['/:y/b'] },
    ],
    cases: [
      { path: '/a/b', expected: 'static' },
      { path: '/a/c', expected: { route: 'param', params: { x: 'c' } } },
      { path: '/a/c/d', expected: { route: 'catch-all', params: { rest: 'c/d' } } },
      { path: '/a/', expected: { route: 'catch-all', params: { rest: '' } } },
      { path: '/z/b', expected: { route: 'first-param', params: { y: 'z' } } },
      { path: '/a', expected: 'not-found' },
    ],
  },
  {
    name: 'deep backtracking',
    routes: [
      { name: 'static', paths: ['/a/b/c/d'] },
      { name: 'param', paths: ['/a/:x/c/e'] },
      { name: 'catch-all', paths: ['/a/*rest'] },
      { name: 'root-catch-all', paths: ['/*'] },
    ],
    cases: [
      { path: '/a/b/c/d', expected: 'static' },
      { path: '/a/b/c/e', expected: { route: 'param', params: { x: 'b' } } },
      { path: '/a/b/c/f', expected: { route: 'catch-all', params: { rest: 'b/c/f' } } },
      { path: '/b/c', expected: { route: 'root-catch-all', params: { '*': 'b/c' } } },
      { path: '/', expected: { route: 'root-catch-all', params: { '*': '' } } },
    ],
  },
  {
    name: 'merged static chains backtrack',
    routes: [
      { name: 'user', paths: ['/api/v1/users/:id'] },
      { name: 'status', paths: ['/api/:version/status'] },
      { name: 'long', paths: ['/very/deeply/nested/route/hello/there'] },
    ],
    cases: [
      { path: '/api/v1/users/7', expected: { route: 'user', params: { id: '7' } } },
      { path: '/api/v1/status', expected: { route: 'status', params: { version: 'v1' } } },
      { path: '/api/v1/users', expected: 'not-found' },
      { path: '/api/v1/users/', expected: 'not-found' },
      { path: '/api/v1', expected: 'not-found' },
      { path: '/api/v1/usersx/7', expected: 'not-found' },
      { path: '/very/deeply/nested/route/hello/there', expected: 'long' },
      { path: '/very/deeply/nested/route/hello/therex', expected: 'not-found' },
      { path: '/very/deeply/nested/route/hello/ther', expected: 'not-found' },
      { path: '/very/deeply/nested/route/hellothere', expected: 'not-found' },
    ],
  },
  {
    name: 'root and trailing slash',
    routes: [
      { name: 'root', paths: ['/'] },
      { name: 'no-slash', paths: ['/a'] },
      { name: 'slash', paths: ['/a/'] },
    ],
    cases: [
      { path: '/', expected: 'root' },
      { path: '/a', expected: 'no-slash' },
      { path: '/a/', expected: 'slash' },
      { path: '/a//', expected: 'not-found' },
    ],
  },
  {
    name: 'paths are case-sensitive',
    routes: [{ name: 'lower', paths: ['/users'] }],
    cases: [
      { path: '/users', expected: 'lower' },
      { path: '/Users', expected: 'not-found' },
    ],
  },
  {
    name: 'methods search past static routes',
    routes: [
      { name: 'get-admin', paths: ['/users/admin'], methods: ['GET'] },
      { name: 'post-user', paths: ['/users/:id'], methods: ['POST'] },
      { name: 'any', paths: ['/any'] },
    ],
    cases: [
      {
        path: '/users/admin',
        method: 'POST',
        expected: { route: 'post-user', params: { id: 'admin' } },
      },
      { path: '/users/admin', method: 'GET', expected: 'get-admin' },
      { path: '/users/admin', method: 'DELETE', expected: { allow: ['GET', 'HEAD', 'POST'] } },
      { path: '/users/bob', method: 'GET', expected: { allow: ['POST'] } },
      { path: '/users/admin', method: 'HEAD', expected: 'get-admin' },
      { path: '/any', method: 'DELETE', expected: 'any' },
      { path: '/any', method: 'PURGE', expected: 'any' },
      { path: '/none', method: 'GET', expected: 'not-found' },
    ],
  },
  {
    name: 'methods split one pattern',
    routes: [
      { name: 'read', paths: ['/u/:id'], methods: ['GET', 'HEAD'] },
      { name: 'write', paths: ['/u/:name'], methods: ['PUT'] },
    ],
    cases: [
      { path: '/u/1', method: 'GET', expected: { route: 'read', params: { id: '1' } } },
      { path: '/u/1', method: 'PUT', expected: { route: 'write', params: { name: '1' } } },
      { path: '/u/1', method: 'POST', expected: { allow: ['GET', 'HEAD', 'PUT'] } },
    ],
  },
  {
    name: 'param names per route',
    routes: [
      { name: 'orders', paths: ['/u/:id/orders'] },
      { name: 'profile', paths: ['/u/:name/profile'] },
      { name: 'proto', paths: ['/p/:__proto__/:constructor'] },
    ],
    cases: [
      { path: '/u/7/orders', expected: { route: 'orders', params: { id: '7' } } },
      { path: '/u/7/profile', expected: { route: 'profile', params: { name: '7' } } },
      {
        path: '/p/x/y',
        expected: {
          route: 'proto',
          params: Object.fromEntries([
            ['__proto__', 'x'],
            ['constructor', 'y'],
          ]),
        },
      },
    ],
  },
  {
    name: 'hosts by precedence',
    routes: [
      { name: 'exact', paths: ['/x'], hosts: ['api.example.com'] },
      { name: 'wildcard', paths: ['/x'], hosts: ['*.example.com'] },
      { name: 'deep-wildcard', paths: ['/x'], hosts: ['*.api.example.com'] },
      { name: 'any', paths: ['/x'] },
      { name: 'ipv6', paths: ['/x'], hosts: ['[::1]'] },
    ],
    cases: [
      { path: '/x', host: 'api.example.com', expected: 'exact' },
      { path: '/x', host: 'API.Example.COM:8080', expected: 'exact' },
      { path: '/x', host: 'api.example.com.', expected: 'exact' },
      { path: '/x', host: 'api.example.com.:443', expected: 'exact' },
      { path: '/x', host: 'www.example.com', expected: 'wildcard' },
      { path: '/x', host: 'WWW.example.com:80', expected: 'wildcard' },
      { path: '/x', host: 'v1.api.example.com', expected: 'deep-wildcard' },
      { path: '/x', host: 'a.b.example.com', expected: 'any' },
      { path: '/x', host: 'example.com', expected: 'any' },
      { path: '/x', host: '.example.com', expected: 'any' },
      { path: '/x', host: 'other.org', expected: 'any' },
      { path: '/x', expected: 'any' },
      { path: '/x', host: '', expected: 'any' },
      { path: '/x', host: '[::1]:8080', expected: 'ipv6' },
      { path: '/x', host: '[::1]', expected: 'ipv6' },
      { path: '/x', host: '[::2]', expected: 'any' },
      { path: '/x', host: '[::1', expected: 'any' },
    ],
  },
  {
    name: 'hosts fall through',
    routes: [
      { name: 'exact-only', paths: ['/only'], hosts: ['a.example.com'] },
      { name: 'exact-get', paths: ['/m'], hosts: ['a.example.com'], methods: ['GET'] },
      { name: 'wildcard-post', paths: ['/m'], hosts: ['*.example.com'], methods: ['POST'] },
      { name: 'any-put', paths: ['/m'], methods: ['PUT'] },
      { name: 'any-param', paths: ['/:p'] },
    ],
    cases: [
      { path: '/only', host: 'a.example.com', expected: 'exact-only' },
      {
        path: '/other',
        host: 'a.example.com',
        expected: { route: 'any-param', params: { p: 'other' } },
      },
      { path: '/m', host: 'a.example.com', method: 'GET', expected: 'exact-get' },
      { path: '/m', host: 'a.example.com', method: 'POST', expected: 'wildcard-post' },
      { path: '/m', host: 'a.example.com', method: 'PUT', expected: 'any-put' },
      {
        path: '/m',
        host: 'b.example.com',
        method: 'GET',
        expected: { route: 'any-param', params: { p: 'm' } },
      },
    ],
  },
  {
    name: 'method-not-allowed spans host classes',
    routes: [
      { name: 'exact-get', paths: ['/m'], hosts: ['a.example.com'], methods: ['GET'] },
      { name: 'wildcard-post', paths: ['/:p'], hosts: ['*.example.com'], methods: ['POST'] },
      { name: 'any-put', paths: ['/m'], methods: ['PUT'] },
    ],
    cases: [
      {
        path: '/m',
        host: 'a.example.com',
        method: 'DELETE',
        expected: { allow: ['GET', 'HEAD', 'POST', 'PUT'] },
      },
      { path: '/m', host: 'b.example.com', method: 'DELETE', expected: { allow: ['POST', 'PUT'] } },
      { path: '/m', method: 'DELETE', expected: { allow: ['PUT'] } },
      { path: '/n', method: 'DELETE', expected: 'not-found' },
    ],
  },
  {
    name: 'percent-encoding',
    routes: [
      { name: 'file', paths: ['/files/:name'] },
      { name: 'encoded-static', paths: ['/a%2fb'] },
      { name: 'tilde', paths: ['/%7Euser'] },
      { name: 'semicolon', paths: ['/x;y'] },
    ],
    cases: [
      { path: '/files/a%2Fb', expected: { route: 'file', params: { name: 'a/b' } } },
      { path: '/files/%2520', expected: { route: 'file', params: { name: '%20' } } },
      { path: '/files/caf%C3%A9', expected: { route: 'file', params: { name: 'café' } } },
      { path: '/files/caf%c3%a9', expected: { route: 'file', params: { name: 'café' } } },
      { path: '/fil%65s/x', expected: { route: 'file', params: { name: 'x' } } },
      { path: '/files/%2e%2E%2Fx', expected: 'bad-request' },
      { path: '/files/a%2F..b', expected: { route: 'file', params: { name: 'a/..b' } } },
      { path: '/a%2Fb', expected: 'encoded-static' },
      { path: '/a%2fb', expected: 'encoded-static' },
      { path: '/a/b', expected: 'not-found' },
      { path: '/~user', expected: 'tilde' },
      { path: '/%7euser', expected: 'tilde' },
      { path: '/x;y', expected: 'semicolon' },
      { path: '/x%3By', expected: 'not-found' },
      { path: '/files/%3B', expected: { route: 'file', params: { name: ';' } } },
      { path: '/files/%E9', expected: 'bad-request' },
      { path: '/files/%C3', expected: 'bad-request' },
      { path: '/files/%ED%A0%80', expected: 'bad-request' },
      { path: '/files/%zz', expected: 'bad-request' },
      { path: '/files/%4', expected: 'bad-request' },
      { path: '/files/%', expected: 'bad-request' },
      { path: '/%C3/%A9', expected: 'bad-request' },
    ],
  },
  {
    name: 'dot segments',
    routes: [
      { name: 'public', paths: ['/public/*rest'] },
      { name: 'admin', paths: ['/admin'] },
      { name: 'dir', paths: ['/admin/'] },
      { name: 'well-known', paths: ['/.well-known/:file'] },
    ],
    cases: [
      { path: '/public/../admin', expected: 'admin' },
      { path: '/public/%2e%2e/admin', expected: 'admin' },
      { path: '/public/%2E%2e/admin', expected: 'admin' },
      { path: '/public/.%2E/admin', expected: 'admin' },
      { path: '/public/./x', expected: { route: 'public', params: { rest: 'x' } } },
      { path: '/public/a/../b', expected: { route: 'public', params: { rest: 'b' } } },
      { path: '/public/a/..', expected: { route: 'public', params: { rest: '' } } },
      { path: '/public/..', expected: 'not-found' },
      { path: '/admin/.', expected: 'dir' },
      { path: '/admin/x/..', expected: 'dir' },
      { path: '/./admin', expected: 'admin' },
      { path: '/public//../admin', expected: { route: 'public', params: { rest: 'admin' } } },
      { path: '/..', expected: 'bad-request' },
      { path: '/%2e%2e', expected: 'bad-request' },
      { path: '/public/../../admin', expected: 'bad-request' },
      { path: '/.well-known/x', expected: { route: 'well-known', params: { file: 'x' } } },
      { path: '/public/...', expected: { route: 'public', params: { rest: '...' } } },
      { path: '/public/..%2Fadmin', expected: 'bad-request' },
      { path: '/public/x%2F..', expected: 'bad-request' },
    ],
  },
  {
    name: 'request targets',
    routes: [{ name: 'all', paths: ['/*rest'] }],
    cases: [
      { path: '*', method: 'OPTIONS', expected: 'not-found' },
      { path: '', expected: 'bad-request' },
      { path: 'a/b', expected: 'bad-request' },
      { path: 'http://example.com/a', expected: 'bad-request' },
      {
        path: '/' + 'a'.repeat(MAX_PATH_LENGTH - 1),
        expected: { route: 'all', params: { rest: 'a'.repeat(MAX_PATH_LENGTH - 1) } },
      },
      { path: '/' + 'a'.repeat(MAX_PATH_LENGTH), expected: 'bad-request' },
    ],
  },
  {
    name: 'param with static suffix',
    routes: [
      { name: 'json', paths: ['/files/:name.json'] },
      { name: 'tarball', paths: ['/files/:name.tar.gz'] },
      { name: 'split', paths: ['/files/:base.:ext'] },
      { name: 'plain', paths: ['/files/:file'] },
    ],
    cases: [
      { path: '/files/report.json', expected: { route: 'json', params: { name: 'report' } } },
      { path: '/files/a.b.c.tar.gz', expected: { route: 'tarball', params: { name: 'a.b.c' } } },
      {
        path: '/files/archive.zip',
        expected: { route: 'split', params: { base: 'archive', ext: 'zip' } },
      },
      // The separator splits at its last possible occurrence.
      { path: '/files/a.b.c', expected: { route: 'split', params: { base: 'a.b', ext: 'c' } } },
      { path: '/files/.json', expected: { route: 'plain', params: { file: '.json' } } },
      { path: '/files/x.', expected: { route: 'plain', params: { file: 'x.' } } },
      { path: '/files/noext', expected: { route: 'plain', params: { file: 'noext' } } },
      { path: '/files/a%2Fb.json', expected: { route: 'json', params: { name: 'a/b' } } },
      { path: '/files/a%2Ejson', expected: { route: 'json', params: { name: 'a' } } },
      { path: '/files/..json', expected: { route: 'json', params: { name: '.' } } },
      { path: '/files/report.json/x', expected: 'not-found' },
    ],
  },
  {
    name: 'separators stay inside their segment',
    routes: [
      { name: 'split', paths: ['/:dir/:base.:ext'] },
      { name: 'versioned', paths: ['/:dir/v:major-:minor'] },
      { name: 'plain', paths: ['/:dir/:file'] },
    ],
    cases: [
      { path: '/a.b/c', expected: { route: 'plain', params: { dir: 'a.b', file: 'c' } } },
      { path: '/a./bcd', expected: { route: 'plain', params: { dir: 'a.', file: 'bcd' } } },
      { path: '/a.b/.c', expected: { route: 'plain', params: { dir: 'a.b', file: '.c' } } },
      {
        path: '/a.b/c.d',
        expected: { route: 'split', params: { dir: 'a.b', base: 'c', ext: 'd' } },
      },
      { path: '/v1-2/v34', expected: { route: 'plain', params: { dir: 'v1-2', file: 'v34' } } },
      {
        path: '/v1-2/v3-4',
        expected: { route: 'versioned', params: { dir: 'v1-2', major: '3', minor: '4' } },
      },
      {
        path: `/${'x.-'.repeat(2000)}/yyyy`,
        expected: { route: 'plain', params: { dir: 'x.-'.repeat(2000), file: 'yyyy' } },
      },
    ],
  },
  {
    name: 'param with static prefix',
    routes: [
      { name: 'versioned', paths: ['/v:version/status'] },
      { name: 'fixed', paths: ['/v1/status'] },
      { name: 'page', paths: ['/:page/status'] },
    ],
    cases: [
      { path: '/v2/status', expected: { route: 'versioned', params: { version: '2' } } },
      { path: '/v1/status', expected: 'fixed' },
      { path: '/v/status', expected: { route: 'page', params: { page: 'v' } } },
      { path: '/x2/status', expected: { route: 'page', params: { page: 'x2' } } },
      { path: '/V2/status', expected: { route: 'page', params: { page: 'V2' } } },
    ],
  },
  {
    name: 'mixed segment precedence',
    routes: [
      { name: 'json', paths: ['/:name.json'] },
      { name: 'version', paths: ['/v:version'] },
      { name: 'major-minor', paths: ['/v:major.:minor'] },
      { name: 'dot', paths: ['/:base.:ext'] },
      { name: 'dash', paths: ['/:left-:right'] },
      { name: 'page', paths: ['/:page'] },
    ],
    cases: [
      // More static characters first.
      { path: '/v1.json', expected: { route: 'json', params: { name: 'v1' } } },
      { path: '/v1.2', expected: { route: 'major-minor', params: { major: '1', minor: '2' } } },
      // Then fewer params.
      { path: '/va-b', expected: { route: 'version', params: { version: 'a-b' } } },
      { path: '/v1', expected: { route: 'version', params: { version: '1' } } },
      // Then the shape in code-unit order: "-" sorts before ".".
      { path: '/x.y-z', expected: { route: 'dash', params: { left: 'x.y', right: 'z' } } },
      { path: '/x.y', expected: { route: 'dot', params: { base: 'x', ext: 'y' } } },
      { path: '/plain', expected: { route: 'page', params: { page: 'plain' } } },
    ],
  },
  {
    name: 'literal colon',
    routes: [
      { name: 'batch', paths: ['/v1/things::batchGet'] },
      { name: 'cancel', paths: ['/v1/things/:id::cancel'] },
    ],
    cases: [
      { path: '/v1/things:batchGet', expected: 'batch' },
      { path: '/v1/things/42:cancel', expected: { route: 'cancel', params: { id: '42' } } },
      { path: '/v1/things/a:b:cancel', expected: { route: 'cancel', params: { id: 'a:b' } } },
      { path: '/v1/things/:cancel', expected: 'not-found' },
      { path: '/v1/things/42', expected: 'not-found' },
      { path: '/v1/things%3AbatchGet', expected: 'not-found' },
    ],
  },
  {
    name: 'static-prefixed param backtracks',
    routes: [
      { name: 'static', paths: ['/static-test'] },
      { name: 'prefixed', paths: ['/static-:param'] },
    ],
    cases: [
      { path: '/static-test1', expected: { route: 'prefixed', params: { param: 'test1' } } },
      { path: '/static-test', expected: 'static' },
      { path: '/static-tes', expected: { route: 'prefixed', params: { param: 'tes' } } },
      { path: '/static-', expected: 'not-found' },
      { path: '/static', expected: 'not-found' },
    ],
  },
  {
    name: 'prefix pattern covers parent',
    routes: [
      { name: 'api', paths: ['/api/**'] },
      { name: 'health', paths: ['/api/health'] },
      { name: 'files', paths: ['/files/:owner/**rest'] },
      { name: 'other', paths: ['/apiv2'] },
    ],
    cases: [
      { path: '/api', expected: { route: 'api', params: { '*': '' } } },
      { path: '/api/', expected: { route: 'api', params: { '*': '' } } },
      { path: '/api/x', expected: { route: 'api', params: { '*': 'x' } } },
      { path: '/api/x/y', expected: { route: 'api', params: { '*': 'x/y' } } },
      { path: '/api/health', expected: 'health' },
      { path: '/apiv2', expected: 'other' },
      { path: '/apiv3', expected: 'not-found' },
      { path: '/ap', expected: 'not-found' },
      { path: '/files/ann', expected: { route: 'files', params: { owner: 'ann', rest: '' } } },
      {
        path: '/files/ann/a/b',
        expected: { route: 'files', params: { owner: 'ann', rest: 'a/b' } },
      },
      { path: '/files', expected: 'not-found' },
    ],
  },
  {
    name: 'root prefix pattern',
    routes: [{ name: 'all', paths: ['/**'] }],
    cases: [
      { path: '/', expected: { route: 'all', params: { '*': '' } } },
      { path: '/a/b', expected: { route: 'all', params: { '*': 'a/b' } } },
    ],
  },
  {
    name: 'patterns without catch-all are exact',
    routes: [{ name: 'api', paths: ['/api'] }],
    cases: [
      { path: '/api', expected: 'api' },
      { path: '/api/', expected: 'not-found' },
      { path: '/api/x', expected: 'not-found' },
      { path: '/apiv2', expected: 'not-found' },
    ],
  },
  {
    name: 'HEAD falls back to GET',
    routes: [
      { name: 'get-a', paths: ['/a'], methods: ['GET'] },
      { name: 'get-b', paths: ['/b'], methods: ['GET'] },
      { name: 'head-b', paths: ['/b'], methods: ['HEAD'] },
      { name: 'get-static', paths: ['/c/x'], methods: ['GET'] },
      { name: 'head-param', paths: ['/c/:id'], methods: ['HEAD'] },
      { name: 'post-d', paths: ['/d'], methods: ['POST'] },
    ],
    cases: [
      { path: '/a', method: 'HEAD', expected: 'get-a' },
      { path: '/b', method: 'HEAD', expected: 'head-b' },
      { path: '/b', method: 'GET', expected: 'get-b' },
      // A GET route matches HEAD at its own place, which comes before a param place.
      { path: '/c/x', method: 'HEAD', expected: 'get-static' },
      { path: '/c/y', method: 'HEAD', expected: { route: 'head-param', params: { id: 'y' } } },
      { path: '/a', method: 'POST', expected: { allow: ['GET', 'HEAD'] } },
      { path: '/b', method: 'POST', expected: { allow: ['GET', 'HEAD'] } },
      { path: '/d', method: 'HEAD', expected: { allow: ['POST'] } },
      { path: '/a', method: 'head', expected: { allow: ['GET', 'HEAD'] } },
    ],
  },
  {
    name: 'overlapping registrations coexist',
    routes: [
      { name: 'user', paths: ['/user/:name'] },
      { name: 'profile', paths: ['/user/alice/:profile'] },
      { name: 'bid', paths: ['/bids/:bidId'] },
      { name: 'tender', paths: ['/bids/:tenderId/list'] },
    ],
    cases: [
      { path: '/user/alice', expected: { route: 'user', params: { name: 'alice' } } },
      { path: '/user/bob', expected: { route: 'user', params: { name: 'bob' } } },
      { path: '/user/alice/pics', expected: { route: 'profile', params: { profile: 'pics' } } },
      { path: '/user/bob/pics', expected: 'not-found' },
      { path: '/bids/7', expected: { route: 'bid', params: { bidId: '7' } } },
      { path: '/bids/7/list', expected: { route: 'tender', params: { tenderId: '7' } } },
    ],
  },
  {
    name: 'bare catch-all needs a boundary',
    routes: [{ name: 'c', paths: ['/c/*'] }],
    cases: [
      { path: '/cart', expected: 'not-found' },
      { path: '/c', expected: 'not-found' },
      { path: '/c/art', expected: { route: 'c', params: { '*': 'art' } } },
    ],
  },
  {
    name: 'host normalization',
    routes: [
      { name: 'exact', paths: ['/h'], hosts: ['Api.Example.com.'] },
      { name: 'ipv6', paths: ['/h'], hosts: ['[::FFFF:7F00:1]'] },
      { name: 'any', paths: ['/h'] },
    ],
    cases: [
      { path: '/h', host: 'api.example.com', expected: 'exact' },
      { path: '/h', host: 'API.EXAMPLE.COM.:8443', expected: 'exact' },
      { path: '/h', host: 'api.example.com:', expected: 'exact' },
      { path: '/h', host: 'api.example.com..', expected: 'any' },
      // Percent-encoding in a host is not decoded (see Known gaps in docs/routing.md).
      { path: '/h', host: 'api.ex%61mple.com', expected: 'any' },
      { path: '/h', host: 'api.example.co', expected: 'any' },
      { path: '/h', host: '[::ffff:7f00:1]:80', expected: 'ipv6' },
      { path: '/h', host: '[::FFFF:7F00:1]', expected: 'ipv6' },
      { path: '/h', host: '::ffff:7f00:1', expected: 'any' },
    ],
  },
  {
    name: 'dot-segment traversal',
    routes: [
      { name: 'info', paths: ['/info/*rest'] },
      { name: 'private', paths: ['/private'] },
      { name: 'p', paths: ['/p/:name/x'] },
    ],
    cases: [
      { path: '/info/../private', expected: 'private' },
      { path: '/info/%2e%2e/private', expected: 'private' },
      { path: '/info/%2E%2e/private', expected: 'private' },
      { path: '/p/%2e%2e/x', expected: 'not-found' },
      { path: '/p/%2e/x', expected: 'not-found' },
      { path: '/p/.../x', expected: { route: 'p', params: { name: '...' } } },
      { path: '/info/..;/private', expected: 'bad-request' },
      { path: '/info/.;a/private', expected: 'bad-request' },
      { path: '/info/%2e%2e;x/private', expected: 'bad-request' },
      { path: '/info/..%3B/private', expected: 'bad-request' },
      { path: '/info/..%3b/private', expected: 'bad-request' },
      { path: '/info/a;b', expected: { route: 'info', params: { rest: 'a;b' } } },
      { path: '/info/..a', expected: { route: 'info', params: { rest: '..a' } } },
    ],
  },
  {
    name: 'empty segment on a wide node',
    routes: [
      ...['a', 'c', 'f', 'h', 'i', 'j', 'k', 'l'].map((letter) => ({
        name: letter,
        paths: [`/${letter}`],
      })),
      { name: 'double', paths: ['//'], methods: ['POST'] },
    ],
    cases: [
      { path: '//', method: 'POST', expected: 'double' },
      { path: '//', method: 'GET', expected: { allow: ['POST'] } },
      { path: '//.', method: 'GET', expected: { allow: ['POST'] } },
      { path: '/a', expected: 'a' },
    ],
  },
  {
    name: 'encoded reserved characters',
    routes: [{ name: 'file', paths: ['/files/:name'] }],
    cases: [
      { path: '/files/a%2Fb', expected: { route: 'file', params: { name: 'a/b' } } },
      { path: '/files/a%3Bb', expected: { route: 'file', params: { name: 'a;b' } } },
      { path: '/files/a%3Fb', expected: { route: 'file', params: { name: 'a?b' } } },
      { path: '/files/a%23b', expected: { route: 'file', params: { name: 'a#b' } } },
      { path: '/files/a%5Cb', expected: 'bad-request' },
      { path: '/files/a%5cb', expected: 'bad-request' },
      { path: '/files/a\\b', expected: 'bad-request' },
      { path: '/files/..\\x', expected: 'bad-request' },
      { path: '/files/a%00b', expected: 'bad-request' },
      { path: '/files/a%2500', expected: { route: 'file', params: { name: 'a%00' } } },
      { path: '/files/a#frag', expected: 'bad-request' },
      { path: '/files/#', expected: 'bad-request' },
    ],
  },
  {
    name: 'invalid escapes and overlong UTF-8',
    routes: [{ name: 'file', paths: ['/files/:name'] }],
    cases: [
      { path: '/files/%C0%AF', expected: 'bad-request' },
      { path: '/files/%C1%BF', expected: 'bad-request' },
      { path: '/files/%E0%80%AF', expected: 'bad-request' },
      { path: '/files/%F0%80%80%AF', expected: 'bad-request' },
      { path: '/files/%F4%90%80%80', expected: 'bad-request' },
      { path: '/files/%G0', expected: 'bad-request' },
      { path: '/files/%F0%9F%98%80', expected: { route: 'file', params: { name: '😀' } } },
    ],
  },
  {
    name: 'static paths a request cannot have',
    routes: [
      { name: 'backslash', paths: ['/a%5Cb'] },
      { name: 'nul', paths: ['/a%00'] },
      { name: 'dot-param', paths: ['/x/..;y'] },
      { name: 'tilde', paths: ['/%7Euser'] },
      { name: 'slash', paths: ['/s%2fb'] },
    ],
    cases: [
      { path: '/a%5Cb', expected: 'bad-request' },
      { path: '/a%00', expected: 'bad-request' },
      { path: '/x/..;y', expected: 'bad-request' },
      { path: '/~user', expected: 'tilde' },
      { path: '/%7Euser', expected: 'tilde' },
      { path: '/%7euser', expected: 'tilde' },
      { path: '/s%2Fb', expected: 'slash' },
      { path: '/s%2fb', expected: 'slash' },
      { path: '/s/b', expected: 'not-found' },
    ],
  },
  {
    name: 'static paths by host class',
    routes: [
      { name: 'exact', paths: ['/s'], hosts: ['a.com'], methods: ['POST'] },
      { name: 'wild', paths: ['/s'], hosts: ['*.a.com'] },
      { name: 'any', paths: ['/s'], methods: ['GET'] },
      { name: 'any-param', paths: ['/:p'], methods: ['PUT'] },
    ],
    cases: [
      { path: '/s', method: 'POST', host: 'A.com:80', expected: 'exact' },
      { path: '/s', host: 'a.com', expected: 'any' },
      { path: '/s', method: 'HEAD', host: 'a.com', expected: 'any' },
      {
        path: '/s',
        method: 'PUT',
        host: 'a.com',
        expected: { route: 'any-param', params: { p: 's' } },
      },
      {
        path: '/s',
        method: 'DELETE',
        host: 'a.com',
        expected: { allow: ['GET', 'HEAD', 'POST', 'PUT'] },
      },
      { path: '/s', method: 'PUT', host: 'x.a.com', expected: 'wild' },
      { path: '/s', host: 'b.com', expected: 'any' },
      { path: '/s', method: 'POST', expected: { allow: ['GET', 'HEAD', 'PUT'] } },
      { path: '/%73', method: 'POST', host: 'a.com', expected: 'exact' },
    ],
  },
  {
    name: 'single-kind nodes without backtracking',
    routes: [
      { name: 'deep', paths: ['/a/b/c/d'], methods: ['GET'] },
      { name: 'post-any', paths: ['/a/:x'], methods: ['POST'] },
      { name: 'repo', paths: ['/users/:user/repos/:repo'], methods: ['GET'] },
      { name: 'settings', paths: ['/users/:user/settings'], methods: ['PUT'] },
    ],
    cases: [
      { path: '/a/b/c/d', method: 'PUT', expected: { allow: ['GET', 'HEAD'] } },
      { path: '/a/b/c/d', method: 'HEAD', expected: 'deep' },
      { path: '/a/b/c', expected: 'not-found' },
      { path: '/a/b/c/d/e', expected: 'not-found' },
      { path: '/a/b', method: 'POST', expected: { route: 'post-any', params: { x: 'b' } } },
      {
        path: '/users/alice/repos/loom',
        expected: { route: 'repo', params: { user: 'alice', repo: 'loom' } },
      },
      { path: '/users//repos/loom', expected: 'not-found' },
      { path: '/users/alice/repos/', expected: 'not-found' },
      {
        path: '/users/al%69ce/repos/lo%2fom',
        expected: { route: 'repo', params: { user: 'alice', repo: 'lo/om' } },
      },
      {
        path: '/users/a%2Fb/repos/%2520',
        expected: { route: 'repo', params: { user: 'a/b', repo: '%20' } },
      },
      { path: '/users/alice/settings', expected: { allow: ['PUT'] } },
      { path: '/users/alice/repos/loom', method: 'DELETE', expected: { allow: ['GET', 'HEAD'] } },
      { path: '/users/alice/repos/loom/x', expected: 'not-found' },
    ],
  },
  {
    name: 'hashed edges with params',
    routes: [
      ...Array.from({ length: 20 }, (_, i) => ({
        name: `svc${i}`,
        paths: [`/api/svc${i}/items/:id`],
        methods: ['GET'],
      })),
      { name: 'health', paths: ['/api/:service/health'], methods: ['GET'] },
    ],
    cases: [
      { path: '/api/svc7/items/42', expected: { route: 'svc7', params: { id: '42' } } },
      { path: '/api/%73vc7/items/4%32', expected: { route: 'svc7', params: { id: '42' } } },
      { path: '/api/svc7/items/4%2F2', expected: { route: 'svc7', params: { id: '4/2' } } },
      { path: '/api/svc7/health', expected: { route: 'health', params: { service: 'svc7' } } },
      { path: '/api/svc70/health', expected: { route: 'health', params: { service: 'svc70' } } },
      { path: '/api/svc7/items/42', method: 'POST', expected: { allow: ['GET', 'HEAD'] } },
      { path: '/api/svc70/items/1', expected: 'not-found' },
      { path: '/api/svc/items/1', expected: 'not-found' },
      { path: '/api/svc7', expected: 'not-found' },
      { path: '/api/svc7/items/', expected: 'not-found' },
    ],
  },
];

describe('router conformance', () => {
  for (const scenario of scenarios) {
    test(scenario.name, () => {
      const byOrder = orders(toRoutes(scenario.routes)).map(({ label, items }) => ({
        label,
        router: buildRouter(items),
      }));
      for (const { label, router } of byOrder) {
        assert.equal(router.size, scenario.routes.length);
        for (const { path, method = 'GET', host, expected } of scenario.cases) {
          const outcome = toOutcome(router.find(method, host, path));
          const request = `${method} ${host ?? '(no host)'} ${path.slice(0, 60)} (${label} order)`;
          assert.deepEqual(outcome, expectedOutcome(expected), request);
        }
      }
    });
  }
});

describe('router hashed edges', () => {
  test('finds every edge of 2,000', () => {
    const names = Array.from({ length: 2000 }, (_, i) => `svc${i}`);
    const router = buildRouter(toRoutes(names.map((name) => ({ name, paths: [`/api/${name}`] }))));
    for (const name of names) {
      const outcome = toOutcome(router.find('GET', undefined, `/api/${name}`));
      assert.deepEqual(outcome, { route: name, params: {} }, name);
    }
    for (const path of ['/api/svc2000', '/api/svc', '/api/svc1x', '/api/svc01', '/api/']) {
      assert.equal(router.find('GET', undefined, path).kind, 'not-found', path);
    }
  });

  test('segments with equal hashes', () => {
    // "xAa" and "xBB" have the same 31-polynomial hash, so they probe the same slots.
    const names = ['xAa', 'xBB', ...Array.from({ length: 10 }, (_, i) => `x${i}`)];
    const router = buildRouter(toRoutes(names.map((name) => ({ name, paths: [`/${name}/:id`] }))));
    assert.deepEqual(toOutcome(router.find('GET', undefined, '/xAa/1')), {
      route: 'xAa',
      params: { id: '1' },
    });
    assert.deepEqual(toOutcome(router.find('GET', undefined, '/xBB/2')), {
      route: 'xBB',
      params: { id: '2' },
    });
    assert.equal(router.find('GET', undefined, '/xAB/1').kind, 'not-found');
    assert.equal(router.find('GET', undefined, '/xBa/1').kind, 'not-found');
  });
});

describe('router params', () => {
  test('params object inherits nothing', () => {
    const router = buildRouter(toRoutes([{ name: 'proto', paths: ['/:__proto__'] }]));
    const match = router.find('GET', undefined, '/x');
    assert.equal(match.kind, 'found');
    if (match.kind !== 'found') return;
    for (const key of ['toString', 'constructor', 'hasOwnProperty', 'valueOf']) {
      assert.equal(key in match.params, false, key);
    }
    assert.equal(match.params['__proto__'], 'x');
    assert.deepEqual(Object.keys(match.params), ['__proto__']);
    assert.throws(() => {
      Object.getPrototypeOf(match.params).polluted = 'yes';
    }, TypeError);
  });

  test('static match shares frozen result', () => {
    const router = buildRouter(toRoutes([{ name: 's', paths: ['/s'] }]));
    const first = router.find('GET', undefined, '/s');
    const second = router.find('GET', undefined, '/s');
    assert.equal(first.kind, 'found');
    assert.equal(first, second);
    assert.ok(Object.isFrozen(first));
    if (first.kind !== 'found') return;
    assert.ok(Object.isFrozen(first.params));
    assert.deepEqual(Object.keys(first.params), []);
    assert.equal('toString' in first.params, false);
    assert.equal(first.path, undefined);

    const escaped = router.find('GET', undefined, '/%73');
    assert.equal(escaped.kind, 'found');
    if (escaped.kind !== 'found') return;
    assert.equal(escaped.route, 's');
    assert.equal(escaped.params, first.params);
    assert.equal(escaped.path, '/s');
  });

  test('match carries the normalized path', () => {
    const router = buildRouter(
      toRoutes([
        { name: 'file', paths: ['/files/:name'] },
        { name: 'static', paths: ['/static/a..b'] },
      ]),
    );
    // Request path, normalized path, or undefined when the request path is already normalized.
    const cases: [string, string | undefined][] = [
      ['/files/a%2Fb', undefined],
      ['/files/a%2fb', '/files/a%2Fb'],
      ['/files/x%2520y', undefined],
      ['/x/%2e%2E/files/y', '/files/y'],
      ['/files/./%7Eu', '/files/~u'],
      ['/static/a%2e%2eb', '/static/a..b'],
      ['/static/a..b', undefined],
    ];
    for (const [path, normalized] of cases) {
      const match = router.find('GET', undefined, path);
      assert.equal(match.kind, 'found', path);
      if (match.kind !== 'found') continue;
      assert.equal(match.path, normalized, path);
    }
  });

  test('params readers shared across routers', () => {
    const first = buildRouter(toRoutes([{ name: 'prefix', paths: ['/a/**', '/b/*'] }]));
    const second = buildRouter(toRoutes([{ name: 'rest', paths: ['/c/*'] }]));
    const cases: [Router<string>, string, Record<string, string>][] = [
      [first, '/a', { '*': '' }],
      [first, '/a/x', { '*': 'x' }],
      [first, '/b/x', { '*': 'x' }],
      [second, '/c/y/z', { '*': 'y/z' }],
      [second, '/c/y%2Fz', { '*': 'y/z' }],
    ];
    for (const [router, path, params] of cases) {
      const match = router.find('GET', undefined, path);
      assert.equal(match.kind, 'found', path);
      if (match.kind !== 'found') continue;
      assert.deepEqual({ ...match.params }, params, path);
    }
  });

  test('params decoded exactly once', () => {
    const router = buildRouter(toRoutes([{ name: 'p', paths: ['/:value/*rest'] }]));
    const match = router.find('GET', undefined, '/%252F/%2561%2Fb');
    assert.equal(match.kind, 'found');
    if (match.kind !== 'found') return;
    assert.equal(match.params.value, '%2F');
    assert.equal(match.params.rest, '%61/b');
  });
});

/** Builds the routes in every order and returns the errors, asserting that every order threw. */
function buildErrors(specs: RouteSpec[]): LoomError[] {
  return orders(toRoutes(specs)).map(({ label, items }) => {
    try {
      buildRouter(items);
    } catch (error) {
      assert.ok(error instanceof LoomError, `${label} order threw ${String(error)}`);
      assert.equal(error.code, 'LOOM_SNAPSHOT_REJECTED');
      return error;
    }
    assert.fail(`${label} order built without an error`);
  });
}

function assertBuilds(specs: RouteSpec[]): void {
  for (const { items } of orders(toRoutes(specs))) buildRouter(items);
}

describe('router build rejects invalid patterns', () => {
  const invalid: [string, RegExp][] = [
    ['a/b', /must start with "\/"/],
    ['', /must start with "\/"/],
    ['/a/*rest/b', /must be the last segment/],
    ['/*a/*b', /must be the last segment/],
    ['/:', /empty parameter name/],
    ['/a/:/b', /empty parameter name/],
    ['/:id/:id', /"id" appears twice/],
    ['/:id/*id', /"id" appears twice/],
    ['/a?b', /"\?" and "#"/],
    ['/a#b', /"\?" and "#"/],
    ['/:a:b', /must be separated by static text/],
    ['/x:', /empty parameter name after ":"/],
    ['/:.json', /empty parameter name after ":"/],
    ['/a*b', /mixes text with "\*"/],
    ['/:a.*b', /mixes text with "\*"/],
    ['/a/**/b', /must be the last segment/],
    ['/*a-b', /invalid catch-all name "a-b"/],
    ['/***', /invalid catch-all name "\*"/],
    ['/:a.:a', /"a" appears twice/],
    ['/:a/v:a', /"a" appears twice/],
    ['/:name.j son', /must be percent-encoded/],
    ['/a b', /must be percent-encoded/],
    ['/café', /must be percent-encoded/],
    ['/{id}', /must be percent-encoded/],
    ['/%zz', /invalid percent-encoding/],
    ['/%C3', /invalid percent-encoding/],
    ['/a/./b', /dot segment/],
    ['/a/%2E%2e', /dot segment/],
    ['/a/..', /dot segment/],
    ['/.', /dot segment/],
    ['/a\\b', /must be percent-encoded/],
    ['/:a/:b/:a', /"a" appears twice/],
    ['/:a/x:b.:a', /"a" appears twice/],
  ];
  for (const [pattern, message] of invalid) {
    test(`pattern ${JSON.stringify(pattern)}`, () => {
      const [error] = buildErrors([{ name: 'bad', paths: [pattern] }]);
      assert.match(error.message, message);
      assert.ok(error.message.includes('route "bad"'), error.message);
      assert.ok(error.message.includes(JSON.stringify(pattern)), error.message);
    });
  }

  test('route without paths', () => {
    const [error] = buildErrors([{ name: 'empty', paths: [] }]);
    assert.match(error.message, /route "empty" has no paths/);
  });

  test('empty method', () => {
    const [error] = buildErrors([{ name: 'm', paths: ['/'], methods: [''] }]);
    assert.match(error.message, /route "m" has an empty method/);
  });

  const invalidHosts: [string, RegExp][] = [
    ['', /must not be empty/],
    ['.', /must not be empty/],
    ['a.com:8080', /port/],
    ['http://a.com', /bare name/],
    ['a.com/x', /bare name/],
    ['a.*.com', /whole first label/],
    ['*', /whole first label/],
    ['*.', /whole first label/],
    ['*..com', /wildcard host is/],
    ['*.*.com', /wildcard host is/],
    ['[::1]:8080', /IPv6 literal is one address in brackets, without a port/],
    ['[::1]x', /IPv6 literal is one address in brackets/],
    ['[::1', /IPv6 literal is one address in brackets/],
    ['[]', /IPv6 literal is one address in brackets/],
    ['a..com', /empty label/],
    ['.a.com', /empty label/],
    ['a.com..', /empty label/],
    ['*.a..com', /empty label/],
    ['*.a.com..', /empty label/],
  ];
  for (const [host, message] of invalidHosts) {
    test(`host ${JSON.stringify(host)}`, () => {
      const [error] = buildErrors([{ name: 'h', paths: ['/'], hosts: [host] }]);
      assert.match(error.message, message);
      assert.ok(error.message.includes('route "h"'), error.message);
    });
  }
});

describe('router build conflicts', () => {
  test('same pattern up to param names', () => {
    const errors = buildErrors([
      { name: 'by-id', paths: ['/u/:id'], hosts: ['api.example.com'], methods: ['GET'] },
      {
        name: 'by-name',
        paths: ['/u/:name'],
        hosts: ['api.example.com'],
        methods: ['GET', 'POST'],
      },
    ]);
    for (const error of errors) {
      assert.ok(error.message.includes('route "by-id" path "/u/:id"'), error.message);
      assert.ok(error.message.includes('route "by-name" path "/u/:name"'), error.message);
      assert.ok(error.message.includes('host "api.example.com"'), error.message);
      assert.ok(error.message.includes('method GET'), error.message);
    }
    assert.equal(new Set(errors.map((error) => error.message)).size, 1);
  });

  test('any method overlaps every method', () => {
    const [error] = buildErrors([
      { name: 'get', paths: ['/a'], methods: ['GET'] },
      { name: 'all', paths: ['/a'] },
    ]);
    assert.match(error.message, /route "get" path "\/a" conflicts with route "all" path "\/a"/);
    assert.match(error.message, /any host, method GET/);
  });

  test('two any-method routes', () => {
    const [error] = buildErrors([
      { name: 'a', paths: ['/x'] },
      { name: 'b', paths: ['/x'] },
    ]);
    assert.match(error.message, /any host, any method/);
  });

  test('catch-all names', () => {
    const [error] = buildErrors([
      { name: 'a', paths: ['/s/*rest'], hosts: ['*.example.com'] },
      { name: 'b', paths: ['/s/*'], hosts: ['*.EXAMPLE.com.'] },
    ]);
    assert.match(error.message, /host "\*\.example\.com"/);
  });

  test('hosts normalized before comparing', () => {
    buildErrors([
      { name: 'a', paths: ['/x'], hosts: ['API.example.com.'] },
      { name: 'b', paths: ['/x'], hosts: ['api.example.com'] },
    ]);
  });

  test('static spellings normalized before comparing', () => {
    buildErrors([
      { name: 'a', paths: ['/%61/%2f'] },
      { name: 'b', paths: ['/a/%2F'] },
    ]);
  });

  test('one route with two param spellings', () => {
    const [error] = buildErrors([{ name: 'self', paths: ['/u/:a', '/u/:b'] }]);
    assert.match(
      error.message,
      /route "self" path "\/u\/:b" conflicts with route "self" path "\/u\/:a"/,
    );
  });

  test('non-overlapping routes build', () => {
    assertBuilds([
      { name: 'get', paths: ['/u/:id'], methods: ['GET'] },
      { name: 'post', paths: ['/u/:name'], methods: ['POST'] },
      { name: 'other-host', paths: ['/u/:id'], hosts: ['a.example.com'] },
      { name: 'wildcard-host', paths: ['/u/:id'], hosts: ['*.a.example.com'] },
      { name: 'orders', paths: ['/u/:id/orders'] },
      { name: 'profile', paths: ['/u/:name/profile'] },
      { name: 'slash', paths: ['/u/:id/'] },
      { name: 'catch-all', paths: ['/u/*rest'] },
      { name: 'static', paths: ['/u/me'] },
    ]);
  });

  test('repeated path and host deduplicated', () => {
    const routes = toRoutes([
      {
        name: 'dup',
        paths: ['/a', '/a', '/%61'],
        hosts: ['a.com', 'A.com.'],
        methods: ['GET', 'GET'],
      },
    ]);
    const router = buildRouter(routes);
    assert.equal(router.size, 1);
    assert.deepEqual(toOutcome(router.find('GET', 'a.com', '/a')), { route: 'dup', params: {} });
    assert.deepEqual(toOutcome(router.find('PUT', 'a.com', '/a')), { allow: ['GET', 'HEAD'] });
  });

  test('mixed segments up to param names', () => {
    const [error] = buildErrors([
      { name: 'a', paths: ['/f/:base.:ext'] },
      { name: 'b', paths: ['/f/:name.:type'] },
    ]);
    assert.match(error.message, /route "b" path "\/f\/:name.:type" conflicts with route "a"/);
  });

  test('prefix pattern overlaps exact parent', () => {
    const [error] = buildErrors([
      { name: 'exact', paths: ['/api'] },
      { name: 'prefix', paths: ['/api/**'] },
    ]);
    assert.match(error.message, /route "prefix" path "\/api\/\*\*" conflicts with route "exact"/);
  });

  test('prefix pattern overlaps catch-all', () => {
    buildErrors([
      { name: 'a', paths: ['/api/*rest'] },
      { name: 'b', paths: ['/api/**'] },
    ]);
    buildErrors([
      { name: 'a', paths: ['/*'] },
      { name: 'b', paths: ['/**'] },
    ]);
  });

  test('different mixed shapes build', () => {
    assertBuilds([
      { name: 'dot', paths: ['/f/:base.:ext'] },
      { name: 'dash', paths: ['/f/:left-:right'] },
      { name: 'json', paths: ['/f/:name.json'] },
      { name: 'prefixed', paths: ['/f/v:version'] },
      { name: 'param', paths: ['/f/:file'] },
      { name: 'static', paths: ['/f/a.json'] },
      { name: 'literal', paths: ['/f/a::b'] },
      { name: 'prefix', paths: ['/f/**'] },
    ]);
  });

  test('literal colon differs from param', () => {
    assertBuilds([
      { name: 'literal', paths: ['/::a'] },
      { name: 'param', paths: ['/:a'] },
    ]);
  });

  test('prefix and catch-all in one route', () => {
    const [error] = buildErrors([{ name: 'self', paths: ['/a/**', '/a/*'] }]);
    assert.match(error.message, /route "self" path "\/a\/\*" conflicts with route "self"/);
  });

  test('conflict in host list of one route', () => {
    buildErrors([
      { name: 'a', paths: ['/x'], hosts: ['b.com', 'c.com'] },
      { name: 'b', paths: ['/x'], hosts: ['c.com'], methods: ['DELETE'] },
    ]);
  });
});
