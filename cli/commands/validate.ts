import type { Command } from 'commander';

import { ConfigError } from '../../common/errors.js';
import { loadConfigFiles } from '../../config/load.js';
import { EXIT, ExitError, exitHelp } from '../context.js';
import { addFilenameOption, configFiles } from '../file-option.js';
import { offlineHeader, out, plural, printOfflineIssues, printWarnings } from '../output.js';

/** Registers `loomctl validate`. */
export function registerValidate(program: Command): void {
  const validate = program
    .command('validate')
    .description(
      'Check config files offline, with the checks apply runs before sending anything; ' +
        'needs no control plane.',
    );
  addFilenameOption(validate)
    .addHelpText(
      'after',
      '\nErrors go to standard error with file, line, resource, field and value, all in\n' +
        'one run. Warnings (such as routes that can never match) are printed first and do\n' +
        'not fail the check. The control plane still checks the result against the stored\n' +
        'configuration on apply.\n' +
        exitHelp('the configuration is valid', 'invalid configuration, or a file cannot be read'),
    )
    .action(async (options: { filename?: string[] }, command: Command) => {
      const files = configFiles(command, options.filename);
      const declared = await loadConfigFiles(files, { partial: true }).catch((error: unknown) => {
        if (!(error instanceof ConfigError)) throw error;
        // Warnings go first so that the errors end the output, as on success the summary does.
        printWarnings(error.warnings);
        // validate never connects or writes, so the header says what it checked instead.
        printOfflineIssues(offlineHeader(error), error.issues);
        throw new ExitError(EXIT.error, '');
      });
      printWarnings(declared.warnings);
      const warnings = declared.warnings.length;
      out(
        `configuration is valid: ${plural(declared.routes.length, 'route')}, ` +
          plural(declared.upstreams.length, 'upstream') +
          (warnings > 0 ? `, ${plural(warnings, 'warning')}` : ''),
      );
    });
}
