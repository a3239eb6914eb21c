import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ConfigError, formatConfigIssue, type ConfigIssue } from '../../common/errors.js';
import { parseConfigTexts } from '../../config/load.js';
import { suggestName } from '../../config/suggest.js';

const UPSTREAM = `upstreams:
  - name: users
    targets: [{url: "http://127.0.0.1:9001"}]
`;

function rejectionOf(text: string, options = { partial: false }, file = 'loom.yaml'): ConfigError {
  try {
    parseConfigTexts([{ file, text }], options);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error;
  }
  assert.fail('expected a ConfigError');
}

/** Returns each issue as its one-line form, for matching and for failure messages. */
function linesOf(text: string, options = { partial: false }): string[] {
  return rejectionOf(text, options).issues.map(formatConfigIssue);
}

function assertHas(lines: string[], pattern: RegExp): void {
  assert.ok(
    lines.some((line) => pattern.test(line)),
    `no issue matches ${pattern}:\n${lines.join('\n')}`,
  );
}

function fieldsOf(issues: ConfigIssue[]): string[] {
  return issues.map((issue) => `${issue.kind} ${issue.name} ${issue.field}`);
}

describe('schema messages', () => {
  test('misspelled field suggests the name', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    pathz: [/a]
    upstream: users
`);
    assert.deepEqual(lines, [
      'loom.yaml:6: route "r" pathz: unknown field; did you mean "paths", which is required and missing? (got ["/a"])',
    ]);
  });

  test('misspelled optional field suggests the name', () => {
    const lines = linesOf(`upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9001
        wieght: 2
    health_check: {path: /healthz}
`);
    assertHas(
      lines,
      /^loom\.yaml:5: upstream "users" targets\[0\]\.wieght: .*did you mean "weight"\?/,
    );
    assertHas(
      lines,
      /^loom\.yaml:6: upstream "users" health_check: .*did you mean "healthCheck"\?/,
    );
    assert.equal(lines.length, 2, lines.join('\n'));
  });

  test('unknown field lists the valid fields', () => {
    const lines = linesOf(`${UPSTREAM}    colour: blue\n`);
    assert.deepEqual(lines, [
      'loom.yaml:4: upstream "users" colour: unknown field; valid fields are name, targets, balancer, hashOn, healthCheck, passiveHealth, tls (got "blue")',
    ]);
  });

  test('unknown field on its own line', () => {
    const lines = linesOf(`${UPSTREAM}    extra:\n      - 1\n`);
    assertHas(lines, /^loom\.yaml:4: upstream "users" extra: unknown field/);
  });

  test('missing field names the type', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    upstream: users
`);
    assert.deepEqual(lines, [
      'loom.yaml:5: route "r" paths: missing required field; expected a non-empty list of strings ' +
        '(path patterns: static segments, :param and a trailing *name catch-all)',
    ]);
  });

  test('wrong type names both types', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: /a
    methods: GET
    upstream: users
    retries: "3"
    timeouts: {connectMs: 5s, idleBodyMs: 1m30s, responseHeaderMs: soon}
`);
    assertHas(
      lines,
      /route "r" paths: invalid type: expected a non-empty list of strings, got a string; write a list, such as \[\/a\] \(got "\/a"\)$/,
    );
    assertHas(
      lines,
      /route "r" methods: invalid type: expected a list of strings, got a string; write a list, such as \[GET\] \(got "GET"\)$/,
    );
    assertHas(
      lines,
      /route "r" retries: invalid type: expected an integer from 0 to 5, got a string \(got "3"\)$/,
    );
    assertHas(
      lines,
      /route "r" timeouts.connectMs: invalid type: expected an integer from 0 to 86400000, got a string; write the number of milliseconds, such as 5000 \(got "5s"\)$/,
    );
    assertHas(lines, /timeouts.idleBodyMs: .*; write the number of milliseconds, such as 90000 /);
    assertHas(lines, /timeouts.responseHeaderMs: .*, got a string \(got "soon"\)$/);
  });

  test('enum lists the allowed values', () => {
    const lines = linesOf(`${UPSTREAM}    balancer: round_robin\n`);
    assert.deepEqual(lines, [
      'loom.yaml:4: upstream "users" balancer: invalid value; did you mean "round-robin"? ' +
        'Expected one of "round-robin", "least-request", "hash" (got "round_robin")',
    ]);
    const far = linesOf(`${UPSTREAM}    balancer: random\n`);
    assert.match(
      far[0],
      /balancer: invalid value; expected one of "round-robin", "least-request", "hash" \(got "random"\)$/,
    );
  });

  test('range names the bounds', () => {
    const lines = linesOf(`${UPSTREAM}    healthCheck: {path: /h, intervalMs: 0}\n`);
    assert.deepEqual(lines, [
      'loom.yaml:4: upstream "users" healthCheck.intervalMs: out of range; expected an integer from 1 to 86400000 (got 0)',
    ]);
  });

  test('numbers beyond a double name the bound', () => {
    const lines = linesOf(`upstreams:
  - name: users
    targets: [{url: "http://127.0.0.1:9001", weight: 1e309}]
`);
    assert.deepEqual(lines, [
      'loom.yaml:3: upstream "users" targets[0].weight: out of range; expected an integer ' +
        'from 0 to 10000, got a number beyond the range of a double (got "Infinity")',
    ]);
  });

  test('unsafe integer is one issue', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: [/r]
    upstream: users
    maxRequestBodyBytes: 9007199254740993
    timeouts: {connectMs: 9007199254740993}
`);
    assert.deepEqual(lines, [
      'loom.yaml:8: route "r" maxRequestBodyBytes: out of range; expected an integer of at ' +
        'least 0, at most 9007199254740991 (2^53 - 1); larger numbers lose precision when ' +
        'read (got 9007199254740992)',
      'loom.yaml:9: route "r" timeouts.connectMs: out of range; expected an integer from 0 ' +
        'to 86400000 (got 9007199254740992)',
    ]);
  });

  test('TLS names and files are checked', () => {
    const lines = linesOf(`upstreams:
  - name: users
    targets: [{url: "https://127.0.0.1:9001"}]
    tls: {caFile: "/tmp/ca\\n.pem", serverName: "*.example.com"}
  - name: orders
    targets: [{url: "https://127.0.0.1:9002"}]
    tls: {serverName: "Orders.Internal"}
  - name: by-address
    targets: [{url: "https://127.0.0.1:9003"}]
    tls: {serverName: "10.0.0.1"}
`);
    assert.deepEqual(lines, [
      'loom.yaml:4: upstream "users" tls.caFile: invalid caFile: the path contains a control ' +
        'character; give the path of a PEM file (got "/tmp/ca\\n.pem")',
      'loom.yaml:4: upstream "users" tls.serverName: invalid serverName; use the DNS name ' +
        'that the certificate names, such as api.internal, without a port or wildcard ' +
        '(got "*.example.com")',
    ]);
  });

  test('unknown YAML tag is an error', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: [/r]
    upstream: !!js/function users
`);
    assert.deepEqual(lines, [
      'loom.yaml:7:15: (syntax): invalid YAML or JSON: Unresolved tag: ' +
        'tag:yaml.org,2002:js/function; remove the tag, because config values are plain ' +
        'strings, numbers, lists and mappings',
    ]);
  });

  test('YAML 1.1 tags name their type', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: [/r]
    upstream: !!binary dXNlcnM=
    methods: !!set {GET}
    hosts: [!!timestamp 2001-12-14]
`);
    assert.equal(lines.length, 3, lines.join('\n'));
    assertHas(
      lines,
      /route "r" upstream: invalid type: expected a string, got binary data \(!!binary\)/,
    );
    assertHas(
      lines,
      /route "r" methods: invalid type: expected a list of strings, got a set \(!!set\)/,
    );
    assertHas(
      lines,
      /route "r" hosts\[0\]: invalid type: expected a string, got a timestamp \(!!timestamp\)/,
    );
  });

  test('invalid method is no warning', () => {
    const error = rejectionOf(`${UPSTREAM}routes:
  - name: r
    paths: [/r]
    upstream: users
    methods: ["GE T", FETCH]
`);
    assert.deepEqual(error.issues.map(formatConfigIssue), [
      'loom.yaml:8: route "r" methods[0]: invalid method; use a token such as GET or POST (got "GE T")',
    ]);
    assert.deepEqual(
      error.warnings.map((warning) => warning.field),
      ['methods[1]'],
    );
  });

  test('header set points into the value', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: [/a]
    upstream: users
    requestHeaders: {set: {x-a: 1}}
    responseHeaders:
      set:
        - nmae: x-b
          value: y
  - name: q
    paths: [/b]
    upstream: users
    requestHeaders: {set: x}
`);
    assert.deepEqual(lines, [
      'loom.yaml:8: route "r" requestHeaders.set.x-a: invalid type: expected a string, got an integer (got 1)',
      'loom.yaml:11: route "r" responseHeaders.set[0].nmae: unknown field; did you mean "name", which is required and missing? (got "x-b")',
      'loom.yaml:16: route "q" requestHeaders.set: invalid value; expected a mapping of names to strings ' +
        'or a list of mappings with fields name, value, got a string (got "x")',
    ]);
  });

  test('bad header name shows the name', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: [/a]
    upstream: users
    requestHeaders: {set: {"bad header": x, content-length: "5"}}
    responseHeaders:
      set:
        X-Ok: "1"
        Bad Name: y
        x-val: " lead"
        Host: h
      remove: [x-z, "bad one", X-OK]
  - name: q
    paths: [/b]
    upstream: users
    requestHeaders:
      set:
        - {name: X-A, value: a}
        - {name: x-a, value: b}
      remove: [te]
`);
    assert.deepEqual(lines, [
      'loom.yaml:8: route "r" requestHeaders.set.bad header: invalid header name; use a token such as x-request-source (got "bad header")',
      'loom.yaml:8: route "r" requestHeaders.set.content-length: the proxy manages this header; it cannot be set or removed (the proxy frames each message itself) (got "content-length")',
      'loom.yaml:12: route "r" responseHeaders.set.Bad Name: invalid header name; use a token such as x-request-source (got "Bad Name")',
      'loom.yaml:13: route "r" responseHeaders.set.x-val: invalid header value; remove the spaces or tabs at its start or end (got " lead")',
      'loom.yaml:14: route "r" responseHeaders.set.Host: the proxy manages this header; it cannot be set or removed (use hostRewrite for Host) (got "Host")',
      'loom.yaml:15: route "r" responseHeaders.remove[1]: invalid header name; use a token such as x-request-source (got "bad one")',
      'loom.yaml:15: route "r" responseHeaders.remove[2]: header is both set and removed; keep one (got "X-OK")',
      'loom.yaml:22: route "q" requestHeaders.set.x-a: header set twice; keep one value (got "x-a")',
      'loom.yaml:23: route "q" requestHeaders.remove[0]: the proxy manages this header; it cannot be set or removed (a hop-by-hop header applies to one connection only) (got "te")',
    ]);
  });

  test('document fields are checked too', () => {
    const lines = linesOf(`apiVersion: loom/v2\nroute: []\n`);
    assert.deepEqual(lines, [
      'loom.yaml:1: apiVersion: invalid value; expected "loom/v1" (got "loom/v2")',
      'loom.yaml:2: route: unknown field; did you mean "routes"? (got [])',
    ]);
  });

  test('every message is one line', () => {
    const lines = linesOf(`apiVersion: 2
upstreams:
  - name: "a b"
    targets: {url: x}
routes:
  - nmae: r
    paths: [1]
    upstream: a
    requestHeaders: {set: {x: 1}}
`);
    assert.ok(lines.length >= 5, lines.join('\n'));
    for (const line of lines) {
      assert.doesNotMatch(line, /\n/);
      assert.match(line, /^loom\.yaml:\d+: /);
      assert.doesNotMatch(line, /Unrecognized|Required|Invalid input|\u0000/);
    }
  });

  test('nameless resource is named by position', () => {
    const error = rejectionOf(`${UPSTREAM}routes:
  - paths: [/a]
    upstream: users
`);
    assert.deepEqual(fieldsOf(error.issues), ['route #1 name']);
  });
});

describe('schema and semantic errors together', () => {
  test('one run reports both kinds', () => {
    const error = rejectionOf(`upstreams:
  - name: users
    targets:
      - url: ftp://nowhere
    colour: blue
routes:
  - name: r1
    pathz: [/a]
    upstream: users
  - name: r2
    paths: [users/:id]
    upstream: nobody
    retries: "3"
  - name: r2
    paths: [/b]
    upstream: users
`);
    assert.deepEqual(
      error.issues.map((issue) => `${issue.line} ${issue.kind} ${issue.name} ${issue.field}`),
      [
        '4 upstream users targets[0].url',
        '5 upstream users colour',
        '8 route r1 pathz',
        '11 route r2 paths[0]',
        '12 route r2 upstream',
        '13 route r2 retries',
        '14 route r2 name',
      ],
    );
  });

  test('upstream with a schema error stays declared', () => {
    const lines = linesOf(`upstreams:
  - name: users
    balancer: random
    targets: [{url: "http://127.0.0.1:9001"}]
routes:
  - name: r
    paths: [/a]
    upstream: users
`);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], /upstream "users" balancer: invalid value/);
  });

  test('nameless upstream hides unknown references', () => {
    const lines = linesOf(`upstreams:
  - nmae: users
    targets: [{url: "http://127.0.0.1:9001"}]
routes:
  - name: r
    paths: [/a]
    upstream: users
`);
    assert.deepEqual(lines, [
      'loom.yaml:2: upstream "#1" nmae: unknown field; did you mean "name", which is required and missing? (got "users")',
    ]);
  });

  test('unknown upstream suggests a name', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: r
    paths: [/a]
    upstream: user
`);
    assert.deepEqual(lines, [
      'loom.yaml:7: route "r" upstream: unknown upstream; did you mean "users"? declared upstreams: users (got "user")',
    ]);
  });

  test('failed hashOn skips the balancer check', () => {
    const lines = linesOf(`${UPSTREAM}    balancer: hash\n    hashOn: 7\n`);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], /hashOn: invalid type: expected a string, got an integer/);
  });

  test('failed list element skips its checks', () => {
    const error = rejectionOf(`${UPSTREAM}routes:
  - name: r
    paths: [/a, 7, "no-slash"]
    hosts: [42, "bad host"]
    upstream: users
`);
    const issues = error.issues.map((issue) => `${issue.field} ${issue.message.split(':')[0]}`);
    assert.deepEqual(issues.sort(), [
      'hosts[0] invalid type',
      'hosts[1] invalid host; use a DNS name such as api.example.com, a wildcard such as *.example.com, or [IPv6], without a port',
      'paths[1] invalid type',
      'paths[2] invalid path pattern',
    ]);
  });

  test('failed methods skip conflicts', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: any
    paths: [/a]
    upstream: users
  - name: typed
    paths: [/a]
    methods: GET
    upstream: users
`);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], /route "typed" methods: invalid type/);
  });

  test('unrelated schema error keeps conflicts', () => {
    const lines = linesOf(`${UPSTREAM}routes:
  - name: first
    paths: [/u/:id]
    upstream: users
  - name: second
    paths: [/u/:name]
    upstream: users
    retries: 9
`);
    assertHas(lines, /route "second" paths\[0\]: path "\/u\/:name" of route "second" conflicts/);
    assertHas(
      lines,
      /route "second" retries: out of range; expected an integer from 0 to 5 \(got 9\)/,
    );
  });

  test('warnings come with the errors', () => {
    const error = rejectionOf(`${UPSTREAM}routes:
  - name: catch
    paths: ["/a/*rest"]
    upstream: users
  - name: param
    paths: [/a/:id, "/a/:id/*rest", "/a//*rest", /a/]
    upstream: users
  - name: broken
    paths: [/b]
    upstream: users
    colour: blue
`);
    assert.deepEqual(fieldsOf(error.issues), ['route broken colour']);
    assert.deepEqual(fieldsOf(error.warnings), ['route catch paths']);
    assert.match(formatConfigIssue(error.warnings[0]), /can never match/);
  });

  test('JSON files carry lines', () => {
    const text = JSON.stringify(
      {
        upstreams: [{ name: 'users', targets: [{ url: 'http://127.0.0.1:1', wieght: 1 }] }],
        routes: [{ name: 'r', paths: ['/a'], upstream: 'users', retries: 'x' }],
      },
      null,
      2,
    );
    const lines = rejectionOf(text, { partial: false }, 'loom.json').issues.map(formatConfigIssue);
    assertHas(
      lines,
      /^loom\.json:8: upstream "users" targets\[0\]\.wieght: unknown field; did you mean "weight"\?/,
    );
    assertHas(lines, /^loom\.json:20: route "r" retries: invalid type/);
  });

  test('issues of several files in file order', () => {
    try {
      parseConfigTexts([
        { file: 'a.yaml', text: `${UPSTREAM}    colour: red\n` },
        { file: 'b.yaml', text: 'routes:\n  - name: r\n    paths: [/a]\n    upstream: nobody\n' },
      ]);
      assert.fail('expected a ConfigError');
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      assert.deepEqual(
        error.issues.map((issue) => `${issue.file}:${issue.line} ${issue.field}`),
        ['a.yaml:4 colour', 'b.yaml:4 upstream'],
      );
    }
  });
});

describe('name suggestions', () => {
  test('close names are suggested', () => {
    const fields = ['name', 'hosts', 'paths', 'methods', 'upstream', 'stripPrefix'];
    assert.equal(suggestName('pathz', fields), 'paths');
    assert.equal(suggestName('Paths', fields), 'paths');
    assert.equal(suggestName('nmae', fields), 'name');
    assert.equal(suggestName('upsteam', fields), 'upstream');
    assert.equal(suggestName('strip_prefix', fields), 'stripPrefix');
    assert.equal(suggestName('method', fields), 'methods');
  });

  test('distant names are not suggested', () => {
    const fields = ['name', 'hosts', 'paths', 'methods', 'upstream'];
    assert.equal(suggestName('colour', fields), undefined);
    assert.equal(suggestName('id', fields), undefined);
    assert.equal(suggestName('nm', fields), undefined);
  });
});
