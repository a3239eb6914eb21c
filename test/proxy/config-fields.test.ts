import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigTexts } from '../../config/load.js';
import { normalizeRoute, normalizeUpstream } from '../../config/normalize.js';
import {
  decodeRoute,
  decodeUpstream,
  encodeRoute,
  encodeUpstream,
} from '../../control-plane/resources.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

const CONFIG = `
upstreams:
  - name: users
    balancer: hash
    hashOn: Header:X-User
    targets:
      - url: https://users.internal:8443/v1/
    healthCheck: { path: /healthz, intervalMs: 1000 }
    passiveHealth: { consecutiveFailures: 3 }
    tls: { caFile: /etc/loom/ca.pem, serverName: users.internal }
routes:
  - name: api
    paths: [/api/*rest]
    upstream: users
    stripPrefix: /api/
    addPrefix: /v2
    hostRewrite: Users.Internal
    requestHeaders:
      set: { X-Env: prod, x-a: "1" }
      remove: [X-Debug]
    responseHeaders:
      remove: [server]
    timeouts: { responseHeaderMs: 5000 }
    retries: 2
    maxRequestBodyBytes: 1048576
`;

describe('route and upstream fields', () => {
  it('normalise and round-trip through the store', () => {
    const { routes, upstreams } = parseConfigTexts([{ file: 'c.yaml', text: CONFIG }]);
    const route = routes[0];
    const upstream = upstreams[0];

    assert.equal(route.stripPrefix, '/api');
    assert.equal(route.hostRewrite, 'users.internal');
    assert.deepEqual(route.requestHeaders, {
      set: [
        { name: 'x-a', value: '1' },
        { name: 'x-env', value: 'prod' },
      ],
      remove: ['x-debug'],
    });
    assert.deepEqual(route.timeouts, { connectMs: 0, responseHeaderMs: 5000, idleBodyMs: 0 });
    assert.equal(upstream.hashOn, 'header:x-user');
    assert.deepEqual(upstream.healthCheck, {
      path: '/healthz',
      intervalMs: 1000,
      timeoutMs: 2000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
    });
    assert.equal(encodeRoute(decodeRoute(encodeRoute(route))), encodeRoute(route));
    assert.equal(
      encodeUpstream(decodeUpstream(encodeUpstream(upstream))),
      encodeUpstream(upstream),
    );
    assert.equal(encodeRoute(normalizeRoute(decodeRoute(encodeRoute(route)))), encodeRoute(route));
    assert.equal(
      encodeUpstream(normalizeUpstream(decodeUpstream(encodeUpstream(upstream)))),
      encodeUpstream(upstream),
    );
  });

  it('survive the snapshot encoding', () => {
    const { routes, upstreams } = parseConfigTexts([{ file: 'c.yaml', text: CONFIG }]);

    const decoded = Snapshot.decode(
      Snapshot.encode({ version: 1, epoch: 'e', hash: 'h', routes, upstreams }).finish(),
    );

    assert.equal(encodeRoute(decoded.routes[0]), encodeRoute(routes[0]));
    assert.equal(encodeUpstream(decoded.upstreams[0]), encodeUpstream(upstreams[0]));
  });

  it('store a plain route as before', () => {
    const { routes } = parseConfigTexts([
      {
        file: 'c.yaml',
        text: 'upstreams: [{ name: u, targets: [{ url: "http://a:1" }] }]\nroutes: [{ name: r, paths: [/x], upstream: u, stripPrefix: / }]',
      },
    ]);

    assert.equal(
      encodeRoute(routes[0]),
      '{"name":"r","hosts":[],"paths":["/x"],"methods":[],"upstream":"u"}',
    );
  });

  it('reject invalid values by field', () => {
    const bad = `
upstreams:
  - name: u
    balancer: hash
    targets: [{ url: "http://a:1" }]
    passiveHealth: { baseEjectionMs: 5000, maxEjectionMs: 1000 }
routes:
  - name: r
    paths: [/x]
    upstream: u
    stripPrefix: /a/../b
    hostRewrite: "bad host"
    requestHeaders: { set: { "bad name": x, host: y }, remove: [connection] }
`;

    assert.throws(
      () => parseConfigTexts([{ file: 'bad.yaml', text: bad }]),
      (err: Error) => {
        for (const pattern of [
          /hashOn: balancer hash needs hashOn/,
          /maxEjectionMs: must be at least baseEjectionMs/,
          /stripPrefix: invalid path prefix/,
          /hostRewrite: invalid host/,
          /invalid header name/,
          /the proxy manages this header/,
        ]) {
          assert.match(err.message, pattern);
        }
        return true;
      },
    );
  });

  it('hostRewrite accepts what hosts accept', () => {
    const withRewrite = (hostRewrite: string) =>
      `routes:\n  - {name: r, paths: [/x], upstream: u, hostRewrite: "${hostRewrite}"}\n`;
    const stored = (hostRewrite: string) =>
      parseConfigTexts([{ file: 'r.yaml', text: withRewrite(hostRewrite) }], { partial: true })
        .routes[0].hostRewrite;
    assert.equal(stored('Users.Internal.'), 'users.internal');
    assert.equal(stored('Users.Internal.:8080'), 'users.internal:8080');
    assert.equal(stored('Users.Internal:8080'), 'users.internal:8080');
    assert.equal(stored('10.0.0.1.'), '10.0.0.1');
    assert.equal(stored('[::1]:8080'), '[::1]:8080');
    const longest = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    assert.equal(stored(`${longest}.`), longest);

    for (const invalid of ['Users..Internal.', 'Users.Internal..', 'Bad_Host.:8080', '.']) {
      assert.throws(
        () => parseConfigTexts([{ file: 'r.yaml', text: withRewrite(invalid) }], { partial: true }),
        (err: Error) => {
          assert.ok(
            err.message.includes(`hostRewrite: invalid host; use a name such as api.internal`),
            err.message,
          );
          assert.ok(err.message.includes(`(got ${JSON.stringify(invalid)})`), err.message);
          return true;
        },
        invalid,
      );
    }
  });

  it('healthCheck.host is normalised and stored', () => {
    const withHost = (host: string) =>
      `upstreams:\n  - {name: u, targets: [{url: "http://a:1"}], healthCheck: {path: /h, host: "${host}"}}\n`;
    const parse = (host: string) =>
      parseConfigTexts([{ file: 'u.yaml', text: withHost(host) }]).upstreams[0];

    const upstream = parse('Api.Internal.:8080');

    assert.equal(upstream.healthCheck?.host, 'api.internal:8080');
    assert.equal(decodeUpstream(encodeUpstream(upstream)).healthCheck?.host, 'api.internal:8080');
    assert.equal(
      encodeUpstream(normalizeUpstream(decodeUpstream(encodeUpstream(upstream)))),
      encodeUpstream(upstream),
    );
    assert.throws(
      () => parse('bad host'),
      (err: Error) => {
        assert.ok(err.message.includes('healthCheck.host: invalid host'), err.message);
        return true;
      },
    );
  });

  it('store a health check without host as before', () => {
    const { upstreams } = parseConfigTexts([
      {
        file: 'u.yaml',
        text: 'upstreams: [{ name: u, targets: [{ url: "http://a:1" }], healthCheck: { path: /h } }]',
      },
    ]);

    assert.equal(
      encodeUpstream(upstreams[0]),
      '{"name":"u","targets":[{"url":"http://a:1","weight":1}],"healthCheck":{"path":"/h","intervalMs":5000,"timeoutMs":2000,"healthyThreshold":2,"unhealthyThreshold":3}}',
    );
    assert.equal(Object.hasOwn(upstreams[0].healthCheck ?? {}, 'host'), false);
    assert.equal(
      Object.hasOwn(decodeUpstream(encodeUpstream(upstreams[0])).healthCheck ?? {}, 'host'),
      false,
    );
  });
});
