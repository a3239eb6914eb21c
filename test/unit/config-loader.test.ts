import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ConfigError, formatConfigIssue, type ConfigIssue } from '../../common/errors.js';
import { findJsonSyntaxError } from '../../config/json-syntax.js';
import { loadConfigFiles, parseConfigTexts } from '../../config/load.js';

const UPSTREAM = 'upstreams:\n  - name: u\n    targets: [{url: "http://127.0.0.1:9001"}]\n';

function issuesOf(text: string): ConfigIssue[] {
  try {
    parseConfigTexts([{ file: 'loom.yaml', text }]);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues;
  }
  assert.fail('expected a ConfigError');
}

async function loadIssues(files: string[]): Promise<ConfigIssue[]> {
  const error = await loadConfigFiles(files).then(
    () => assert.fail('expected a ConfigError'),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof ConfigError, String(error));
  return error.issues;
}

describe('config file reading', () => {
  test('documents are separate configs', () => {
    const text = `${UPSTREAM}---\n# routes\nroutes:\n  - {name: a, paths: [/a], upstream: u}\n---\n---\n`;
    const config = parseConfigTexts([{ file: 'loom.yaml', text }]);
    assert.deepEqual(
      config.routes.map((route) => route.name),
      ['a'],
    );
    assert.equal(config.upstreams.length, 1);
  });

  test('issues in a later document', () => {
    const text = `${UPSTREAM}---\nroutes:\n  - name: a\n    paths: [/a]\n    upstream: u\n    retries: 9\n`;
    const issues = issuesOf(text);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].line, 9);
    assert.equal(issues[0].field, 'retries');
  });

  test('duplicates across documents', () => {
    const issues = issuesOf(`${UPSTREAM}---\n${UPSTREAM}`);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].line, 6);
    assert.match(issues[0].message, /duplicate upstream name/);
  });

  test('syntax error has line and column', () => {
    const issues = issuesOf(`${UPSTREAM}routes:\n  - name: r\n    paths: [/users/{id}]\n`);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].line, 6);
    assert.equal(issues[0].column, 20);
    assert.match(issues[0].message, /quote a value that contains "\{"/);
    assert.match(formatConfigIssue(issues[0]), /^loom\.yaml:6:20: \(syntax\): invalid YAML/);
  });

  test('null lists are empty', () => {
    const sources = [{ file: 'loom.yaml', text: 'routes:\nupstreams:\n' }];
    const config = parseConfigTexts(sources);
    assert.deepEqual(config, { routes: [], upstreams: [], warnings: [], sources });
  });

  test('JSON file is parsed strictly', () => {
    const text = '{"routes": [\n  {"name": "j", "paths": ["/j"], "upstream": "u",}\n]}\n';
    let issues: ConfigIssue[] = [];
    try {
      parseConfigTexts([{ file: 'bad.json', text }]);
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      issues = error.issues;
    }
    assert.equal(issues.length, 1);
    assert.equal(issues[0].line, 2);
    assert.equal(issues[0].column, 50);
    assert.equal(issues[0].field, '(syntax)');
    assert.match(issues[0].message, /^invalid JSON: Expected double-quoted property name in JSON;/);
    assert.match(issues[0].message, /name it \.yaml to read it as YAML/);
  });

  test('same text as YAML is accepted', () => {
    const text = `${UPSTREAM}routes: [{"name": "j", "paths": ["/j"], "upstream": "u",}]\n`;
    assert.equal(parseConfigTexts([{ file: 'ok.yaml', text }]).routes.length, 1);
  });

  test('JSON file with byte order mark', () => {
    const text = '\uFEFF{"upstreams": [{"name": "u", "targets": [{"url": "http://a:1"}]}]}';
    assert.equal(parseConfigTexts([{ file: 'bom.json', text }]).upstreams.length, 1);
  });

  test('duplicate across files names both', () => {
    let issues: ConfigIssue[] = [];
    try {
      parseConfigTexts([
        { file: 'a.yaml', text: `${UPSTREAM}routes:\n  - {name: dup, paths: [/a], upstream: u}\n` },
        { file: 'b.yaml', text: 'routes:\n  - {name: dup, paths: [/b], upstream: u}\n' },
      ]);
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      issues = error.issues;
    }
    assert.equal(issues.length, 1);
    assert.equal(issues[0].file, 'b.yaml');
    assert.equal(issues[0].line, 2);
    assert.match(issues[0].message, /\(the first route of that name is at a\.yaml:5\)$/);
  });

  test('brace param gets a hint', () => {
    const issues = issuesOf(`${UPSTREAM}routes:\n  - {name: r, paths: ["/u/{id}"], upstream: u}\n`);
    assert.match(issues[0].message, /write a param as :name, not \{name\}$/);
  });
});

/** Cases of invalid .json text, each with the line and column of its first error. */
const JSON_SYNTAX_CASES: { name: string; text: string; line: number; column: number }[] = [
  {
    name: 'trailing comma in list',
    text: '{\n  "routes": [\n    {"name": "x", "paths": ["/x"], "upstream": "users"},\n  ]\n}\n',
    line: 4,
    column: 3,
  },
  { name: 'trailing comma in mapping', text: '{\n  "routes": [],\n}\n', line: 3, column: 1 },
  { name: 'comment line', text: '// routes\n{"routes": []}\n', line: 1, column: 1 },
  { name: 'comment after value', text: '{\n  "routes": [] // none\n}\n', line: 2, column: 16 },
  {
    name: 'string ended by line break',
    text: '{"routes": [\n  {"name": "x\n]}\n',
    line: 2,
    column: 14,
  },
  { name: 'string ended by end of file', text: '{"routes": [{"name": "x', line: 1, column: 24 },
  { name: 'missing colon', text: '{\n  "routes" []\n}\n', line: 2, column: 12 },
  { name: 'text after the value', text: '{"routes": []}\nx\n', line: 2, column: 1 },
  { name: 'unclosed list', text: '{"routes": [\n\n', line: 1, column: 13 },
  { name: 'bad literal', text: '{"routes": nul}', line: 1, column: 15 },
  { name: 'leading zero', text: '{"n": 01}', line: 1, column: 8 },
  { name: 'single quotes', text: "{'routes': []}", line: 1, column: 2 },
  { name: 'empty file', text: '', line: 1, column: 1 },
  { name: 'only line breaks', text: '\n\n', line: 1, column: 1 },
  { name: 'byte order mark', text: '\uFEFF{\n "a" 1}', line: 2, column: 6 },
];

describe('JSON syntax error positions', () => {
  function jsonIssues(text: string): ConfigIssue[] {
    try {
      parseConfigTexts([{ file: 'c.json', text }]);
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return error.issues;
    }
    assert.fail('expected a ConfigError');
  }

  for (const { name, text, line, column } of JSON_SYNTAX_CASES) {
    test(name, () => {
      const issues = jsonIssues(text);
      assert.equal(issues.length, 1, issues.map(formatConfigIssue).join('\n'));
      assert.equal(`${issues[0].line}:${issues[0].column}`, `${line}:${column}`);
      assert.equal(issues[0].field, '(syntax)');
      assert.match(issues[0].message, /^invalid JSON: /);
      assert.doesNotMatch(formatConfigIssue(issues[0]), /[\n\r]/);
    });
  }

  test('source excerpt stays on one line', () => {
    // Node.js 20 quotes the text around the error in "Unexpected token" messages.
    const text = '{"routes": [\n\t1,\r\n  ]\n}\n';
    const [issue] = jsonIssues(text);
    assert.equal(`${issue.line}:${issue.column}`, '3:3');
    assert.doesNotMatch(issue.message, /[\n\r\t]/);
    if (issue.message.includes('not valid JSON')) assert.match(issue.message, /\\t1,\\r\\n/);
  });
});

describe('JSON syntax scanner', () => {
  test('valid texts have no error', () => {
    const texts = [
      '{"a": [1, -2.5e+3, 0, 0.0, 1E-2, true, false, null, "\\u00e9\\n\\"\\/"], "b": {}}',
      ' [ ] ',
      '"\uD800"',
      `${'['.repeat(100_000)}${']'.repeat(100_000)}`,
    ];
    for (const text of texts) {
      JSON.parse(text);
      assert.equal(findJsonSyntaxError(text), undefined, text.slice(0, 40));
    }
  });

  test('agrees with JSON.parse on edits', () => {
    const valid =
      '{"routes": [{"name": "r-1", "paths": ["/a\\tb"], "n": -10.5e2, "x": [true, null]}]}';
    const inserts = ['', ',', '}', ']', '"', ':', '/', ' ', '0', '-', '.', 'e', '\\', '\n', 't'];
    let checked = 0;
    for (let at = 0; at <= valid.length; at++) {
      for (const insert of inserts) {
        for (const removed of [0, 1]) {
          const text = valid.slice(0, at) + insert + valid.slice(at + removed);
          let parses = true;
          try {
            JSON.parse(text);
          } catch {
            parses = false;
          }
          const offset = findJsonSyntaxError(text);
          assert.equal(offset === undefined, parses, JSON.stringify(text));
          if (offset !== undefined) assert.ok(offset >= 0 && offset <= text.length);
          checked++;
        }
      }
    }
    assert.ok(checked > 2000);
  });
});

describe('host and target messages', () => {
  function routeIssues(hosts: string): ConfigIssue[] {
    return issuesOf(
      `${UPSTREAM}routes:\n  - {name: r, paths: [/a], upstream: u, hosts: ${hosts}}\n`,
    );
  }

  test('star host suggests omitting hosts', () => {
    const issues = routeIssues('["*"]');
    assert.equal(issues.length, 1);
    assert.match(issues[0].message, /omit hosts .* to match any host/);
  });

  test('wildcard over IPv4 is rejected', () => {
    const issues = routeIssues('["*.0.0.1", "*.10.in-addr.arpa", "*.1.example"]');
    assert.equal(issues.length, 1);
    assert.equal(issues[0].field, 'hosts[0]');
    assert.match(issues[0].message, /this one would match IPv4 addresses/);
  });

  test('unicode host shows punycode', () => {
    const issues = routeIssues('["bücher.example", "*.Bücher.example"]');
    assert.match(issues[0].message, /ASCII form: "xn--bcher-kva\.example"$/);
    assert.match(issues[1].message, /ASCII form: "\*\.xn--bcher-kva\.example"$/);
  });

  test('target password is redacted', () => {
    for (const url of ['http://admin:s3cret@127.0.0.1:9', 'http://admin:s3cret@bad host:x']) {
      const text = `upstreams:\n  - name: u\n    targets: [{url: "${url}"}]\n`;
      const issues = issuesOf(text);
      assert.equal(issues.length, 1, url);
      assert.doesNotMatch(formatConfigIssue(issues[0]), /s3cret/);
      assert.match(String(issues[0].value), /^http:\/\/admin:\*\*\*@/);
    }
  });

  test('target secrets are redacted', () => {
    const cases = [
      ['https://s3cret@127.0.0.1:9', 'https://***@127.0.0.1:9'],
      ['http://admin%3As3cret@127.0.0.1:9', 'http://***@127.0.0.1:9'],
      ['http://admin:s3cret@x@127.0.0.1:9', 'http://admin:***@127.0.0.1:9'],
      ['http://127.0.0.1:9/?key=s3cret', 'http://127.0.0.1:9/?***'],
      ['http://127.0.0.1:9/#s3cret', 'http://127.0.0.1:9/#***'],
    ];
    for (const [url, shown] of cases) {
      const text = `upstreams:\n  - name: u\n    targets: [{url: "${url}"}]\n`;
      const issues = issuesOf(text);
      assert.equal(issues.length, 1, url);
      assert.doesNotMatch(formatConfigIssue(issues[0]), /s3cret/);
      assert.equal(issues[0].value, shown);
    }
  });
});

describe('zero weight warning', () => {
  const zero = (weights: number[]) =>
    'upstreams:\n  - name: zero\n    targets:\n' +
    weights
      .map(
        (weight, index) => `      - {url: "http://127.0.0.1:${9001 + index}", weight: ${weight}}\n`,
      )
      .join('') +
    'routes:\n  - {name: z, paths: [/z], upstream: zero}\n';

  test('all targets at weight 0 warns', () => {
    const config = parseConfigTexts([{ file: 'zero.yaml', text: zero([0, 0]) }]);
    assert.equal(config.warnings.length, 1);
    const [warning] = config.warnings;
    assert.equal(warning.kind, 'upstream');
    assert.equal(warning.name, 'zero');
    assert.equal(warning.field, 'targets');
    assert.equal(warning.line, 3);
    assert.match(warning.message, /every target has weight 0/);
    assert.match(warning.message, /502 upstream_unavailable .* route\(s\) "z"/);
    assert.match(warning.message, /give at least one target a weight above 0/);
  });

  test('one target in rotation is quiet', () => {
    const config = parseConfigTexts([{ file: 'zero.yaml', text: zero([0, 1]) }]);
    assert.deepEqual(config.warnings, []);
  });
});

describe('unknown method warning', () => {
  const withMethods = (methods: string) =>
    'upstreams:\n  - {name: u, targets: [{url: "http://127.0.0.1:9001"}]}\n' +
    `routes:\n  - name: m\n    paths: [/m]\n    upstream: u\n    methods: ${methods}\n`;

  test('misspelled method warns', () => {
    const config = parseConfigTexts([{ file: 'm.yaml', text: withMethods('[GETT, get]') }]);
    assert.equal(config.warnings.length, 1);
    const [warning] = config.warnings;
    assert.equal(warning.kind, 'route');
    assert.equal(warning.name, 'm');
    assert.equal(warning.field, 'methods[0]');
    assert.equal(warning.value, 'GETT');
    assert.equal(warning.line, 7);
    assert.match(warning.message, /rejects requests with this method \(400\) before routing/);
    assert.match(warning.message, /did you mean GET\?/);
  });

  test('registered methods are quiet', () => {
    const text = withMethods('[PROPFIND, PATCH, QUERY, purge]');
    assert.deepEqual(parseConfigTexts([{ file: 'm.yaml', text }]).warnings, []);
  });

  test('far-off method gets example', () => {
    const config = parseConfigTexts([{ file: 'm.yaml', text: withMethods('[FROBNICATE]') }]);
    assert.match(config.warnings[0]?.message ?? '', /use a method such as GET or POST$/);
  });
});

describe('config paths', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-loader-'));
    mkdirSync(join(dir, 'conf', 'nested'), { recursive: true });
    mkdirSync(join(dir, 'none'));
    writeFileSync(join(dir, 'conf', 'a-upstreams.yaml'), UPSTREAM);
    writeFileSync(
      join(dir, 'conf', 'b-routes.json'),
      JSON.stringify({ routes: [{ name: 'r', paths: ['/r'], upstream: 'u' }] }),
    );
    writeFileSync(join(dir, 'conf', 'notes.txt'), 'not a config');
    writeFileSync(join(dir, 'conf', 'nested', 'c.yaml'), 'routes: nonsense\n');
    writeFileSync(join(dir, 'none', 'readme.md'), '# nothing\n');
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('directory loads its config files', async () => {
    const config = await loadConfigFiles([join(dir, 'conf')]);
    assert.equal(config.routes.length, 1);
    assert.equal(config.upstreams.length, 1);
  });

  test('directory without configs is named', async () => {
    const issues = await loadIssues([join(dir, 'none')]);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].file, join(dir, 'none'));
    assert.match(issues[0].message, /directory contains no \.yaml, \.yml or \.json files/);
  });

  test('same file is read once', async () => {
    const file = join(dir, 'conf', 'a-upstreams.yaml');
    const config = await loadConfigFiles([
      file,
      join(dir, 'conf', '..', 'conf', 'a-upstreams.yaml'),
      join(dir, 'conf'),
    ]);
    assert.equal(config.upstreams.length, 1);
  });

  test('missing file is named', async () => {
    const issues = await loadIssues([join(dir, 'missing.yaml')]);
    assert.match(issues[0].message, /cannot read config: file not found$/);
  });

  test('other extension is suggested', async () => {
    const issues = await loadIssues([join(dir, 'conf', 'a-upstreams.yml')]);
    const expected = join(dir, 'conf', 'a-upstreams.yaml');
    assert.equal(
      issues[0].message,
      `cannot read config: file not found; did you mean ${expected}?`,
    );
  });
});
