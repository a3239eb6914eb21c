import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { parse } from 'yaml';

import { configJsonSchema, JSON_SCHEMA_PATH } from '../../config/json-schema.js';
import { ConfigFileSchema } from '../../config/schema.js';
import { ROOT } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';

interface SchemaNode {
  type?: string;
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

  test('example config passes the zod schema', () => {
    const text = readFileSync(join(ROOT, 'examples', 'quickstart.yaml'), 'utf8');
    assert.equal(ConfigFileSchema.safeParse(parse(text)).success, true);
  });
});
