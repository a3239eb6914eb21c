import { Command } from 'commander';

import { ConfigError, LoomError } from '../common/errors.js';
import { DEFAULT_CONTROL_PLANE } from './admin-client.js';
import { registerApply } from './commands/apply.js';
import { registerDelete } from './commands/delete.js';
import { registerDiff } from './commands/diff.js';
import { registerExplain } from './commands/explain.js';
import { registerGet } from './commands/get.js';
import { registerSchema } from './commands/schema.js';
import { registerStatus } from './commands/status.js';
import { registerValidate } from './commands/validate.js';
import { EXIT, EXIT_HELP, ExitError } from './context.js';
import { hintMissingFilename } from './file-option.js';
import { addConnectionOptions, applyConnectionSettings } from './loomctl-config.js';
import { err, printConfigIssues } from './output.js';
import { LOOM_VERSION } from './version.js';

export { EXIT } from './context.js';
export { formatStatusTable } from './commands/status.js';

/** Builds the loomctl command tree. */
export function createProgram(): Command {
  const program = new Command('loomctl')
    .description('Operate a Loom fleet: apply, inspect and delete routes and upstreams.')
    .version(LOOM_VERSION, '--version', 'print the version of loomctl')
    .option(
      '--control-plane <host:port>',
      'gRPC address of the control plane, its "loom control-plane --listen" ' +
        `(env LOOM_CONTROL_PLANE, default ${DEFAULT_CONTROL_PLANE})`,
    )
    .addHelpText('after', EXIT_HELP)
    .showHelpAfterError()
    .exitOverride();
  addConnectionOptions(program);
  program.hook('preAction', () => applyConnectionSettings(program));

  registerApply(program);
  registerDiff(program);
  registerGet(program);
  registerDelete(program);
  registerValidate(program);
  registerExplain(program);
  registerStatus(program);
  registerSchema(program);
  // Subcommands inherit neither exitOverride nor showHelpAfterError from their parent.
  for (const command of program.commands) {
    hintMissingFilename(command.exitOverride().showHelpAfterError());
  }
  return program;
}

/**
 * Runs loomctl with argv and returns the exit code. A reader that closes the output early,
 * such as `loomctl apply 2>&1 | head -1`, does not change the exit code.
 */
export async function main(argv: string[]): Promise<number> {
  ignoreClosedOutput(process.stdout);
  ignoreClosedOutput(process.stderr);
  try {
    await createProgram().parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    return reportError(error);
  }
}

function reportError(error: unknown): number {
  const commanderCode = (error as { code?: string }).code;
  if (commanderCode === 'commander.helpDisplayed' || commanderCode === 'commander.version') {
    return EXIT.ok;
  }
  // `loomctl help [command]` exits 0; `loomctl` without a command prints the help as an error.
  if (commanderCode === 'commander.help' && (error as { exitCode?: number }).exitCode === 0) {
    return EXIT.ok;
  }
  if (typeof commanderCode === 'string' && commanderCode.startsWith('commander.')) {
    return EXIT.usage;
  }
  if (error instanceof ExitError) {
    if (error.message) err(`error: ${error.message}`);
    return error.exitCode;
  }
  if (error instanceof ConfigError) {
    printConfigIssues('invalid configuration, nothing was written', error.issues);
    return EXIT.error;
  }
  if (error instanceof LoomError) {
    err(`error: ${error.message}`);
    return EXIT.error;
  }
  process.stderr.write(`error: ${error instanceof Error ? error.stack : String(error)}\n`);
  return EXIT.error;
}

/**
 * Drops output once the reader is gone. Without a listener, EPIPE on a closed pipe is an
 * uncaught error that ends loomctl with exit 1 instead of the code of the command.
 */
function ignoreClosedOutput(stream: NodeJS.WriteStream): void {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
}
