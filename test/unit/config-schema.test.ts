import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { parse } from 'yaml';

import { configJsonSchema, JSON_SCHEMA_PATH } from '../../config/json-schema.js';
import { ConfigFileSchema } from '../../config/schema.js';
import { ROOT } from '../../scripts/processes.js';

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

  test('example config passes the zod schema', () => {
    const text = readFileSync(join(ROOT, 'examples', 'quickstart.yaml'), 'utf8');
    assert.equal(ConfigFileSchema.safeParse(parse(text)).success, true);
  });
});
