import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ConfigError } from '../../common/errors.js';
import { parseConfigTexts } from '../../config/load.js';

function issuesOf(text: string, file = 'loom.yaml') {
  try {
    parseConfigTexts([{ file, text }]);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues;
  }
  assert.fail('expected a ConfigError');
}

describe('config loading', () => {
  test('valid YAML is normalised', () => {
    const config = parseConfigTexts([
      {
        file: 'a.yaml',
        text: `
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9002
      - url: http://127.0.0.1:9001
        weight: 3
routes:
  - name: r
    hosts: [API.Example.com., a.example.com]
    paths: [/b, /a]
    methods: [post, GET]
    upstream: users
`,
      },
    ]);
    assert.deepEqual(config.routes, [
      {
        name: 'r',
        hosts: ['a.example.com', 'api.example.com'],
        paths: ['/a', '/b'],
        methods: ['GET', 'POST'],
        upstream: 'users',
      },
    ]);
    assert.deepEqual(config.upstreams[0].targets, [
      { url: 'http://127.0.0.1:9001', weight: 3 },
      { url: 'http://127.0.0.1:9002', weight: 1 },
    ]);
  });

  test('JSON input is accepted', () => {
    const config = parseConfigTexts([
      {
        file: 'a.json',
        text: '{"upstreams":[{"name":"u","targets":[{"url":"http://127.0.0.1:1"}]}],"routes":[{"name":"r","paths":["/"],"upstream":"u"}]}',
      },
    ]);
    assert.equal(config.routes[0].name, 'r');
    assert.deepEqual(config.routes[0].methods, []);
  });

  test('every problem is reported with its line', () => {
    const issues = issuesOf(`upstreams:
  - name: users
    targets:
      - url: not a url
routes:
  - name: r1
    paths: [/users/:id]
    upstream: nobody
  - name: r1
    paths: [/x]
    upstream: users
  - name: r3
    hosts: ["bad host"]
    paths: [users]
    methods: ["G E T"]
    upstream: users
`);
    const lines = issues.map((issue) => `${issue.line} ${issue.kind} ${issue.name} ${issue.field}`);
    assert.ok(lines.includes('4 upstream users targets[0].url'), lines.join('\n'));
    assert.ok(lines.includes('8 route r1 upstream'), lines.join('\n'));
    assert.ok(lines.includes('9 route r1 name'), lines.join('\n'));
    assert.ok(lines.includes('13 route r3 hosts[0]'), lines.join('\n'));
    assert.ok(lines.includes('14 route r3 paths[0]'), lines.join('\n'));
    assert.ok(lines.includes('15 route r3 methods[0]'), lines.join('\n'));
    for (const issue of issues) assert.equal(issue.file, 'loom.yaml');
  });

  test('target URL path starting with // rejected', () => {
    const issues = issuesOf(`upstreams:
  - name: users
    targets:
      - url: http://10.0.0.5//evil.example/x
routes:
  - name: r
    paths: [/x]
    upstream: users
`);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].field, 'targets[0].url');
    assert.equal(issues[0].line, 4);
    assert.match(issues[0].message, /cannot start with "\/\/"/);
  });

  test('target port 0 rejected', () => {
    const issues = issuesOf(`upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:0
routes:
  - name: r
    paths: [/x]
    upstream: users
`);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].field, 'targets[0].url');
    assert.match(issues[0].message, /port 0 cannot be connected to/);
  });

  test('target URL and host length limited', () => {
    const longHost = `${'a'.repeat(60)}.`.repeat(5) + 'internal';
    const issues = issuesOf(`upstreams:
  - name: users
    targets:
      - url: http://${'x'.repeat(1_000_000)}
      - url: http://${longHost}:8080
      - url: http://${'a'.repeat(60)}.internal:8080/${'b'.repeat(1_900)}
routes:
  - name: r
    paths: [/x]
    upstream: users
`);
    const messages = issues.map((issue) => issue.message);
    assert.equal(issues.length, 2, JSON.stringify(messages));
    const long = issues.find((issue) => issue.message.startsWith('too long'));
    assert.equal(long?.field, 'targets[0].url');
    assert.match(long.message, /too long: 1000007 characters, at most 2048 are allowed/);
    assert.ok(String(long.value).length < 200, 'the issue quotes the whole URL');
    const host = issues.find((issue) => issue.message.startsWith('the host name'));
    assert.equal(host?.field, 'targets[1].url');
    assert.match(host.message, /host name has 313 characters, at most 253 are allowed/);
  });

  test('target port above 65535 named', () => {
    const issues = issuesOf(`upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:99999
      - url: http://[::1]:70000/base
      - url: http://bad host:80
      - url: 127.0.0.1:9001
      - url: localhost:9002
`);
    assert.deepEqual(
      issues.map((issue) => issue.message),
      [
        'port 99999 is out of range; use a port from 1 to 65535',
        'port 70000 is out of range; use a port from 1 to 65535',
        'invalid URL; expected http://host:port or https://host:port with an optional base path',
        'missing scheme; write http://127.0.0.1:9001 or https://127.0.0.1:9001',
        'missing scheme; write http://localhost:9002 or https://localhost:9002',
      ],
    );
  });

  test('two spellings of one target rejected', () => {
    const issues = issuesOf(`upstreams:
  - name: users
    targets:
      - url: http://LocalHost:80/
      - url: http://127.0.0.1:1
      - url: http://localhost
routes:
  - name: r
    paths: [/x]
    upstream: users
`);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].field, 'targets[2].url');
    assert.equal(issues[0].line, 6);
    assert.match(
      issues[0].message,
      /duplicate target: targets\[0\] is the same URL \(http:\/\/localhost\)/,
    );
  });

  test('schema errors name field and line', () => {
    const issues = issuesOf(`routes:
  - name: r
    paths: /not-a-list
    upstream: u
    colour: blue
`);
    const fields = issues.map((issue) => `${issue.line} ${issue.field}`);
    assert.ok(fields.includes('3 paths'), fields.join('\n'));
    assert.ok(fields.includes('5 colour'), fields.join('\n'));
  });

  test('YAML syntax errors carry the line', () => {
    const issues = issuesOf('routes:\n  - name: r\n    paths: [/a\n');
    assert.equal(issues[0].field, '(syntax)');
    assert.ok(issues[0].line !== undefined);
  });

  test('conflicting routes are named', () => {
    const issues = issuesOf(`upstreams:
  - name: u
    targets: [{url: "http://127.0.0.1:1"}]
routes:
  - name: first
    paths: [/u/:id]
    upstream: u
  - name: second
    paths: [/u/:name]
    upstream: u
`);
    assert.equal(issues.length, 1);
    assert.match(issues[0].message, /first/);
    assert.match(issues[0].message, /second/);
  });
  test('defaults store the same form', () => {
    const text = (extra: string) => `
upstreams:
  - name: u
    targets: [{url: "http://127.0.0.1:1"}]
routes:
  - name: r
    paths: [/a]
    upstream: u
${extra}`;
    const plain = parseConfigTexts([{ file: 'a.yaml', text: text('') }]).routes[0];
    const explicit = parseConfigTexts([{ file: 'b.yaml', text: text('    retries: 0\n') }])
      .routes[0];
    assert.deepEqual(explicit, plain);

    const partial = parseConfigTexts([
      { file: 'c.yaml', text: text('    timeouts: {connectMs: 5000}\n') },
    ]).routes[0];
    const asPrinted = parseConfigTexts([
      {
        file: 'd.yaml',
        text: text('    timeouts: {connectMs: 5000, responseHeaderMs: 0, idleBodyMs: 0}\n'),
      },
    ]).routes[0];
    assert.deepEqual(asPrinted, partial);
  });

  test('empty optional objects store nothing', () => {
    const upstreamWith = (extra: string) =>
      parseConfigTexts([
        {
          file: 'u.yaml',
          text: `upstreams:\n  - name: u\n    targets: [{url: "http://127.0.0.1:1"}]\n${extra}`,
        },
      ]).upstreams[0];
    const plainUpstream = upstreamWith('');
    assert.deepEqual(upstreamWith('    tls: {}\n'), plainUpstream);
    assert.deepEqual(
      upstreamWith('    tls: {caFile: "", serverName: "", insecureSkipVerify: false}\n'),
      plainUpstream,
    );
    assert.deepEqual(upstreamWith('    tls: {insecureSkipVerify: true}\n').tls, {
      caFile: '',
      serverName: '',
      insecureSkipVerify: true,
    });
    // Unlike no passiveHealth, an empty one turns on ejection with the default settings.
    assert.deepEqual(upstreamWith('    passiveHealth: {}\n').passiveHealth, {
      consecutiveFailures: 5,
      baseEjectionMs: 10_000,
      maxEjectionMs: 300_000,
    });

    const routeWith = (extra: string) =>
      parseConfigTexts(
        [
          {
            file: 'r.yaml',
            text: `routes:\n  - name: r\n    paths: [/a]\n    upstream: u\n${extra}`,
          },
        ],
        { partial: true },
      ).routes[0];
    const plainRoute = routeWith('');
    for (const field of ['timeouts', 'requestHeaders', 'responseHeaders']) {
      assert.deepEqual(routeWith(`    ${field}: {}\n`), plainRoute, field);
    }
  });
});
