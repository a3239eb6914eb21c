import { Argument, type Command } from 'commander';

import { exitHelp, parseIfVersion, withClient } from '../context.js';
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
    .argument('<name>', 'name of the resource')
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
        const response = await withClient(command, (client) =>
          client.delete({ kind: singularKind(kind), name, ifVersion: options.ifVersion }),
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
