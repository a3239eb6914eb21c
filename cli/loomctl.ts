import { Command } from 'commander';

import { ConfigError, formatConfigIssue, LoomError } from '../common/errors.js';
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
import { addConnectionOptions, applyConnectionSettings } from './loomctl-config.js';
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
      `control-plane admin address (env LOOM_CONTROL_PLANE, default ${DEFAULT_CONTROL_PLANE})`,
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
  for (const command of program.commands) command.exitOverride().showHelpAfterError();
  return program;
}

/** Runs loomctl with argv and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
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
  if (typeof commanderCode === 'string' && commanderCode.startsWith('commander.')) {
    return EXIT.usage;
  }
  if (error instanceof ExitError) {
    if (error.message) process.stderr.write(`error: ${error.message}\n`);
    return error.exitCode;
  }
  if (error instanceof ConfigError) {
    process.stderr.write(`error: invalid configuration, nothing was written:\n`);
    for (const issue of error.issues) process.stderr.write(`  ${formatConfigIssue(issue)}\n`);
    return EXIT.error;
  }
  if (error instanceof LoomError) {
    process.stderr.write(`error: ${error.message}\n`);
    return EXIT.error;
  }
  process.stderr.write(`error: ${error instanceof Error ? error.stack : String(error)}\n`);
  return EXIT.error;
}
