import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { z } from 'zod';

import { API_VERSION, ConfigFileSchema } from './schema.js';

/** Path of the committed JSON Schema, relative to the repository root. */
export const JSON_SCHEMA_PATH = 'config/loom.schema.json';

/**
 * Returns the JSON Schema (draft 7, which most editors read) of a Loom config
 * file, generated
 * from the zod schema that validates it. It describes the input form: fields
 * with defaults are optional. Checks that need the whole configuration, such
 * as unknown upstreams, conflicting routes or URL syntax, are only in
 * `loomctl validate`.
 */
export function configJsonSchema(): Record<string, unknown> {
  const { $schema, ...schema } = z.toJSONSchema(ConfigFileSchema, {
    io: 'input',
    target: 'draft-7',
    unrepresentable: 'any',
  });
  return {
    $schema,
    title: `Loom configuration (${API_VERSION})`,
    description:
      'Routes and upstreams applied with "loomctl apply -f FILE". Generated from config/schema.ts.',
    ...schema,
  };
}

/** Returns the JSON Schema as the text that `loomctl schema` prints and the repository commits. */
export function formatConfigJsonSchema(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}

// `tsx config/json-schema.ts` (part of `npm run generate`) rewrites the committed file,
// formatted by Prettier like every other file of the repository.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const { format } = await import('prettier');
  const text = await format(formatConfigJsonSchema(), { parser: 'json' });
  writeFileSync(join(root, JSON_SCHEMA_PATH), text);
}
