import { existsSync } from 'node:fs';

import { Option, type Command } from 'commander';

/** Help of `-f`, shared by the commands that read config files. */
const FILENAME_FLAGS = '-f, --filename <file...>';

/** Flags that other tools use for config files, which loomctl spells `-f` or `--filename`. */
const FILENAME_LOOKALIKES = ['--file', '--files'];

/**
 * Adds `-f, --filename` to a command that reads config files. The flag is checked by
 * `configFiles` instead of by commander, so that a file given without `-f` gets its own message.
 */
export function addFilenameOption(command: Command): Command {
  command.option(FILENAME_FLAGS, 'config files (YAML or JSON) or folders, merged; "-" is stdin');
  return addFilenameLookalikes(command).allowExcessArguments(true);
}

/**
 * Adds the fix to commander's error for `-f` without a file, which names no file or example.
 * Other errors pass unchanged.
 */
export function hintMissingFilename(command: Command): Command {
  const missing = `option '${FILENAME_FLAGS}' argument missing`;
  return command.configureOutput({
    outputError: (text, write) => {
      if (!text.includes(missing)) {
        write(text);
        return;
      }
      write(
        text.replace(
          missing,
          `${missing}; name config files or folders after -f, such as: ` +
            `loomctl ${command.name()} -f loom.yaml (or -f - for standard input)`,
        ),
      );
    },
  });
}

/**
 * Adds `--file` and `--files` as hidden options, so that `rejectFilenameLookalikes` can name
 * `-f` instead of commander's bare "unknown option".
 */
export function addFilenameLookalikes(command: Command): Command {
  for (const flag of FILENAME_LOOKALIKES) {
    command.addOption(new Option(`${flag} <file>`).hideHelp());
  }
  return command;
}

/** Raises a commander usage error (exit 2) when a file was given with `--file` or `--files`. */
export function rejectFilenameLookalikes(command: Command): void {
  for (const flag of FILENAME_LOOKALIKES) {
    const file = command.getOptionValue(flag.slice(2)) as string | undefined;
    if (file === undefined) continue;
    command.error(
      `error: unknown option '${flag}'; files are given with -f or --filename, such as: ` +
        `loomctl ${command.name()} -f ${file}`,
      { code: 'commander.unknownOption' },
    );
  }
}

/**
 * Returns the files of `-f`. Raises a commander usage error (exit 2) for an argument given
 * without `-f`: one that names an existing file or looks like a path gets the fix, such as
 * `loomctl apply -f examples/quickstart.yaml`.
 */
export function configFiles(command: Command, files: string[] | undefined): string[] {
  rejectFilenameLookalikes(command);
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
    command.error(
      `error: required option '${FILENAME_FLAGS}' not specified; name config files or ` +
        `folders, such as: loomctl ${command.name()} -f loom.yaml`,
      { code: 'commander.missingMandatoryOptionValue' },
    );
  }
  return files;
}

function looksLikePath(argument: string): boolean {
  return existsSync(argument) || /[/\\]|\.(?:ya?ml|json)$/i.test(argument);
}
