import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { parse } from 'yaml';

import { ConfigError } from '../../common/errors.js';
import {
  configJsonSchema,
  formatConfigJsonSchema,
  JSON_SCHEMA_PATH,
} from '../../config/json-schema.js';
import { MAX_PATTERN_LENGTH, MAX_PATTERN_SEGMENTS } from '../../config/limits.js';
import { parseConfigTexts } from '../../config/load.js';
import { ConfigFileSchema } from '../../config/schema.js';
import { ROOT } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';

interface SchemaNode {
  type?: string;
  maxLength?: number;
  pattern?: string;
  properties?: Record<string, SchemaNode>;
  additionalProperties?: SchemaNode | boolean;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
}

/** Returns the path of every object node with named fields that accepts other fields too. */
function openObjects(node: SchemaNode, path = '#'): string[] {
  const open: string[] = [];
  if (node.properties && node.additionalProperties !== false) open.push(path);
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    open.push(...openObjects(child, `${path}/properties/${key}`));
  }
  if (typeof node.additionalProperties === 'object') {
    open.push(...openObjects(node.additionalProperties, `${path}/additionalProperties`));
  }
  if (node.items) open.push(...openObjects(node.items, `${path}/items`));
  node.anyOf?.forEach((option, index) =>
    open.push(...openObjects(option, `${path}/anyOf/${index}`)),
  );
  return open;
}

/** Counts the object nodes with named fields, so that a walk that finds none fails. */
function countObjects(node: SchemaNode): number {
  const children = [
    ...Object.values(node.properties ?? {}),
    ...(typeof node.additionalProperties === 'object' ? [node.additionalProperties] : []),
    ...(node.items ? [node.items] : []),
    ...(node.anyOf ?? []),
  ];
  return (node.properties ? 1 : 0) + children.reduce((sum, child) => sum + countObjects(child), 0);
}

describe('config JSON Schema', () => {
  test('committed schema is current', () => {
    const committed = JSON.parse(readFileSync(join(ROOT, JSON_SCHEMA_PATH), 'utf8')) as unknown;
    assert.deepEqual(
      committed,
      configJsonSchema(),
      `${JSON_SCHEMA_PATH} is stale; run "npm run generate"`,
    );
  });

  test('schema command prints committed bytes', async () => {
    const committed = readFileSync(join(ROOT, JSON_SCHEMA_PATH), 'utf8');
    assert.equal(formatConfigJsonSchema(), committed);
    const { format } = await import('prettier');
    const options = { parser: 'json', printWidth: 100 };
    assert.equal(await format(committed, options), committed, 'Prettier keeps the file as is');
  });

  test('schema lists the top-level fields', () => {
    const schema = configJsonSchema() as {
      properties: Record<string, unknown>;
      additionalProperties: boolean;
    };
    assert.deepEqual(Object.keys(schema.properties).sort(), [
      '$schema',
      'apiVersion',
      'epoch',
      'routes',
      'upstreams',
      'version',
    ]);
    assert.equal(schema.additionalProperties, false);
  });

  test('printed schema rejects unknown fields', async () => {
    const result = await loomctl('127.0.0.1:1', ['schema']);
    assert.equal(result.code, 0, result.stderr);
    const printed = JSON.parse(result.stdout) as SchemaNode;
    assert.deepEqual(JSON.parse(result.stdout), configJsonSchema());
    assert.deepEqual(openObjects(printed), []);
    // Document, upstream, target, healthCheck, passiveHealth, tls, route, timeouts, and the
    // request and response header actions with the items of their set lists.
    assert.equal(countObjects(printed), 12);
    const routeFields = printed.properties?.routes?.items?.properties ?? {};
    assert.ok('paths' in routeFields);
    assert.ok(!('pathz' in routeFields));
  });

  test('printed schema carries the limits', async () => {
    const result = await loomctl('127.0.0.1:1', ['schema']);
    assert.equal(result.code, 0, result.stderr);
    const route = (JSON.parse(result.stdout) as SchemaNode).properties?.routes?.items;
    const fields = route?.properties ?? {};
    for (const node of [fields.paths?.items, fields.stripPrefix, fields.addPrefix]) {
      assert.equal(node?.maxLength, MAX_PATTERN_LENGTH);
      // Editors compile JSON Schema patterns as ECMAScript regular expressions, often with "u".
      const pattern = new RegExp(node?.pattern ?? '', 'u');
      assert.equal(pattern.test('/s'.repeat(MAX_PATTERN_SEGMENTS)), true);
      assert.equal(pattern.test('/s'.repeat(MAX_PATTERN_SEGMENTS + 1)), false);
    }
    const host = new RegExp(fields.hosts?.items?.pattern ?? '', 'u');
    const longest = `${'a'.repeat(63)}.`.repeat(3) + 'a'.repeat(61);
    assert.equal(longest.length, 253);
    for (const value of [longest, `*.${longest}`, `${longest}.`, '[fe80::1%eth0]']) {
      assert.equal(host.test(value), true, value);
    }
    assert.equal(host.test(`a${longest}`), false);
    const hostRewrite = new RegExp(fields.hostRewrite?.pattern ?? '', 'u');
    assert.equal(hostRewrite.test(`${longest}:8080`), true);
    assert.equal(hostRewrite.test(`a${longest}`), false);
  });

  test('schema and validator agree on limits', () => {
    const issues = (route: Record<string, unknown>) => {
      try {
        parseConfigTexts([
          { file: 'limits.yaml', text: JSON.stringify({ routes: [{ upstream: 'u', ...route }] }) },
        ]);
        return [];
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        return error.issues.filter((issue) => issue.field !== 'upstream');
      }
    };
    const atLimit = '/s'.repeat(MAX_PATTERN_SEGMENTS);
    assert.deepEqual(issues({ name: 'a', paths: [atLimit], stripPrefix: atLimit }), []);
    const over = issues({
      name: 'b',
      paths: [`/${'a'.repeat(MAX_PATTERN_LENGTH)}`],
      stripPrefix: `${atLimit}/s`,
      hosts: [`${'a'.repeat(254)}.`],
    });
    assert.deepEqual(
      over.map((issue) => [issue.field, issue.message]),
      [
        ['hosts[0]', 'invalid host: the name has 254 characters, at most 253 are allowed'],
        [
          'paths[0]',
          'invalid path pattern: too long: 8193 characters, at most 8192 are allowed because the ' +
            'proxy rejects longer request paths',
        ],
        [
          'stripPrefix',
          'invalid path prefix: too many segments: 1025, at most 1024 are allowed; shorten the ' +
            'path or end it with a catch-all such as /**',
        ],
      ],
    );
  });

  test('example config passes the zod schema', () => {
    const text = readFileSync(join(ROOT, 'examples', 'quickstart.yaml'), 'utf8');
    assert.equal(ConfigFileSchema.safeParse(parse(text)).success, true);
  });
});
