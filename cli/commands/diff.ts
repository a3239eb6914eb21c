import type { Command } from 'commander';

import { ConfigError } from '../../common/errors.js';
import { loadConfigFiles } from '../../config/load.js';
import type { Change } from '../../proto/gen/loom/v1/admin.js';
import type { UnreadableKey } from '../../proto/gen/loom/v1/admin.js';
import { EXIT, ExitError, exitHelp, withClient } from '../context.js';
import { diffFields } from '../field-diff.js';
import { addFilenameOption, configFiles } from '../file-option.js';
import { locateControlPlaneIssues } from '../issue-locations.js';
import {
  err,
  offlineHeader,
  out,
  plural,
  printConfigIssues,
  printOfflineIssues,
  printWarnings,
} from '../output.js';
import { PRUNE_UNDECLARED_HINT } from './apply.js';

const MARKS: Record<string, string> = { create: '+', update: '~', delete: '-' };

/** Registers `loomctl diff`. */
export function registerDiff(program: Command): void {
  const diff = program
    .command('diff')
    .description(
      'Show what "apply" would change, per resource and per field (old -> new), without writing.',
    );
  addFilenameOption(diff)
    .option('--prune', 'also show stored resources the files do not declare as deleted', false)
    .addHelpText(
      'after',
      '\nThe control plane plans the change against the stored configuration exactly as\n' +
        'apply would (same validation, same --prune rule), so an empty diff means apply\n' +
        'writes nothing.\n' +
        exitHelp('nothing would change', 'invalid configuration, unreachable control plane', [
          '  2  also when something would change; the changes are on standard output',
        ]),
    )
    .action(async (options: { filename?: string[]; prune: boolean }, command: Command) => {
      const files = configFiles(command, options.filename);
      const declared = await loadConfigFiles(files, {
        partial: !options.prune,
        undeclaredUpstreamHint: options.prune ? PRUNE_UNDECLARED_HINT : undefined,
      }).catch((error: unknown) => {
        if (!(error instanceof ConfigError)) throw error;
        printWarnings(error.warnings);
        printOfflineIssues(offlineHeader(error), error.issues);
        throw new ExitError(EXIT.error, '');
      });
      printWarnings(declared.warnings);
      if (options.prune && declared.routes.length === 0 && declared.upstreams.length === 0) {
        err(
          'warning: the files declare no routes or upstreams; apply --prune refuses such files ' +
            'unless --allow-empty is given',
        );
      }
      const response = await withClient(command, (client) =>
        client.apply({
          routes: declared.routes,
          upstreams: declared.upstreams,
          prune: options.prune,
          dryRun: true,
          includeValues: true,
        }),
      ).catch(async (error: unknown) => {
        const located = locateControlPlaneIssues(error, declared.sources);
        if (!(located instanceof ConfigError)) throw located;
        // diff never writes, so the header names who found the errors instead.
        printConfigIssues(
          `invalid configuration: the control plane found ${plural(located.issues.length, 'error')}`,
          located.issues,
        );
        throw new ExitError(EXIT.error, '');
      });
      if (response.changes.length === 0) {
        out(`no changes (version ${response.version})`);
        return;
      }
      for (const change of response.changes) printChange(change, response.unreadable);
      out(summarize(response.changes, response.version));
      throw new ExitError(EXIT.changes, '');
    });
}

function printChange(change: Change, unreadable: UnreadableKey[]): void {
  out(`${MARKS[change.action] ?? '?'} ${change.kind}/${change.name}`);
  const stored = unreadable.find((key) => key.kind === change.kind && key.name === change.name);
  if (stored !== undefined)
    out(`    (stored value is not a valid ${change.kind}: ${stored.reason})`);
  const before = change.beforeJson ? (JSON.parse(change.beforeJson) as unknown) : {};
  const after = change.afterJson ? (JSON.parse(change.afterJson) as unknown) : {};
  for (const field of diffFields(before, after)) {
    if (field.field === 'name') continue;
    if (change.action === 'create') out(`    ${field.field}: ${field.after}`);
    else if (change.action === 'delete') out(`    ${field.field}: ${field.before}`);
    else out(`    ${field.field}: ${field.before ?? '(unset)'} -> ${field.after ?? '(unset)'}`);
  }
}

function summarize(changes: Change[], version: number): string {
  const count = (action: string) => changes.filter((change) => change.action === action).length;
  return (
    `${count('create')} to create, ${count('update')} to update, ${count('delete')} to delete ` +
    `(against version ${version})`
  );
}
