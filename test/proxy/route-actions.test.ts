import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  compileRouteActions,
  joinPath,
  remainderStartsWithDoubleSlash,
  rewritePath,
} from '../../data-plane/proxy/route-actions.js';
import {
  json,
  send,
  startHttpServer,
  startProxy,
  upstreamAt,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** The join table of docs/proxy.md: base path, remainder, forwarded path. */
const JOIN_TABLE: Array<[string, string, string]> = [
  ['', '', '/'],
  ['', '/', '/'],
  ['', '-x', '/-x'],
  ['', '/x', '/x'],
  ['/v1', '', '/v1'],
  ['/v1', '/', '/v1/'],
  ['/v1', '-x', '/v1/-x'],
  ['/v1', '/x', '/v1/x'],
  ['/v1/', '', '/v1/'],
  ['/v1/', '/', '/v1/'],
  ['/v1/', '-x', '/v1/-x'],
  ['/v1/', '/x', '/v1/x'],
];

/**
 * The rows of the join table of docs/proxy.md whose remainder starts with `//`: base path and
 * the request that gives remainder `//x` through the routes of "proxy double-slash paths".
 * The proxy responds to each with 400 and sends nothing upstream.
 */
const REJECTED_JOIN_ROWS: Array<[string, string]> = [
  ['', '/hello//x'],
  ['/v1', '/v4//x'],
  ['/v1/', '/v4s//x'],
];

describe('joinPath', () => {
  for (const [base, remainder, expected] of JOIN_TABLE) {
    it(`joins "${base}" and "${remainder}"`, () => {
      assert.equal(joinPath(base, remainder), expected);
    });
  }
});

describe('rewritePath', () => {
  const actions = compileRouteActions({
    name: 'r',
    hosts: [],
    paths: ['/api/*rest'],
    methods: [],
    upstream: 'u',
    stripPrefix: '/api',
    addPrefix: '/v2',
  });

  it('strips and adds prefixes at segment boundaries', () => {
    assert.equal(rewritePath('', actions, '/api/users'), '/v2/users');
    assert.equal(rewritePath('', actions, '/api'), '/v2');
    assert.equal(rewritePath('', actions, '/api/'), '/v2/');
    assert.equal(rewritePath('', actions, '/apix/users'), '/v2/apix/users');
    assert.equal(rewritePath('/base/', actions, '/api/users'), '/base/v2/users');
  });
});

describe('remainderStartsWithDoubleSlash', () => {
  const route = { name: 'r', hosts: [], paths: ['/api/**'], methods: [], upstream: 'u' };
  const strip = compileRouteActions({ ...route, stripPrefix: '/api' });
  const stripAndAdd = compileRouteActions({ ...route, stripPrefix: '/api', addPrefix: '/v2' });
  const none = compileRouteActions(route);

  it('detects "//" after a stripped prefix', () => {
    assert.equal(remainderStartsWithDoubleSlash(strip, '/api//evil.example/x'), true);
    assert.equal(remainderStartsWithDoubleSlash(strip, '/api//'), true);
    assert.equal(remainderStartsWithDoubleSlash(stripAndAdd, '/api//x'), true);
  });

  it('detects "//" at the start without a strip', () => {
    assert.equal(remainderStartsWithDoubleSlash(none, '//evil.example/x'), true);
    assert.equal(remainderStartsWithDoubleSlash(strip, '//api/x'), true);
  });

  it('accepts one slash and later empty segments', () => {
    assert.equal(remainderStartsWithDoubleSlash(strip, '/api'), false);
    assert.equal(remainderStartsWithDoubleSlash(strip, '/api/'), false);
    assert.equal(remainderStartsWithDoubleSlash(strip, '/api/x//y'), false);
    assert.equal(remainderStartsWithDoubleSlash(strip, '/apix//y'), false);
    assert.equal(remainderStartsWithDoubleSlash(none, '/api//x'), false);
    assert.equal(remainderStartsWithDoubleSlash(none, '/'), false);
  });
});

describe('proxy route actions', () => {
  let proxy: ProxyFixture;
  let echo: RunningServer;

  before(async () => {
    echo = await startHttpServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('server', 'echo/1.0');
      res.setHeader('x-internal', 'secret');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
    proxy = await startProxy();
    proxy.publish(
      [
        { name: 'plain', path: '/plain/*', upstream: 'no-base' },
        { name: 'base', path: '/base/*', upstream: 'base' },
        { name: 'slash', path: '/slash/*', upstream: 'base-slash' },
        {
          name: 'strip',
          path: '/api/*',
          upstream: 'base',
          stripPrefix: '/api',
        },
        { name: 'strip-root', path: '/api', upstream: 'base', stripPrefix: '/api' },
        { name: 'strip-dash', path: '/api-x', upstream: 'base', stripPrefix: '/api' },
        { name: 'strip-slash-root', path: '/svc', upstream: 'base-slash', stripPrefix: '/svc' },
        {
          name: 'strip-slash',
          path: '/svc/*',
          upstream: 'base-slash',
          stripPrefix: '/svc',
        },
        {
          name: 'rewrite',
          path: '/old/*',
          upstream: 'no-base',
          stripPrefix: '/old',
          addPrefix: '/new',
          hostRewrite: 'internal.test:8080',
          requestHeaders: { set: [{ name: 'x-env', value: 'prod' }], remove: ['x-debug'] },
          responseHeaders: {
            set: [{ name: 'x-served-by', value: 'loom' }],
            remove: ['server', 'x-internal'],
          },
        },
      ],
      [
        upstreamAt('no-base', echo.port),
        upstreamAt('base', echo.port, '/v1'),
        upstreamAt('base-slash', echo.port, '/v1/'),
      ],
    );
  });

  after(async () => {
    await proxy.close();
    await echo.close();
  });

  // Each row: request target, forwarded URL. The remainder after a stripped prefix covers the
  // join table's empty, "/" and "/x" cases; "-x" cannot follow a prefix stripped at a segment
  // boundary, so "/api-x" keeps its prefix.
  const rows: Array<[string, string]> = [
    ['/plain/x?q=1', '/plain/x?q=1'],
    ['/base/x?q=1', '/v1/base/x?q=1'],
    ['/slash/x', '/v1/slash/x'],
    ['/api?q=a%20b', '/v1?q=a%20b'],
    ['/api/', '/v1/'],
    ['/api/x?q', '/v1/x?q'],
    ['/api-x', '/v1/api-x'],
    ['/svc', '/v1/'],
    ['/svc/', '/v1/'],
    ['/svc/x', '/v1/x'],
    ['/old/a/../b?k=..', '/new/b?k=..'],
  ];

  for (const [target, forwarded] of rows) {
    it(`forwards ${target} as ${forwarded}`, async () => {
      const response = await send(proxy.port, target);

      assert.equal(response.status, 200);
      assert.equal(json(response).url, forwarded);
    });
  }

  it('rewrites Host and headers', async () => {
    const response = await send(proxy.port, '/old/x', {
      headers: { host: 'public.test', 'x-debug': '1', 'x-env': 'dev' },
    });
    const headers = json(response).headers as Record<string, string>;

    assert.equal(headers.host, 'internal.test:8080');
    assert.equal(headers['x-forwarded-host'], 'public.test');
    assert.equal(headers['x-debug'], undefined);
    assert.equal(headers['x-env'], 'prod');
    assert.equal(response.headers.server, undefined);
    assert.equal(response.headers['x-internal'], undefined);
    assert.equal(response.headers['x-served-by'], 'loom');
  });
});

describe('proxy double-slash paths', () => {
  let proxy: ProxyFixture;
  let echo: RunningServer;
  /** Every request target the upstream received. */
  const received: string[] = [];

  before(async () => {
    echo = await startHttpServer((req, res) => {
      received.push(req.url ?? '');
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ url: req.url }));
    });
    proxy = await startProxy();
    // The stub router takes the first route that matches, so the catch-all comes last.
    proxy.publish(
      [
        { name: 'hello', path: '/hello/*', upstream: 'no-base', stripPrefix: '/hello' },
        { name: 'v4', path: '/v4/*', upstream: 'base', stripPrefix: '/v4' },
        { name: 'v4s', path: '/v4s/*', upstream: 'base-slash', stripPrefix: '/v4s' },
        {
          name: 'old',
          path: '/old/*',
          upstream: 'no-base',
          stripPrefix: '/old',
          addPrefix: '/new',
        },
        { name: 'api', path: '/api/*', upstream: 'base' },
        { name: 'all', path: '/*', upstream: 'no-base' },
      ],
      [
        upstreamAt('no-base', echo.port),
        upstreamAt('base', echo.port, '/v1'),
        upstreamAt('base-slash', echo.port, '/v1/'),
      ],
    );
  });

  after(async () => {
    await proxy.close();
    await echo.close();
  });

  /** Sends `target` and checks the 400 and that nothing reached the upstream. */
  async function expectRejected(target: string, route: string, method = 'GET'): Promise<void> {
    const before = received.length;
    const response = await send(proxy.port, target, { method });
    const body = json(response);

    assert.equal(response.status, 400);
    assert.equal(body.error, 'bad_request');
    assert.equal(body.route, route);
    assert.match(String(body.message), /"\/\/"/);
    assert.deepEqual(received.slice(before), []);
  }

  for (const [base, target] of REJECTED_JOIN_ROWS) {
    it(`rejects remainder "//x" with base "${base}"`, async () => {
      const route = target.slice(1, target.indexOf('/', 1));
      await expectRejected(target, route);
    });
  }

  // The second table of the "Paths" section of docs/proxy.md. A stored stripPrefix never ends
  // in "/", so "/hello/" as written is "/hello" here.
  const rejected: Array<[string, string]> = [
    ['/hello//evil.example/x', 'hello'],
    ['/hello//evil.example/x?q', 'hello'],
    ['/hello/.//evil.example/x', 'hello'],
    ['/v4//x', 'v4'],
    ['/old//x', 'old'],
    ['//evil.example/x', 'all'],
  ];
  for (const [target, route] of rejected) {
    it(`rejects ${target}`, async () => {
      await expectRejected(target, route);
    });
  }

  it('rejects "//" for every method', async () => {
    await expectRejected('/hello//evil.example/x', 'hello', 'POST');
    await expectRejected('/hello//evil.example/x', 'hello', 'DELETE');
  });

  const forwarded: Array<[string, string]> = [
    ['/hello/a//b', '/a//b'],
    ['/api//y', '/v1/api//y'],
    ['/hello/x', '/x'],
    ['/hello/?//x', '/?//x'],
  ];
  for (const [target, expected] of forwarded) {
    it(`forwards ${target} as ${expected}`, async () => {
      const response = await send(proxy.port, target);

      assert.equal(response.status, 200);
      assert.equal(json(response).url, expected);
    });
  }

  it('never sends a target starting with "//"', () => {
    const doubled = received.filter((target) => target.startsWith('//'));

    assert.deepEqual(doubled, []);
  });
});
