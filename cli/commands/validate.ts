import type { Command } from 'commander';

import { ConfigError } from '../../common/errors.js';
import { loadConfigFiles } from '../../config/load.js';
import { EXIT_HELP } from '../context.js';
import { out, plural, printWarnings } from '../output.js';

/** Registers `loomctl validate`. */
export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description(
      'Check config files offline, with the checks apply runs before sending anything; ' +
        'needs no control plane.',
    )
    .requiredOption('-f, --filename <file...>', 'YAML or JSON config file(s), merged')
    .addHelpText(
      'after',
      '\nErrors go to standard error with file, line, resource, field and value, all in one\n' +
        'run. Warnings (such as routes that can never match) are printed first and do not\n' +
        'fail the check.\n' +
        'The control plane still checks the result against the stored configuration on apply.\n' +
        EXIT_HELP,
    )
    .action(async (options: { filename: string[] }) => {
      const declared = await loadConfigFiles(options.filename, { partial: true }).catch(
        (error: unknown) => {
          // Warnings go first so that the errors end the output, as on success the summary does.
          if (error instanceof ConfigError) printWarnings(error.warnings);
          throw error;
        },
      );
      printWarnings(declared.warnings);
      const warnings = declared.warnings.length;
      out(
        `configuration is valid: ${plural(declared.routes.length, 'route')}, ` +
          plural(declared.upstreams.length, 'upstream') +
          (warnings > 0 ? `, ${plural(warnings, 'warning')}` : ''),
      );
    });
}
