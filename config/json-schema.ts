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

/**
 * Returns the JSON Schema as the text that `loomctl schema` prints and the repository
 * commits, byte for byte.
 */
export function formatConfigJsonSchema(): string {
  return `${formatJson(configJsonSchema(), '', '', '')}\n`;
}

/** Line width of the repository's Prettier configuration (`.prettierrc`). */
const PRINT_WIDTH = 100;

/**
 * Formats JSON as Prettier 3.10 formats the output of `JSON.stringify(value, null, 2)`.
 * The committed file then passes `prettier --check`, and loomctl needs no Prettier at run
 * time. Objects get one key per line. An array of scalars stays on one line when `head`,
 * the array and `tail` fit in the print width. `head` is the text before the value on its
 * line (`"key": `), and `tail` the text after it (`,` or nothing).
 */
function formatJson(value: unknown, indent: string, head: string, tail: string): string {
  if (Array.isArray(value)) {
    if (value.length === 0) return `${head}[]${tail}`;
    const scalars = value.every((item) => item === null || typeof item !== 'object');
    const flat = `${head}[${value.map((item) => JSON.stringify(item)).join(', ')}]${tail}`;
    if (scalars && flat.length <= PRINT_WIDTH) return flat;
    const inner = `${indent}  `;
    const items = value.map((item, index) =>
      formatJson(item, inner, inner, index < value.length - 1 ? ',' : ''),
    );
    return `${head}[\n${items.join('\n')}\n${indent}]${tail}`;
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, field]) => field !== undefined);
    if (entries.length === 0) return `${head}{}${tail}`;
    const inner = `${indent}  `;
    const fields = entries.map(([key, field], index) =>
      formatJson(
        field,
        inner,
        `${inner}${JSON.stringify(key)}: `,
        index < entries.length - 1 ? ',' : '',
      ),
    );
    return `${head}{\n${fields.join('\n')}\n${indent}}${tail}`;
  }
  return `${head}${JSON.stringify(value)}${tail}`;
}

// `tsx config/json-schema.ts` (part of `npm run generate`) rewrites the committed file.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  writeFileSync(join(root, JSON_SCHEMA_PATH), formatConfigJsonSchema());
}
