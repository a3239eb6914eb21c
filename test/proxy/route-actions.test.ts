import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  compileRouteActions,
  joinPath,
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
