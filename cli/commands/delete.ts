import { Argument, type Command } from 'commander';

import { LoomError } from '../../common/errors.js';
import type { AdminClient } from '../admin-client.js';
import { exitHelp, parseIfVersion, parseResourceName, withClient } from '../context.js';
import { isUnreadable, out } from '../output.js';

/** Returns the singular kind the admin API takes; `get` spells kinds in the plural. */
function singularKind(kind: string): string {
  return kind.endsWith('s') ? kind.slice(0, -1) : kind;
}

/** Registers `loomctl delete`. */
export function registerDelete(program: Command): void {
  program
    .command('delete')
    .description('Delete one route or upstream. An upstream that a route uses is not deleted.')
    .addArgument(
      new Argument(
        '<kind>',
        'route or upstream (routes and upstreams work too, as in "get")',
      ).choices(['route', 'upstream', 'routes', 'upstreams']),
    )
    .argument('<name>', 'name of the resource', parseResourceName)
    .option(
      '--if-version <n>',
      'fail unless the configuration is still at version n (from "loomctl get")',
      parseIfVersion,
    )
    .addHelpText(
      'after',
      exitHelp('success', 'unreachable control plane, version conflict, resource not found'),
    )
    .action(
      async (kind: string, name: string, options: { ifVersion?: number }, command: Command) => {
        const singular = singularKind(kind);
        const response = await withClient(
          command,
          (client) =>
            client
              .delete({ kind: singular, name, ifVersion: options.ifVersion })
              .catch(async (error: unknown) => {
                if (error instanceof LoomError && error.code === 'LOOM_VERSION_CONFLICT') {
                  throw await deleteConflict(
                    client,
                    `${singular}/${name}`,
                    options.ifVersion,
                    error,
                  );
                }
                throw error;
              }),
          {
            name: 'delete',
            check: `run "loomctl get ${singular} ${name}" to see whether it still exists`,
          },
        );
        for (const change of response.changes) {
          const note = isUnreadable(response.unreadable, change.kind, change.name)
            ? ' (its stored value was not a valid ' + change.kind + ')'
            : '';
          out(`${change.kind}/${change.name} deleted${note}`);
        }
        out(`version ${response.version}`);
      },
    );
}

/**
 * Builds the conflict error of a delete. The control plane's message advises the next step of
 * an apply, so the delete states the conflict and its own next step: check the resource with
 * `loomctl get`, then delete again with the current version.
 */
async function deleteConflict(
  client: AdminClient,
  resource: string,
  ifVersion: number | undefined,
  cause: LoomError,
): Promise<LoomError> {
  const current = await client.getConfig().then(
    (config) => config.version,
    () => undefined,
  );
  const now = current === undefined ? '' : ` (the store is now at version ${current})`;
  let conflict: string;
  let next: string;
  if (ifVersion === undefined) {
    conflict = 'the configuration changed during each attempt of the delete';
    next = 'Run the delete again.';
  } else {
    conflict =
      ifVersion === 0
        ? '--if-version 0 expects a store without routes or upstreams, but the store holds some'
        : `expected the configuration at version ${ifVersion}, but it changed since`;
    const version = current === undefined ? 'the version it prints' : String(current);
    next =
      `Run "loomctl get" to check that ${resource} should still be deleted, then delete it ` +
      `again with --if-version ${version}.`;
  }
  return new LoomError(
    'LOOM_VERSION_CONFLICT',
    `version conflict: ${conflict}${now}; ${resource} was not deleted. ${next}`,
    { cause },
  );
}
