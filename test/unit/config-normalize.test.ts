import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ConfigError, type ConfigIssue } from '../../common/errors.js';
import { MAX_PATTERN_LENGTH, MAX_PATTERN_SEGMENTS } from '../../config/limits.js';
import { parseConfigTexts, type DeclaredConfig } from '../../config/load.js';
import {
  normalizePathPattern,
  normalizeRoute,
  normalizeTargetUrl,
} from '../../config/normalize.js';
import { findShadowedRoutes } from '../../config/overlap.js';
import { validateConfig } from '../../config/validate.js';
import { parsePattern } from '../../data-plane/router/pattern.js';
import { parseTargetUrl } from '../../data-plane/upstreams/target-url.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';

const UPSTREAM = `upstreams:
  - name: u
    targets: [{url: "http://127.0.0.1:9001"}]
routes:
`;

/** Returns a YAML route entry with the given extra fields, indented for UPSTREAM. */
function route(name: string, fields: string): string {
  return `  - name: ${name}\n    upstream: u\n${fields
    .trim()
    .split('\n')
    .map((line) => `    ${line.trim()}`)
    .join('\n')}\n`;
}

function load(routes: string): DeclaredConfig {
  return parseConfigTexts([{ file: 'loom.yaml', text: UPSTREAM + routes }]);
}

function issuesOf(routes: string): ConfigIssue[] {
  try {
    load(routes);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues;
  }
  assert.fail('expected a ConfigError');
}

function storedRoute(paths: string[], extra: Partial<Route> = {}): Route {
  return normalizeRoute({ name: 'r', hosts: [], paths, methods: [], upstream: 'u', ...extra });
}

describe('path normalisation', () => {
  test('unreserved escapes are decoded', () => {
    assert.equal(normalizePathPattern('/%7Ex/%41%2d%2E%5f'), '/~x/A-._');
    assert.deepEqual(storedRoute(['/%7Ex', '/~x']).paths, ['/~x']);
  });

  test('other escapes are upper-cased', () => {
    assert.equal(normalizePathPattern('/a%2fb/%c3%a9/%3a'), '/a%2Fb/%C3%A9/%3A');
  });

  test('param names are not extended', () => {
    assert.equal(normalizePathPattern('/u/:id%41'), '/u/:id%41');
    assert.equal(normalizePathPattern('/u/:id%2ejson'), '/u/:id.json');
    assert.equal(normalizePathPattern('/u/a::%62'), '/u/a::b');
    assert.equal(normalizePathPattern('/u/:%61'), '/u/:%61');
  });

  test('invalid escapes stay as written', () => {
    assert.equal(normalizePathPattern('/a%zz/%7E'), '/a%zz/%7E');
  });

  test('router keys agree with stored form', () => {
    const patterns = ['/%7Eu/:id%2ejson', '/u/:id%41', '/a%2fb/%c3%a9', '/%41/**rest', '/x::%79'];
    for (const pattern of patterns) {
      const stored = normalizePathPattern(pattern);
      assert.equal(parsePattern('r', stored).key, parsePattern('r', pattern).key, pattern);
      assert.equal(normalizePathPattern(stored), stored, `${pattern} is idempotent`);
    }
  });

  test('prefixes are normalised', () => {
    const stored = storedRoute(['/~u/**'], { stripPrefix: '/%7eu/', addPrefix: '/%61pi%2f' });
    assert.equal(stored.stripPrefix, '/~u');
    assert.equal(stored.addPrefix, '/api%2F');
  });

  test('equivalent files store equal routes', () => {
    const first = load(route('r', `paths: ["/%7Eu/**"]\nstripPrefix: /%7Eu`));
    const second = load(route('r', `paths: ["/~u/**"]\nstripPrefix: /~u`));
    assert.deepEqual(first.routes, second.routes);
    assert.deepEqual(first.warnings, []);
  });
});

describe('path prefix checks', () => {
  test('encoded dot segments are rejected', () => {
    for (const prefix of ['/%2e%2e/admin', '/a/%2E', '/..;x/admin', '/.%3bx', '/a/..']) {
      const issues = issuesOf(route('r', `paths: [/a]\naddPrefix: "${prefix}"`));
      assert.equal(issues.length, 1, prefix);
      assert.equal(issues[0].field, 'addPrefix');
      assert.equal(issues[0].value, prefix);
      assert.match(issues[0].message, /dot segment/);
    }
    const strip = issuesOf(route('r', `paths: [/a]\nstripPrefix: /%2E%2E`));
    assert.equal(strip[0].field, 'stripPrefix');
  });

  test('invalid escape is rejected', () => {
    const issues = issuesOf(route('r', `paths: [/a]\naddPrefix: /a%zz`));
    assert.match(issues[0].message, /invalid path prefix/);
  });

  test('control plane check rejects them', () => {
    const stored = storedRoute(['/a'], { addPrefix: '/%2e%2e/admin' });
    const issues = validateConfig(
      [stored],
      [{ name: 'u', targets: [{ url: 'http://a:1', weight: 1 }] }],
    );
    assert.equal(issues.length, 1);
    assert.match(issues[0].message, /dot segment/);
  });
});

describe('strip prefix warnings', () => {
  function stripWarnings(paths: string, prefix: string): ConfigIssue[] {
    const config = load(route('r', `paths: ${paths}\nstripPrefix: "${prefix}"`));
    return config.warnings.filter((warning) => warning.field === 'stripPrefix');
  }

  test('case mismatch never applies', () => {
    const warnings = stripWarnings('["/t3/**"]', '/T3');
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].line, 8);
    assert.equal(warnings[0].value, '/T3');
    assert.match(warnings[0].message, /never applies.*case-sensitively/);
  });

  test('longer prefix never applies', () => {
    assert.match(stripWarnings('[/a/b]', '/a/b/c')[0].message, /never applies/);
    assert.match(stripWarnings('["/a/:id.json"]', '/a/x.xml')[0].message, /never applies/);
  });

  test('prefix through param is reported', () => {
    const warnings = stripWarnings('["/p6/:id/x"]', '/p6/other');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0].message, /only requests whose :id equals/);
    const mixed = stripWarnings('["/a/:id.json"]', '/a/x.json');
    assert.match(mixed[0].message, /only requests whose :id equals/);
  });

  test('matching prefixes are quiet', () => {
    const cases: [string, string][] = [
      ['["/t3/**"]', '/t3'],
      ['["/%7Eu/**"]', '/%7Eu'],
      ['["/~u/**"]', '/%7eu/'],
      ['["/a/*rest"]', '/a/b/c'],
      ['[/a/b, "/c/:id"]', '/a'],
      ['[/a/]', '/a'],
    ];
    for (const [paths, prefix] of cases) {
      assert.deepEqual(stripWarnings(paths, prefix), [], `${paths} with ${prefix}`);
    }
  });
});

describe('pattern limits', () => {
  test('too many segments is rejected', () => {
    const path = '/s'.repeat(MAX_PATTERN_SEGMENTS + 1);
    const issues = issuesOf(route('deep', `paths: ["${path}/**"]`));
    assert.equal(issues.length, 1);
    assert.match(issues[0].message, /too many segments: 1026, at most 1024/);
    assert.match(String(issues[0].value), /\(2053 characters\)$/);
  });

  test('too long pattern is rejected', () => {
    const path = `/${'a'.repeat(MAX_PATTERN_LENGTH)}`;
    const issues = issuesOf(route('long', `paths: ["${path}"]\nstripPrefix: "${path}"`));
    assert.deepEqual(
      issues.map((issue) => issue.field),
      ['paths[0]', 'stripPrefix'],
    );
    assert.match(issues[0].message, /too long: 8193 characters, at most 8192/);
  });

  test('pattern at the limits passes', () => {
    const path = '/s'.repeat(MAX_PATTERN_SEGMENTS);
    assert.equal(load(route('deep', `paths: ["${path}"]`)).routes.length, 1);
  });

  test('deep pattern does not overflow', () => {
    const deep = '/s'.repeat(6000);
    const issues = issuesOf(route('deep', `paths: ["${deep}/**"]`) + route('x', 'paths: [/x]'));
    assert.equal(issues.length, 1);
    // Called directly, the trie skips paths over the limit instead of recursing through them.
    const routes = [storedRoute([`${deep}/**`]), storedRoute([`/${'s/'.repeat(6000)}:id`])];
    assert.deepEqual(findShadowedRoutes(routes), []);
  });
});

describe('target URL normalisation', () => {
  test('equivalent spellings store one URL', () => {
    const spellings = [
      'http://LocalHost:17411',
      'HTTP://localhost:17411',
      'http://localhost:17411',
      'http://localhost:17411/',
      'http://localhost:17411//',
    ];
    for (const spelling of spellings) {
      assert.equal(normalizeTargetUrl(spelling), 'http://localhost:17411', spelling);
    }
  });

  test('default ports are dropped', () => {
    assert.equal(normalizeTargetUrl('http://localhost:80'), 'http://localhost');
    assert.equal(normalizeTargetUrl('http://localhost'), 'http://localhost');
    assert.equal(normalizeTargetUrl('http://localhost:/'), 'http://localhost');
    assert.equal(normalizeTargetUrl('https://api.example:443/v1'), 'https://api.example/v1');
    assert.equal(normalizeTargetUrl('https://api.example:80'), 'https://api.example:80');
    assert.equal(normalizeTargetUrl('http://api.example:443'), 'http://api.example:443');
  });

  test('IPv6 keeps its brackets', () => {
    assert.equal(normalizeTargetUrl('http://[::1]:80/'), 'http://[::1]');
    assert.equal(normalizeTargetUrl('http://[::1]:9001'), 'http://[::1]:9001');
  });

  test('non-root paths stay as written', () => {
    assert.equal(normalizeTargetUrl('http://A:9001/Api/'), 'http://a:9001/Api/');
    assert.equal(normalizeTargetUrl('http://a:9001/v1/%7Ex'), 'http://a:9001/v1/%7Ex');
  });

  test('invalid URLs stay as written', () => {
    for (const raw of ['ftp://Host/', 'http://u:p@Host/', 'http://Host/?q', 'not a url']) {
      assert.equal(normalizeTargetUrl(raw), raw);
    }
  });

  test('proxy sees the same target', () => {
    const spellings = [
      'http://LocalHost:80/',
      'http://localhost',
      'https://H:443/a/',
      'http://[::1]/',
    ];
    for (const spelling of spellings) {
      assert.deepEqual(parseTargetUrl(normalizeTargetUrl(spelling)), parseTargetUrl(spelling));
    }
  });

  test('equivalent files store equal upstreams', () => {
    const text = (url: string) => `upstreams:\n  - name: u\n    targets: [{url: "${url}"}]\n`;
    const first = parseConfigTexts([{ file: 'a.yaml', text: text('http://LocalHost:80/') }]);
    const second = parseConfigTexts([{ file: 'b.yaml', text: text('http://localhost') }]);
    assert.deepEqual(first.upstreams, second.upstreams);
    assert.equal(first.upstreams[0].targets[0].url, 'http://localhost');
  });
});
