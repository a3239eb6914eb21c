import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { applyConfigText, loomctl, type CliResult } from '../helpers/cli.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';

// `loomctl validate` and `schema` never connect; the address only satisfies the helper.
const OFFLINE = '127.0.0.1:1';

const BASELINE = `upstreams:
  - name: users
    targets: [{url: "http://127.0.0.1:9001"}]
routes:
  - name: get-user
    paths: [/users/:id]
    methods: [GET]
    upstream: users
`;

/** One file with every kind of problem; each line of EXPECTED names one of them. */
const EVERY_KIND = `apiVersion: loom/v2
upstream: []
upstreams:
  - name: users
    balancer: round_robin
    targets:
      - url: http://127.0.0.1:9001
        wieght: 2
  - name: orders
    targets:
      - url: ftp://nowhere
  - name: users
    targets: []
routes:
  - name: r1
    pathz: [/a]
    upstream: users
  - name: r2
    paths: [users/:id]
    hosts: ["bad host"]
    upstream: user
    retries: "3"
  - name: "bad name!"
    paths: [/c]
    upstream: users
  - name: r5
    paths: [/e/:id]
    upstream: users
  - name: r6
    paths: [/e/:name]
    upstream: users
  - name: r7
    paths: [/f]
    methods: GET
    upstream: users
  - name: catch
    paths: ["/g/*rest"]
    upstream: users
  - name: cover
    paths: [/g/:id, "/g/:id/*rest", "/g//*rest", /g/]
    upstream: users
  - name: r8
    upstream: users
    retries: 9
`;

const EXPECTED = [
  /:1: apiVersion: invalid value; expected "loom\/v1" \(got "loom\/v2"\)$/,
  /:2: upstream: unknown field; did you mean "upstreams"\? \(got \[\]\)$/,
  /:5: upstream "users" balancer: invalid value; did you mean "round-robin"\? Expected one of "round-robin", "least-request", "hash" \(got "round_robin"\)$/,
  /:8: upstream "users" targets\[0\]\.wieght: unknown field; did you mean "weight"\? \(got 2\)$/,
  /:11: upstream "orders" targets\[0\]\.url: unsupported scheme "ftp"; use http or https \(got "ftp:\/\/nowhere"\)$/,
  /:12: upstream "users" name: duplicate upstream name; every upstream needs a unique name \(the first upstream of that name is at .*:4\) \(got "users"\)$/,
  /:13: upstream "users" targets: an upstream needs at least one target \(got \[\]\)$/,
  /:16: route "r1" pathz: unknown field; did you mean "paths", which is required and missing\? \(got \["\/a"\]\)$/,
  /:19: route "r2" paths\[0\]: invalid path pattern: a pattern must start with "\/" \(got "users\/:id"\)$/,
  /:20: route "r2" hosts\[0\]: invalid host; use a DNS name such as api\.example\.com.* \(got "bad host"\)$/,
  /:22: route "r2" retries: invalid type: expected an integer from 0 to 5, got a string \(got "3"\)$/,
  /:23: route "bad name!" name: must be 1-128 letters, digits, .* \(got "bad name!"\)$/,
  /:30: route "r6" paths\[0\]: path "\/e\/:name" of route "r6" conflicts with path "\/e\/:id" of route "r5" .*:26\): both match any host, any method and the same paths; .*$/,
  /:34: route "r7" methods: invalid type: expected a list of strings, got a string; write a list, such as \[GET\] \(got "GET"\)$/,
  /:42: route "r8" paths: missing required field; expected a non-empty list of strings \(path patterns: .*\)$/,
  /:44: route "r8" retries: out of range; expected an integer from 0 to 5 \(got 9\)$/,
];

/** Returns the issue lines of a failed run: the indented lines after the `error:` header. */
function issueLines(result: CliResult): string[] {
  const lines = result.stderr.trimEnd().split('\n');
  // apply writes nothing; validate only checks offline, and its header says so.
  const header = lines.findIndex((line) =>
    /^error: invalid configuration(, nothing was written|: (checked offline,|the control plane) found \d+ errors?):$/.test(
      line,
    ),
  );
  assert.ok(header >= 0, result.stderr);
  return lines.slice(header + 1);
}

function assertIssues(result: CliResult, file: string, expected: RegExp[]): void {
  assert.equal(result.code, 1, result.stderr);
  const lines = issueLines(result);
  for (const line of lines) {
    assert.ok(line.startsWith(`  ${file}:`), `issue without file and line: ${line}`);
    assert.doesNotMatch(line, /Unrecognized|Required|Invalid input|\u0000/);
  }
  for (const pattern of expected) {
    assert.ok(
      lines.some((line) => pattern.test(line)),
      `no issue matches ${pattern}:\n${lines.join('\n')}`,
    );
  }
  assert.equal(lines.length, expected.length, lines.join('\n'));
}

describe('loomctl validate messages', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-validate-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function write(name: string, text: string): string {
    const file = join(dir, name);
    writeFileSync(file, text);
    return file;
  }

  test('every kind in one run', async () => {
    const file = write('every-kind.yaml', EVERY_KIND);
    const result = await loomctl(OFFLINE, ['validate', '-f', file]);
    assertIssues(result, file, EXPECTED);
    const warnings = result.stderr.split('\n').filter((line) => line.startsWith('warning: '));
    assert.deepEqual(
      warnings.map((line) => line.split(': ').slice(1, 3).join(': ')),
      [`${file}:21: route "r2" upstream`, `${file}:36: route "catch" paths`],
    );
    assert.match(
      warnings[0],
      /not declared in these files; .* \(did you mean "users"\?\) \(got "user"\)$/,
    );
    assert.match(warnings[1], /can never match: .*"cover"/);
    assert.equal(result.stdout, '');
  });

  test('thousands of errors are summarised', async () => {
    const routes = Array.from(
      { length: 5_000 },
      (_, index) =>
        `  - {name: r${index}, hosts: [bad_host${index}], paths: [/r${index}], ` +
        'upstream: missing, retries: 9}\n',
    );
    const file = write('many-errors.yaml', `routes:\n${routes.join('')}`);
    // apply and diff check the files before they connect, so the offline address serves all three.
    for (const verb of ['validate', 'apply', 'diff']) {
      const result = await loomctl(OFFLINE, [verb, '-f', file]);
      assert.equal(result.code, 1, `${verb}: ${result.stderr.slice(-500)}`);
      assert.equal(result.stdout, '', verb);
      const lines = result.stderr.trimEnd().split('\n');
      const header =
        verb === 'apply' ? 'nothing was written' : 'checked offline, found 10000 errors';
      assert.ok(
        lines.some((line) => line.includes(header)),
        `${verb}: ${lines.join('\n')}`,
      );

      const issues = issueLines(result);
      const hosts = issues.filter((line) => / hosts\[0\]: invalid host/.test(line));
      assert.deepEqual(
        hosts.map((line) => /route "(r\d+)"/.exec(line)?.[1]),
        Array.from({ length: 10 }, (_, index) => `r${index}`),
        verb,
      );
      const retries = issues.filter((line) => / retries: out of range/.test(line));
      assert.equal(retries.length, 10, verb);
      assert.deepEqual(
        issues.slice(-2).sort(),
        [
          '  ... and 4990 more errors in the field hosts[] of routes',
          '  ... and 4990 more errors in the field retries of routes',
        ],
        verb,
      );
      assert.equal(issues.length, 22, verb);

      const warnings = lines.filter((line) => line.startsWith('warning: '));
      assert.equal(warnings.length, 11, verb);
      assert.equal(
        warnings.at(-1),
        'warning: ... and 4990 more routes whose upstream is not declared in these files',
        verb,
      );
    }
  });

  test('invalid host quoted as written', async () => {
    const file = write(
      'host-case.yaml',
      'routes:\n  - name: mixed\n' +
        '    hosts: [Api.Example.COM., Bad_Host.Example.COM, "*.Ünï.Example"]\n' +
        '    paths: [/x]\n    upstream: users\n',
    );
    const result = await loomctl(OFFLINE, ['validate', '-f', file]);
    assert.equal(result.code, 1, result.stderr);
    const issues = issueLines(result);
    assert.equal(issues.length, 2, issues.join('\n'));
    assert.match(
      issues[0],
      /:3: route "mixed" hosts\[1\]: invalid host; .*\(got "Bad_Host\.Example\.COM"\)$/,
    );
    assert.match(
      issues[1],
      /:3: route "mixed" hosts\[2\]: invalid host; .*\(got "\*\.Ünï\.Example"\)$/,
    );
    assert.match(issues[1], /ASCII form: "\*\.xn--/);
  });

  test('route methods quoted as written', async () => {
    const invalid = write(
      'method-case.yaml',
      'routes:\n  - {name: m, methods: [get, "ge(t"], paths: [/m], upstream: users}\n',
    );
    const failed = await loomctl(OFFLINE, ['validate', '-f', invalid]);
    assert.equal(failed.code, 1, failed.stderr);
    assert.deepEqual(issueLines(failed), [
      `  ${invalid}:2: route "m" methods[1]: invalid method; use a token such as GET or POST (got "ge(t")`,
    ]);

    const unknown = write(
      'unknown-method.yaml',
      'routes:\n  - {name: m, methods: [gett], paths: [/m], upstream: users}\n',
    );
    const warned = await loomctl(OFFLINE, ['validate', '-f', unknown]);
    assert.equal(warned.code, 0, warned.stderr);
    assert.match(warned.stderr, /route "m" methods\[0\]: the proxy rejects .*\(got "gett"\)$/m);
  });

  test('valid file passes', async () => {
    const file = write('valid.yaml', BASELINE);
    const result = await loomctl(OFFLINE, ['validate', '-f', file]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^configuration is valid: 1 route, 1 upstream$/m);
  });

  test('each file is named', async () => {
    const first = write('first.yaml', `${BASELINE}    colour: blue\n`);
    const second = write(
      'second.json',
      JSON.stringify({ routes: [{ name: 'r', paths: ['/a'], upstream: 'users', retries: 9 }] }),
    );
    const result = await loomctl(OFFLINE, ['validate', '-f', first, second]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /^error: invalid configuration: checked offline, found 2 errors:$/m,
    );
    assert.doesNotMatch(result.stderr, /nothing was written/);
    assert.deepEqual(issueLines(result), [
      `  ${first}:9: route "get-user" colour: unknown field; valid fields are name, hosts, paths, ` +
        'methods, upstream, stripPrefix, addPrefix, hostRewrite, requestHeaders, responseHeaders, ' +
        'timeouts, retries, maxRequestBodyBytes (got "blue")',
      `  ${second}:1: route "r" retries: out of range; expected an integer from 0 to 5 (got 9)`,
    ]);
  });
});

describe('loomctl validate duplicate names', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-validate-duplicate-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('duplicate route reported once', async () => {
    const first = join(dir, 'first.yaml');
    writeFileSync(first, BASELINE);
    const second = join(dir, 'second.yaml');
    writeFileSync(second, 'routes:\n  - {name: get-user, paths: [/users/:id], upstream: users}\n');
    const result = await loomctl(OFFLINE, ['validate', '-f', first, second]);

    assert.equal(result.code, 1, result.stderr);
    const lines = issueLines(result);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], /route "get-user" name: duplicate route name; /);
    assert.match(lines[0], new RegExp(`the first route of that name is at ${first}:\\d+`));
    assert.doesNotMatch(result.stderr, /conflicts with/);
  });
});

describe('loomctl validate header values', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-validate-header-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('value limit named per problem', async () => {
    const file = join(dir, 'headers.yaml');
    writeFileSync(
      file,
      `${BASELINE}    requestHeaders:\n      set:\n` +
        '        - {name: x-euro, value: "€uro"}\n' +
        '        - {name: x-break, value: "a\\nb"}\n' +
        '        - {name: x-edge, value: "a "}\n' +
        '        - {name: x-latin, value: "café"}\n',
    );
    const result = await loomctl(OFFLINE, ['validate', '-f', file]);

    assert.equal(result.code, 1, result.stderr);
    const lines = issueLines(result);
    const limit =
      'a value may contain only visible ASCII characters, characters U+0080 to U+00FF ' +
      '(Latin-1), and spaces and tabs between them';
    assert.deepEqual(lines, [
      `  ${file}:11: route "get-user" requestHeaders.set.x-euro: invalid header value; the ` +
        `character "€" (U+20AC) is above U+00FF, and ${limit}; encode it, such as ` +
        'percent-encoded as %E2%82%AC (got "€uro")',
      `  ${file}:12: route "get-user" requestHeaders.set.x-break: invalid header value; it ` +
        `contains the control character "\\n", and ${limit}; remove it (got "a\\nb")`,
      `  ${file}:13: route "get-user" requestHeaders.set.x-edge: invalid header value; remove ` +
        'the spaces or tabs at its start or end (got "a ")',
    ]);
  });
});

describe('loomctl validate file handling', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-validate-files-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('directory, documents and repeats', async () => {
    const conf = join(dir, 'conf');
    mkdirSync(conf);
    writeFileSync(join(conf, 'upstreams.yaml'), BASELINE.slice(0, BASELINE.indexOf('routes:')));
    writeFileSync(
      join(conf, 'routes.yaml'),
      'routes:\n  - {name: a, paths: [/a], upstream: users}\n---\nroutes:\n  - {name: b, paths: [/b], upstream: users}\n',
    );
    const file = join(conf, 'routes.yaml');
    const result = await loomctl(OFFLINE, ['validate', '-f', conf, file]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^configuration is valid: 2 routes, 1 upstream$/m);
  });

  test('standard input as a file', async () => {
    const result = await loomctl(
      OFFLINE,
      ['validate', '-f', '-'],
      'routes:\n  - {name: a, paths: [a], upstream: users}\n',
    );
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^ {2}\(stdin\):2: route "a" paths\[0\]: invalid path pattern/m);
  });

  test('operator-facing loader messages', async () => {
    const file = join(dir, 'messages.yaml');
    writeFileSync(
      file,
      `upstreams:
  - name: users
    targets: [{url: "http://admin:s3cret@127.0.0.1:9001"}]
routes:
  - name: a
    paths: ["/t3/**"]
    stripPrefix: /T3
    hosts: ["*"]
    upstream: users
  - name: b
    paths: [/b]
    addPrefix: /%2e%2e/admin
    hosts: [bücher.example]
    upstream: users
`,
    );
    const result = await loomctl(OFFLINE, ['validate', '-f', file]);
    assert.equal(result.code, 1, result.stderr);
    assert.doesNotMatch(result.stderr, /s3cret/);
    assert.match(result.stderr, /^warning: .*:7: route "a" stripPrefix: never applies: /m);
    assert.deepEqual(
      issueLines(result).map((line) => line.replace(/ \(got .*$/, '')),
      [
        `  ${file}:3: upstream "users" targets[0].url: credentials in a target URL are not supported; remove user:password@ from the URL`,
        `  ${file}:8: route "a" hosts[0]: invalid host "*"; omit hosts (or leave the list empty) to match any host`,
        `  ${file}:12: route "b" addPrefix: invalid path prefix: it contains a dot segment ("." or "..", also percent-encoded or followed by ";"); use segments such as /api/v1`,
        `  ${file}:13: route "b" hosts[0]: invalid host; use a DNS name such as api.example.com, a wildcard such as *.example.com, or [IPv6], without a port; write an internationalised name in its ASCII form: "xn--bcher-kva.example"`,
      ],
    );
  });

  test('syntax error and deep pattern', async () => {
    const syntax = join(dir, 'syntax.yaml');
    writeFileSync(syntax, 'routes:\n  - name: r\n    paths: [/users/{id}]\n');
    const deep = join(dir, 'deep.yaml');
    writeFileSync(
      deep,
      `${BASELINE}  - name: deep\n    paths: ["${'/s'.repeat(6000)}/**"]\n    upstream: users\n`,
    );
    const result = await loomctl(OFFLINE, ['validate', '-f', syntax, deep]);
    assert.equal(result.code, 1, result.stderr);
    assert.doesNotMatch(result.stderr, /RangeError|Maximum call stack/);
    const lines = issueLines(result);
    assert.equal(lines.length, 2, result.stderr);
    assert.match(lines[0], /syntax\.yaml:3:20: \(syntax\): invalid YAML or JSON: /);
    assert.match(
      lines[1],
      /deep\.yaml:10: route "deep" paths\[0\]: invalid path pattern: too long: /,
    );
  });
});

describe('loomctl apply on invalid files', () => {
  let fleet: Fleet;
  let stored: string;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    await applyConfigText(fleet.controlPlane, fleet.dir, 'baseline.yaml', BASELINE);
    stored = await storedConfig();
  });

  after(async () => {
    await fleet?.stop();
  });

  async function storedConfig(): Promise<string> {
    const got = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
    assert.equal(got.code, 0, got.stderr);
    return got.stdout;
  }

  async function assertNothingWritten(): Promise<void> {
    assert.equal(await storedConfig(), stored);
  }

  test('every kind writes nothing', async () => {
    const file = join(fleet.dir, 'every-kind.yaml');
    writeFileSync(file, EVERY_KIND);
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    assertIssues(result, file, EXPECTED);
    assert.equal(result.stdout, '');
    await assertNothingWritten();
  });

  test('prune keeps failed upstream declared', async () => {
    const file = join(fleet.dir, 'prune.yaml');
    writeFileSync(
      file,
      `upstreams:
  - name: users
    balancer: random
    targets: [{url: "http://127.0.0.1:9001"}]
routes:
  - name: kept
    paths: [/kept]
    upstream: users
  - name: lost
    paths: [/lost]
    upstream: orders
`,
    );
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--prune']);
    assertIssues(result, file, [
      /:3: upstream "users" balancer: invalid value; expected one of .* \(got "random"\)$/,
      /:11: route "lost" upstream: unknown upstream; declared upstreams: users; --prune deletes the stored upstreams that these files do not declare, so declare it in the files or run without --prune \(got "orders"\)$/,
    ]);
    await assertNothingWritten();
  });

  test('prune with stored upstream only', async () => {
    const file = join(fleet.dir, 'route-only.yaml');
    writeFileSync(file, 'routes:\n  - {name: r, paths: [/r], upstream: users}\n');
    const expected = [
      /:2: route "r" upstream: unknown upstream; no upstream is declared; --prune deletes the stored upstreams that these files do not declare, so declare it in the files or run without --prune \(got "users"\)$/,
    ];
    for (const verb of ['apply', 'diff']) {
      const result = await loomctl(fleet.controlPlane, [verb, '-f', file, '--prune']);
      assert.doesNotMatch(result.stderr, /^warning:/m, verb);
      assertIssues(result, file, expected);
    }
    await assertNothingWritten();
  });

  test('warnings precede the errors', async () => {
    const file = join(fleet.dir, 'warned.yaml');
    writeFileSync(
      file,
      'routes:\n  - name: lost\n    paths: [/lost]\n    upstream: user\n    retries: 9\n',
    );
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    assert.equal(result.code, 1, result.stderr);
    const lines = result.stderr.trimEnd().split('\n');
    assert.match(
      lines[0],
      /^warning: .*warned\.yaml:4: route "lost" upstream: upstream is not declared/,
    );
    assert.deepEqual(issueLines(result), [
      `  ${file}:5: route "lost" retries: out of range; expected an integer from 0 to 5 (got 9)`,
    ]);
    await assertNothingWritten();
  });

  test('control plane rejection writes nothing', async () => {
    const file = join(fleet.dir, 'partial.yaml');
    writeFileSync(file, 'routes:\n  - name: lost\n    paths: [/lost]\n    upstream: user\n');
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /^warning: .*partial\.yaml:4: route "lost" upstream: upstream is not declared/m,
    );
    assert.deepEqual(issueLines(result), [
      `  ${file}:4: route "lost" upstream: unknown upstream; did you mean "users"? ` +
        'upstreams in the files or the store: users (got "user")',
    ]);
    await assertNothingWritten();
  });

  test('control plane errors name stdin lines', async () => {
    const text = 'routes:\n  - name: lost\n    paths: [/lost]\n    upstream: user\n';
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', '-'], text);
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(issueLines(result), [
      '  (stdin):4: route "lost" upstream: unknown upstream; did you mean "users"? ' +
        'upstreams in the files or the store: users (got "user")',
    ]);
    await assertNothingWritten();
  });

  test('diff locates control plane errors', async () => {
    const dir = join(fleet.dir, 'diff-dir');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'a.yaml'),
      'routes:\n  - name: kept\n    paths: [/kept]\n    upstream: users\n',
    );
    const second = join(dir, 'b.yaml');
    writeFileSync(
      second,
      '# orphan\nroutes:\n  - name: orphan\n    paths: [/orphan]\n    upstream: nope\n',
    );
    const result = await loomctl(fleet.controlPlane, ['diff', '-f', dir]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /^error: invalid configuration: the control plane found 1 error:$/m,
    );
    assert.doesNotMatch(result.stderr, /nothing was written/);
    assert.deepEqual(issueLines(result), [
      `  ${second}:5: route "orphan" upstream: unknown upstream; ` +
        'upstreams in the files or the store: users (got "nope")',
    ]);
  });

  test('diff of invalid files says offline', async () => {
    const file = join(fleet.dir, 'diff-bad.yaml');
    writeFileSync(
      file,
      'routes:\n  - name: bad\n    paths: [/bad]\n    upstream: users\n    retries: 9\n',
    );
    const result = await loomctl(fleet.controlPlane, ['diff', '-f', file]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: invalid configuration: checked offline, found 1 error:$/m);
    assert.doesNotMatch(result.stderr, /nothing was written/);
  });

  test('diff reads standard input', async () => {
    const same = await loomctl(fleet.controlPlane, ['diff', '-f', '-'], BASELINE);
    assert.equal(same.code, 0, same.stderr);
    const changed = BASELINE + '  - {name: from-stdin, paths: [/from-stdin], upstream: users}\n';
    const result = await loomctl(fleet.controlPlane, ['diff', '-f', '-'], changed);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stdout, /route\/from-stdin/);
    await assertNothingWritten();
  });
});

describe('loomctl apply of equivalent spellings', () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
  });

  after(async () => {
    await fleet?.stop();
  });

  function write(name: string, path: string, prefix: string): string {
    const file = join(fleet.dir, name);
    writeFileSync(
      file,
      `${BASELINE}  - name: tilde\n    paths: ["${path}"]\n    stripPrefix: "${prefix}"\n    upstream: users\n`,
    );
    return file;
  }

  test('escaped and plain store once', async () => {
    const escaped = write('escaped.yaml', '/%7Eu/**', '/%7eu/');
    const plain = write('plain.yaml', '/~u/**', '/~u');
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', escaped]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(applied.stderr, '');
    assert.match(applied.stdout, /^version 1$/m);

    const diff = await loomctl(fleet.controlPlane, ['diff', '-f', plain]);
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
    assert.match(diff.stdout, /^no changes \(version 1\)$/m);
    const again = await loomctl(fleet.controlPlane, ['apply', '-f', plain]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^no changes \(version 1\)$/m);

    const got = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
    const route = (JSON.parse(got.stdout) as { routes: { name: string }[] }).routes.find(
      (stored) => stored.name === 'tilde',
    );
    assert.deepEqual(route, {
      name: 'tilde',
      hosts: [],
      paths: ['/~u/**'],
      methods: [],
      upstream: 'users',
      stripPrefix: '/~u',
    });
  });
});
