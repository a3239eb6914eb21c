import { existsSync } from 'node:fs';

import type { Command } from 'commander';

/** Help of `-f`, shared by the commands that read config files. */
const FILENAME_FLAGS = '-f, --filename <file...>';

/**
 * Adds `-f, --filename` to a command that reads config files. The flag is checked by
 * `configFiles` instead of by commander, so that a file given without `-f` gets its own message.
 */
export function addFilenameOption(command: Command): Command {
  return command
    .option(FILENAME_FLAGS, 'config files (YAML or JSON) or folders, merged; "-" is stdin')
    .allowExcessArguments(true);
}

/**
 * Returns the files of `-f`. Raises a commander usage error (exit 2) for an argument given
 * without `-f`: one that names an existing file or looks like a path gets the fix, such as
 * `loomctl apply -f examples/quickstart.yaml`.
 */
export function configFiles(command: Command, files: string[] | undefined): string[] {
  const stray = command.args;
  const path = stray.find(looksLikePath);
  if (path !== undefined) {
    command.error(
      `error: unexpected argument ${JSON.stringify(path)}; files are given with -f, such as: ` +
        `loomctl ${command.name()} -f ${path}`,
      { code: 'commander.excessArguments' },
    );
  }
  if (stray.length > 0) {
    command.error(
      `error: too many arguments for '${command.name()}'. Expected 0 arguments but got ` +
        `${stray.length}.`,
      { code: 'commander.excessArguments' },
    );
  }
  if (files === undefined) {
    command.error(`error: required option '${FILENAME_FLAGS}' not specified`, {
      code: 'commander.missingMandatoryOptionValue',
    });
  }
  return files;
}

function looksLikePath(argument: string): boolean {
  return existsSync(argument) || /[/\\]|\.(?:ya?ml|json)$/i.test(argument);
}
