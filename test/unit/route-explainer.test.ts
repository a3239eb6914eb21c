import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { parseDuration } from '../../cli/context.js';
import { diffFields } from '../../cli/field-diff.js';
import { explainRequest } from '../../cli/route-explainer.js';
import { percentile } from '../../cli/wait.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';

const route = (
  name: string,
  paths: string[],
  hosts: string[] = [],
  methods: string[] = [],
): Route => ({
  name,
  hosts,
  paths,
  methods,
  upstream: 'u',
});

const routes = [
  route('any-files', ['/files/*rest']),
  route('file', ['/files/:name']),
  route('wild-file', ['/files/:name'], ['*.example.com']),
  route('exact-admin', ['/files/admin'], ['api.example.com']),
  route('json', ['/files/:name.json']),
  route('post', ['/upload'], [], ['POST']),
];

describe('route explainer', () => {
  test('exact host wins with reasons', () => {
    const explanation = explainRequest(routes, 'GET', 'API.example.com:8080', '/files/admin');
    assert.equal(explanation.kind, 'found');
    if (explanation.kind !== 'found') return;
    assert.equal(explanation.route, 'exact-admin');
    assert.equal(explanation.hostClass, 'exact');
    assert.equal(explanation.host, 'api.example.com');
    assert.deepEqual(
      explanation.segments.map((segment) => `${segment.kind} ${segment.pattern}=${segment.value}`),
      ['static files=files', 'static admin=admin'],
    );
    const losers = new Map(explanation.losers.map((loser) => [loser.route, loser.reason]));
    assert.equal(losers.get('wild-file'), 'host class exact is tried before wildcard');
    assert.equal(losers.get('any-files'), 'host class exact is tried before any');
    assert.equal(losers.get('file'), 'host class exact is tried before any');
  });

  test('wildcard host class', () => {
    const explanation = explainRequest(routes, 'GET', 'web.example.com', '/files/a');
    assert.equal(explanation.kind, 'found');
    if (explanation.kind !== 'found') return;
    assert.equal(explanation.route, 'wild-file');
    assert.equal(explanation.host, '*.example.com');
    assert.deepEqual(explanation.params, { name: 'a' });
  });

  test('segment kinds decide within a class', () => {
    const explanation = explainRequest(routes, 'GET', undefined, '/files/report.json');
    assert.equal(explanation.kind, 'found');
    if (explanation.kind !== 'found') return;
    assert.equal(explanation.route, 'json');
    assert.equal(explanation.segments[1].kind, 'mixed');
    const losers = new Map(explanation.losers.map((loser) => [loser.route, loser.reason]));
    assert.equal(losers.get('file'), 'segment 2: mixed ":name.json" beats param ":name"');
    assert.equal(losers.get('any-files'), 'segment 2: mixed ":name.json" beats catch-all "*rest"');
  });

  test('not found lists host misses', () => {
    const hosted: Route[] = [
      route('echo', ['/echo/*rest'], ['localhost']),
      route('posts', ['/echo/*rest'], ['example.org'], ['POST']),
    ];
    const explanation = explainRequest(hosted, 'GET', 'example.com', '/echo/x');
    assert.deepEqual(explanation, {
      kind: 'not-found',
      hostMisses: [{ route: 'echo', path: '/echo/*rest', hosts: ['localhost'] }],
    });
  });

  test('HEAD explained by GET route', () => {
    const getRoutes = [
      route('get-user', ['/users/:id'], [], ['GET']),
      route('get-admin', ['/users/admin'], ['api.example.com'], ['GET']),
    ];
    const explanation = explainRequest(getRoutes, 'HEAD', 'api.example.com', '/users/admin');
    assert.equal(explanation.kind, 'found');
    if (explanation.kind !== 'found') return;
    assert.equal(explanation.route, 'get-admin');
    assert.equal(explanation.hostClass, 'exact');
    const losers = new Map(explanation.losers.map((loser) => [loser.route, loser.reason]));
    assert.equal(losers.get('get-user'), 'host class exact is tried before any');

    const param = explainRequest(getRoutes, 'HEAD', undefined, '/users/1');
    assert.equal(param.kind, 'found');
    if (param.kind !== 'found') return;
    assert.equal(param.route, 'get-user');
    assert.deepEqual(param.params, { id: '1' });
  });

  test('HEAD host misses include GET routes', () => {
    const hosted = [route('echo', ['/echo/*rest'], ['localhost'], ['GET'])];
    assert.deepEqual(explainRequest(hosted, 'HEAD', 'example.com', '/echo/x'), {
      kind: 'not-found',
      hostMisses: [{ route: 'echo', path: '/echo/*rest', hosts: ['localhost'] }],
    });
  });

  test('route hosts compared normalized', () => {
    const spelled = [route('exact', ['/x'], ['A.com.']), route('wild', ['/y'], ['*.Example.com'])];
    const exact = explainRequest(spelled, 'GET', 'a.com', '/x');
    assert.equal(exact.kind, 'found');
    if (exact.kind !== 'found') return;
    assert.equal(exact.route, 'exact');
    assert.equal(exact.hostClass, 'exact');

    const wild = explainRequest(spelled, 'GET', 'b.example.com', '/y');
    assert.equal(wild.kind, 'found');
    if (wild.kind !== 'found') return;
    assert.equal(wild.route, 'wild');
    assert.equal(wild.host, '*.example.com');
  });

  test('unmatched results pass through', () => {
    assert.deepEqual(explainRequest(routes, 'GET', undefined, '/nothing'), {
      kind: 'not-found',
      hostMisses: [],
    });
    const wrongMethod = explainRequest(routes, 'GET', undefined, '/upload');
    assert.deepEqual(wrongMethod, { kind: 'method-not-allowed', allow: ['POST'] });
    assert.equal(explainRequest(routes, 'GET', undefined, 'relative').kind, 'bad-request');
  });
});

describe('field diff', () => {
  test('nested fields and whole lists', () => {
    const before = {
      name: 'u',
      hosts: ['a.com'],
      targets: [{ url: 'http://a', weight: 1 }],
    };
    const after = {
      name: 'u',
      hosts: ['a.com', 'b.com'],
      targets: [
        { url: 'http://a', weight: 2 },
        { url: 'http://b', weight: 1 },
      ],
      retries: 2,
    };
    assert.deepEqual(diffFields(before, after), [
      { field: 'hosts', before: '["a.com"]', after: '["a.com","b.com"]' },
      { field: 'targets[0].weight', before: '1', after: '2' },
      { field: 'targets[1]', before: undefined, after: '{"url":"http://b","weight":1}' },
      { field: 'retries', before: undefined, after: '2' },
    ]);
  });

  test('equal resources have no changes', () => {
    assert.deepEqual(diffFields({ a: [1, 2], b: { c: 'd' } }, { a: [1, 2], b: { c: 'd' } }), []);
  });
});

describe('wait percentiles', () => {
  test('nearest rank', () => {
    assert.equal(percentile([], 50), undefined);
    assert.equal(percentile([5], 99), 5);
    assert.equal(percentile([4, 1, 3, 2], 50), 2);
    assert.equal(percentile([4, 1, 3, 2], 99), 4);
  });
});

describe('loomctl duration parser', () => {
  test('units and combinations', () => {
    const parse = parseDuration('--timeout');
    assert.equal(parse('500ms'), 500);
    assert.equal(parse('30s'), 30_000);
    assert.equal(parse('2m'), 120_000);
    assert.equal(parse('1h'), 3_600_000);
    assert.equal(parse('1m30s'), 90_000);
    assert.equal(parse('1.5s'), 1_500);
  });

  test('invalid values throw', () => {
    const parse = parseDuration('--timeout');
    for (const value of ['abc', '1d', 's', '-1s', '1h 2m']) {
      assert.throws(
        () => parse(value),
        /^InvalidArgumentError: Expected a duration such as /,
        value,
      );
    }
    for (const value of ['0', '0s']) {
      assert.throws(() => parse(value), /Expected a duration above 0/, value);
    }
    assert.throws(() => parse('10'), /A duration needs a unit; write 10ms or 10s\./);
  });
});
