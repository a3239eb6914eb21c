import type { Command } from 'commander';

import { formatConfigJsonSchema, JSON_SCHEMA_PATH } from '../../config/json-schema.js';
import { exitHelp } from '../context.js';

/** Registers `loomctl schema`. */
export function registerSchema(program: Command): void {
  program
    .command('schema')
    .description('Print the JSON Schema of config files, for editors and other tools.')
    .addHelpText(
      'after',
      `\nThe same schema is committed as ${JSON_SCHEMA_PATH}. Saved next to the\n` +
        'config files (loomctl schema > loom.schema.json), it lets editors that use\n' +
        'yaml-language-server complete and check fields of a YAML file whose first\n' +
        'line is\n' +
        '  # yaml-language-server: $schema=./loom.schema.json\n' +
        exitHelp('success'),
    )
    .action(() => {
      process.stdout.write(formatConfigJsonSchema());
    });
}
