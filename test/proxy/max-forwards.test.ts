import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { buildTable } from '../../data-plane/build-table.js';
import { readMaxForwards, routeMethods } from '../../data-plane/proxy/max-forwards.js';
import { buildRouter } from '../../data-plane/router/router.js';
import type { RouteBinding } from '../../data-plane/table.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import { clearEachAndCloseAfter } from '../helpers/hooks.js';
import {
  pipeline,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** A request as the upstream received it. */
interface Received {
  method: string;
  url: string;
  /** Max-Forwards lines in the order received; empty when none came. */
  maxForwards: string[];
}

/** Returns the value of the header `name` in a raw response head, or undefined. */
function headerOf(response: string, name: string): string | undefined {
  const head = response.slice(0, response.indexOf('\r\n\r\n'));
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (line.slice(0, colon).toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

function statusOf(response: string): number {
  return Number(/^HTTP\/1\.1 (\d{3}) /.exec(response)?.[1] ?? 0);
}

function bodyOf(response: string): string {
  return response.slice(response.indexOf('\r\n\r\n') + 4);
}

/** Sends one request with `headers` and `Connection: close`, and returns the raw response. */
function sendRequest(
  port: number,
  method: string,
  target: string,
  headers: string,
): Promise<string> {
  return sendRaw(
    port,
    `${method} ${target} HTTP/1.1\r\nHost: a\r\n${headers}Connection: close\r\n\r\n`,
  );
}

describe('Max-Forwards', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  const received: Received[] = [];

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      const maxForwards: string[] = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        if (req.rawHeaders[i].toLowerCase() === 'max-forwards') {
          maxForwards.push(req.rawHeaders[i + 1]);
        }
      }
      received.push({ method: req.method ?? '', url: req.url ?? '', maxForwards });
      req.resume();
      req.on('end', () => res.end(`upstream ${req.method}`));
    });
    proxy = await startProxy();
    proxy.publish(
      [
        { name: 'api-read', path: '/api/*', methods: ['GET', 'OPTIONS'], upstream: 'app' },
        { name: 'api-write', path: '/api/items', methods: ['POST', 'TRACE'], upstream: 'app' },
        { name: 'any', path: '/any/*', upstream: 'app' },
      ],
      [upstreamAt('app', upstream.port)],
    );
  });

  clearEachAndCloseAfter(received, () => [proxy, upstream]);

  const request = (method: string, target: string, headers = ''): Promise<string> =>
    sendRequest(proxy.port, method, target, headers);

  it('OPTIONS forwards the value minus one', async () => {
    const response = await request('OPTIONS', '/api/x', 'Max-Forwards: 5\r\n');

    assert.equal(statusOf(response), 200);
    assert.equal(bodyOf(response), 'upstream OPTIONS');
    assert.deepEqual(received, [{ method: 'OPTIONS', url: '/api/x', maxForwards: ['4'] }]);
  });

  it('TRACE forwards 1 as 0', async () => {
    const response = await request('TRACE', '/api/items', 'Max-Forwards: 1\r\n');

    assert.equal(statusOf(response), 200);
    assert.deepEqual(received, [{ method: 'TRACE', url: '/api/items', maxForwards: ['0'] }]);
  });

  it('other methods forward it unchanged', async () => {
    const get = await request('GET', '/api/x', 'Max-Forwards: 0\r\n');
    const post = await request('POST', '/api/items', 'Max-Forwards: abc\r\nContent-Length: 0\r\n');
    const twice = await request('GET', '/api/y', 'Max-Forwards: 3\r\nMax-Forwards: 7\r\n');

    assert.equal(statusOf(get), 200);
    assert.equal(statusOf(post), 200);
    assert.equal(statusOf(twice), 200);
    assert.deepEqual(received, [
      { method: 'GET', url: '/api/x', maxForwards: ['0'] },
      { method: 'POST', url: '/api/items', maxForwards: ['abc'] },
      { method: 'GET', url: '/api/y', maxForwards: ['3', '7'] },
    ]);
  });

  it('OPTIONS at 0 gets Allow of the path', async () => {
    const items = await request('OPTIONS', '/api/items', 'Max-Forwards: 0\r\n');
    const other = await request('OPTIONS', '/api/other', 'max-forwards: 00\r\n');

    assert.equal(statusOf(items), 200);
    assert.equal(headerOf(items, 'allow'), 'GET, OPTIONS, POST, TRACE');
    assert.equal(headerOf(items, 'content-length'), '0');
    assert.equal(bodyOf(items), '');
    assert.equal(statusOf(other), 200);
    assert.equal(headerOf(other, 'allow'), 'GET, OPTIONS');
    assert.deepEqual(received, []);
  });

  it('OPTIONS at 0 on an any-method route', async () => {
    const response = await request('OPTIONS', '/any/thing', 'Max-Forwards: 0\r\n');

    assert.equal(statusOf(response), 200);
    assert.equal(
      headerOf(response, 'allow'),
      'DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE',
    );
    assert.deepEqual(received, []);
  });

  it('OPTIONS * at 0 gets 200', async () => {
    const asterisk = await request('OPTIONS', '*', 'Max-Forwards: 0\r\n');
    const forwarded = await request('OPTIONS', '*', 'Max-Forwards: 1\r\n');

    assert.equal(statusOf(asterisk), 200);
    assert.equal(headerOf(asterisk, 'allow'), undefined);
    assert.equal(headerOf(asterisk, 'content-length'), '0');
    assert.equal(statusOf(forwarded), 404);
    assert.deepEqual(received, []);
  });

  it('OPTIONS at 0 without a route gets 404', async () => {
    const response = await request('OPTIONS', '/missing', 'Max-Forwards: 0\r\n');

    assert.equal(statusOf(response), 404);
    assert.equal(JSON.parse(bodyOf(response)).error, 'route_not_found');
  });

  it('TRACE at 0 gets 405 without an echo', async () => {
    const response = await request(
      'TRACE',
      '/api/items',
      'Max-Forwards: 0\r\nCookie: session=secret\r\nAuthorization: Bearer secret\r\n',
    );

    assert.equal(statusOf(response), 405);
    assert.equal(headerOf(response, 'allow'), 'GET, OPTIONS, POST');
    assert.equal(JSON.parse(bodyOf(response)).error, 'method_not_allowed');
    assert.doesNotMatch(response, /secret/);
    assert.deepEqual(received, []);
  });

  it('keeps the connection after 0', async () => {
    const result = await pipeline(proxy.port, [
      'OPTIONS /api/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n' +
        'GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    ]);

    assert.deepEqual(result.statuses, [200, 200]);
    assert.deepEqual(received, [{ method: 'GET', url: '/api/x', maxForwards: [] }]);
  });

  for (const [value, why] of [
    ['abc', 'letters'],
    ['-1', 'a sign'],
    ['1.5', 'a fraction'],
    ['0x10', 'hexadecimal'],
    ['', 'an empty value'],
  ] as const) {
    it(`OPTIONS rejects ${why}`, async () => {
      const response = await request('OPTIONS', '/api/x', `Max-Forwards: ${value}\r\n`);

      assert.equal(statusOf(response), 400);
      const body = JSON.parse(bodyOf(response)) as { error: string; message: string };
      assert.equal(body.error, 'bad_request');
      assert.match(body.message, /invalid Max-Forwards/);
      assert.ok(body.message.includes(JSON.stringify(value)), body.message);
      assert.deepEqual(received, []);
    });
  }

  it('TRACE rejects two values', async () => {
    const response = await request('TRACE', '/api/items', 'Max-Forwards: 2\r\nMax-Forwards: 2\r\n');

    assert.equal(statusOf(response), 400);
    assert.match(JSON.parse(bodyOf(response)).message, /2 Max-Forwards headers/);
    assert.deepEqual(received, []);
  });

  it('forwards an overlong value exactly', async () => {
    const big = '1' + '0'.repeat(4_000);
    const response = await request('OPTIONS', '/api/x', `Max-Forwards: ${big}\r\n`);

    assert.equal(statusOf(response), 200);
    assert.deepEqual(received, [
      { method: 'OPTIONS', url: '/api/x', maxForwards: ['9'.repeat(4_000)] },
    ]);
  });
});

describe('Max-Forwards on an any-method path', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  const received: string[] = [];

  const route = (name: string, paths: string[], methods: string[]): Route => ({
    name,
    hosts: [],
    paths,
    methods,
    upstream: 'app',
  });

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      received.push(`${req.method} ${req.url}`);
      res.end();
    });
    proxy = await startProxy();
    const table = await buildTable(
      {
        epoch: 'e1',
        version: 1,
        hash: 'h1',
        routes: [
          route('dav', ['/files/:name'], ['PROPFIND', 'MKCOL']),
          route('files', ['/files/**rest'], []),
        ],
        upstreams: [upstreamAt('app', upstream.port)],
      },
      proxy.registry,
    );
    proxy.setTable(table);
  });

  clearEachAndCloseAfter(received, () => [proxy, upstream]);

  const request = (method: string, target: string, headers = ''): Promise<string> =>
    sendRequest(proxy.port, method, target, headers);

  for (const [name, method, path, status, allow] of [
    [
      'OPTIONS lists extension methods of routes',
      'OPTIONS',
      '/files/a',
      200,
      'DELETE, GET, HEAD, MKCOL, OPTIONS, PATCH, POST, PROPFIND, PUT, TRACE',
    ],
    [
      'TRACE 405 lists extension methods',
      'TRACE',
      '/files/a',
      405,
      'DELETE, GET, HEAD, MKCOL, OPTIONS, PATCH, POST, PROPFIND, PUT',
    ],
    [
      'path without them lists standard methods',
      'OPTIONS',
      '/files/a/b',
      200,
      'DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE',
    ],
  ] as const) {
    it(name, async () => {
      const response = await request(method, path, 'Max-Forwards: 0\r\n');

      assert.equal(statusOf(response), status);
      assert.equal(headerOf(response, 'allow'), allow);
      assert.deepEqual(received, []);
    });
  }

  it('forwards an unlisted extension method', async () => {
    const response = await request('REPORT', '/files/a/b');

    assert.equal(statusOf(response), 200);
    assert.deepEqual(received, ['REPORT /files/a/b']);
  });
});

describe('readMaxForwards', () => {
  for (const [value, expected] of [
    ['1', '0'],
    ['10', '9'],
    ['0010', '9'],
    ['100', '99'],
    ['2000', '1999'],
    ['18446744073709551616', '18446744073709551615'],
    ['99999999999999999999', '99999999999999999998'],
  ] as const) {
    it(`decrements ${value}`, () => {
      assert.deepEqual(readMaxForwards('OPTIONS', value, 1), { kind: 'forward', value: expected });
    });
  }

  it('reads zeros as the last hop', () => {
    assert.deepEqual(readMaxForwards('TRACE', '0', 1), { kind: 'last-hop' });
    assert.deepEqual(readMaxForwards('TRACE', '000', 1), { kind: 'last-hop' });
  });

  it('ignores other methods', () => {
    assert.deepEqual(readMaxForwards('GET', '0', 1), { kind: 'forward', value: undefined });
    assert.deepEqual(readMaxForwards('DELETE', 'abc', 2), { kind: 'forward', value: undefined });
  });

  it('quotes a long invalid value in part', () => {
    const result = readMaxForwards('OPTIONS', 'x'.repeat(1_000), 1);

    assert.equal(result.kind, 'invalid');
    assert.match(result.kind === 'invalid' ? result.message : '', /\(1000 characters\)/);
  });
});

describe('routeMethods on the real router', () => {
  const route = (name: string, paths: string[], methods: string[], hosts: string[] = []) => ({
    name,
    hosts,
    paths,
    methods,
    value: {} as RouteBinding,
  });
  const router = buildRouter([
    route('users', ['/users/:id'], ['GET', 'PUT']),
    route('users-admin', ['/users/**rest'], ['DELETE'], ['admin.test']),
    route('static', ['/users/me'], ['POST']),
    route('any', ['/files/**rest'], []),
  ]);

  it('collects the methods of every match', () => {
    assert.deepEqual(routeMethods(router, 'a.test', '/users/7'), {
      kind: 'methods',
      allow: ['GET', 'HEAD', 'PUT'],
    });
    assert.deepEqual(routeMethods(router, 'admin.test', '/users/me'), {
      kind: 'methods',
      allow: ['DELETE', 'GET', 'HEAD', 'POST', 'PUT'],
    });
  });

  it('lists standard methods for any-method routes', () => {
    const result = routeMethods(router, 'a.test', '/files/a');

    assert.equal(result.kind, 'methods');
    const allow = result.kind === 'methods' ? result.allow : [];
    assert.ok(allow.includes('DELETE'), 'DELETE is listed');
  });

  it('adds methods of host routes to any-method ones', () => {
    const hosted = buildRouter([
      route('any', ['/files/**rest'], []),
      route('dav', ['/files/:name'], ['PROPFIND'], ['dav.test']),
    ]);

    assert.deepEqual(routeMethods(hosted, 'dav.test', '/files/a'), {
      kind: 'methods',
      allow: ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PROPFIND', 'PUT', 'TRACE'],
    });
    assert.deepEqual(routeMethods(hosted, 'other.test', '/files/a'), {
      kind: 'methods',
      allow: ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE'],
    });
  });

  it('returns not-found without a route', () => {
    assert.deepEqual(routeMethods(router, 'a.test', '/nothing'), { kind: 'not-found' });
  });
});
