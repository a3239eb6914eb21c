import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { LoomError } from '../../common/errors.js';
import { MAX_PATH_LENGTH } from '../../data-plane/router/path.js';
import { buildRouter } from '../../data-plane/router/router.js';
import type { RouterMatch, RouterRoute } from '../../data-plane/router/types.js';

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

function shuffle<T>(items: T[], seed: number): T[] {
  const copy = [...items];
  let state = seed >>> 0;
  for (let i = copy.length - 1; i > 0; i--) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const j = state % (i + 1);
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
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
      { path: '/users/admin', method: 'DELETE', expected: { allow: ['GET', 'POST'] } },
      { path: '/users/bob', method: 'GET', expected: { allow: ['POST'] } },
      { path: '/users/admin', method: 'HEAD', expected: { allow: ['GET', 'POST'] } },
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
        expected: { allow: ['GET', 'POST', 'PUT'] },
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
      { path: '/files/%2e%2E%2Fx', expected: { route: 'file', params: { name: '../x' } } },
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
      { path: '/public/..%2Fadmin', expected: { route: 'public', params: { rest: '../admin' } } },
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
    ['/v:version', /mixed segments such as "v:version" are not supported/],
    ['/:a:b', /mixed segments/],
    ['/:a-b', /invalid parameter name "a-b"/],
    ['/a*b', /mixes text with "\*"/],
    ['/**', /invalid parameter name "\*"/],
    ['/a b', /must be percent-encoded/],
    ['/café', /must be percent-encoded/],
    ['/{id}', /must be percent-encoded/],
    ['/%zz', /invalid percent-encoding/],
    ['/%C3', /invalid percent-encoding/],
    ['/a/./b', /dot segment/],
    ['/a/%2E%2e', /dot segment/],
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
    assert.deepEqual(toOutcome(router.find('PUT', 'a.com', '/a')), { allow: ['GET'] });
  });

  test('conflict in host list of one route', () => {
    buildErrors([
      { name: 'a', paths: ['/x'], hosts: ['b.com', 'c.com'] },
      { name: 'b', paths: ['/x'], hosts: ['c.com'], methods: ['DELETE'] },
    ]);
  });
});
