import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ConfigError } from '../../common/errors.js';
import { parseConfigTexts } from '../../config/load.js';
import { findShadowedRoutes } from '../../config/overlap.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';

const HEADER = `upstreams:
  - name: u
    targets: [{url: "http://127.0.0.1:1"}]
routes:
`;

function route(name: string, paths: string[], methods: string[] = [], hosts: string[] = []): Route {
  return { name, hosts, paths, methods, upstream: 'u' };
}

function issuesOf(text: string) {
  try {
    parseConfigTexts([{ file: 'loom.yaml', text }]);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues;
  }
  assert.fail('expected a ConfigError');
}

describe('route conflicts', () => {
  test('issue names both routes', () => {
    const issues = issuesOf(`${HEADER}  - name: first
    paths: [/u/:id]
    upstream: u
  - name: second
    paths: [/x, /u/:name]
    methods: [GET]
    upstream: u
`);
    assert.equal(issues.length, 1);
    const [issue] = issues;
    assert.equal(issue.name, 'second');
    assert.equal(issue.line, 9);
    assert.equal(issue.field, 'paths[1]');
    assert.equal(issue.value, '/u/:name');
    assert.match(issue.message, /path "\/u\/:id" of route "first" \(loom\.yaml:5\)/);
    assert.match(issue.message, /any host, method GET/);
  });

  test('every conflict is reported', () => {
    const issues = issuesOf(`${HEADER}  - name: a
    paths: [/a]
    upstream: u
  - name: b
    paths: [/a]
    upstream: u
  - name: c
    hosts: [x.example.com]
    paths: [/c/*rest]
    upstream: u
  - name: d
    hosts: [X.example.com.]
    paths: [/c/*other]
    upstream: u
`);
    assert.deepEqual(
      issues.map((issue) => `${issue.name} ${issue.line}`),
      ['b 9', 'd 17'],
    );
    assert.match(issues[1].message, /host "x\.example\.com"/);
  });

  test('disjoint methods do not conflict', () => {
    const config = parseConfigTexts([
      {
        file: 'loom.yaml',
        text: `${HEADER}  - name: read
    paths: [/a/:id]
    methods: [GET]
    upstream: u
  - name: write
    paths: [/a/:key]
    methods: [POST, PUT]
    upstream: u
`,
      },
    ]);
    assert.equal(config.routes.length, 2);
    assert.deepEqual(config.warnings, []);
  });

  test('conflict is reported with other errors', () => {
    const issues = issuesOf(`${HEADER}  - name: a
    paths: [/a]
    upstream: nowhere
  - name: b
    paths: [/a]
    upstream: u
`);
    assert.deepEqual(
      issues.map((issue) => `${issue.name} ${issue.field}`),
      ['a upstream', 'b paths[0]'],
    );
  });
});

describe('shadowed routes', () => {
  test('covered catch-all is reported', () => {
    const shadowed = findShadowedRoutes([
      route('files', ['/files/*rest']),
      route('file-one', ['/files/:name', '/files/:name/*rest']),
      route('files-root', ['/files/', '/files//*rest']),
    ]);
    assert.deepEqual(shadowed, [{ index: 0, by: ['file-one', 'files-root'] }]);
  });

  test('empty segment keeps catch-all reachable', () => {
    const shadowed = findShadowedRoutes([
      route('files', ['/files/*rest']),
      route('file-one', ['/files/:name', '/files/:name/*rest']),
    ]);
    assert.deepEqual(shadowed, []);
  });

  test('uncovered method keeps catch-all reachable', () => {
    const shadowed = findShadowedRoutes([
      route('files', ['/files/*rest'], ['GET', 'POST']),
      route('file-one', ['/files/:name', '/files/:name/*rest'], ['GET']),
      route('files-root', ['/files/', '/files//*rest']),
    ]);
    assert.deepEqual(shadowed, []);
  });

  test('any-method catch-all needs any-method cover', () => {
    const shadowed = findShadowedRoutes([
      route('files', ['/files/*rest']),
      route('file-one', ['/files/:name', '/files/:name/*rest'], ['GET']),
      route('files-root', ['/files/', '/files//*rest']),
    ]);
    assert.deepEqual(shadowed, []);
  });

  test('route with a reachable path is kept', () => {
    const shadowed = findShadowedRoutes([
      route('files', ['/files/*rest', '/docs']),
      route('file-one', ['/files/:name', '/files/:name/*rest']),
      route('files-root', ['/files/', '/files//*rest']),
    ]);
    assert.deepEqual(shadowed, []);
  });

  test('other host class does not shadow', () => {
    const shadowed = findShadowedRoutes([
      route('files', ['/files/*rest'], [], ['*.example.com']),
      route('file-one', ['/files/:name', '/files/:name/*rest'], [], ['a.example.com']),
      route('files-root', ['/files/', '/files//*rest'], [], ['a.example.com']),
    ]);
    assert.deepEqual(shadowed, []);
  });

  test('warning carries file and line', () => {
    const config = parseConfigTexts([
      {
        file: 'loom.yaml',
        text: `${HEADER}  - name: files
    paths: [/files/*rest]
    upstream: u
  - name: cover
    paths: [/files/:name, /files/:name/*rest, /files/, /files//*rest]
    upstream: u
`,
      },
    ]);
    assert.equal(config.warnings.length, 1);
    const [warning] = config.warnings;
    assert.equal(warning.name, 'files');
    assert.equal(warning.line, 5);
    assert.match(warning.message, /can never match.*"cover"/);
  });
});
