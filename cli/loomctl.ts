import { Argument, Command, Option } from 'commander';
import { stringify } from 'yaml';

import { ConfigError, formatConfigIssue, LoomError } from '../common/errors.js';
import { loadConfigFiles } from '../config/load.js';
import { API_VERSION } from '../config/schema.js';
import type { Change, GetConfigResponse, StatusResponse } from '../proto/gen/loom/v1/admin.js';
import { AdminClient, DEFAULT_CONTROL_PLANE } from './admin-client.js';

/** Exit codes of loomctl, documented in its help. */
export const EXIT = { ok: 0, error: 1, usage: 2 } as const;

function controlPlaneAddress(command: Command): string {
  const options = command.optsWithGlobals<{ controlPlane?: string }>();
  return options.controlPlane ?? process.env.LOOM_CONTROL_PLANE ?? DEFAULT_CONTROL_PLANE;
}

async function withClient<T>(
  command: Command,
  action: (client: AdminClient) => Promise<T>,
): Promise<T> {
  const client = new AdminClient(controlPlaneAddress(command));
  try {
    return await action(client);
  } catch (error) {
    if (error instanceof LoomError && error.code === 'LOOM_UNAVAILABLE') {
      throw new LoomError(
        'LOOM_UNAVAILABLE',
        `cannot reach the control plane at ${client.address}: ${error.message}\n` +
          'Is "loom control-plane" running there? Set --control-plane or LOOM_CONTROL_PLANE to its address.',
      );
    }
    throw error;
  } finally {
    client.close();
  }
}

function printChanges(changes: Change[], suffix: string): void {
  for (const change of changes) {
    process.stdout.write(`${change.kind}/${change.name} ${pastTense(change.action)}${suffix}\n`);
  }
}

function pastTense(action: string): string {
  return action === 'create' ? 'created' : action === 'update' ? 'configured' : 'deleted';
}

function toDocument(config: GetConfigResponse): object {
  return {
    apiVersion: API_VERSION,
    upstreams: config.upstreams,
    routes: config.routes,
  };
}

/** Builds the loomctl command tree. */
export function createProgram(): Command {
  const program = new Command('loomctl')
    .description('Operate a Loom fleet: apply, inspect and delete routes and upstreams.')
    .option(
      '--control-plane <host:port>',
      `control-plane admin address (env LOOM_CONTROL_PLANE, default ${DEFAULT_CONTROL_PLANE})`,
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 success, 1 error (invalid config, unreachable control plane, conflict), 2 usage error.',
    )
    .showHelpAfterError()
    .exitOverride();

  program
    .command('apply')
    .description('Validate config files and write them to the store in one transaction.')
    .requiredOption('-f, --filename <file...>', 'YAML or JSON config file(s)')
    .option('--prune', 'delete stored routes and upstreams the files do not declare', false)
    .option('--dry-run', 'print what would change without writing', false)
    .option('--if-version <n>', 'fail unless the store is still at this version', parseVersion)
    .action(
      async (
        options: { filename: string[]; prune: boolean; dryRun: boolean; ifVersion?: number },
        command: Command,
      ) => {
        const declared = await loadConfigFiles(options.filename);
        const response = await withClient(command, (client) =>
          client.apply({
            ...declared,
            prune: options.prune,
            dryRun: options.dryRun,
            ifVersion: options.ifVersion ?? 0,
          }),
        );
        if (response.changes.length === 0) {
          process.stdout.write(`no changes (version ${response.version})\n`);
          return;
        }
        printChanges(response.changes, options.dryRun ? ' (dry run)' : '');
        if (response.committed) process.stdout.write(`version ${response.version}\n`);
      },
    );

  program
    .command('get')
    .description('Print the stored routes and upstreams.')
    .addOption(
      new Option('-o, --output <format>', 'output format')
        .choices(['yaml', 'json'])
        .default('yaml'),
    )
    .action(async (options: { output: 'yaml' | 'json' }, command: Command) => {
      const config = await withClient(command, (client) => client.getConfig());
      const document = { ...toDocument(config), version: config.version, epoch: config.epoch };
      process.stdout.write(
        options.output === 'json' ? `${JSON.stringify(document, null, 2)}\n` : stringify(document),
      );
    });

  program
    .command('delete')
    .description('Delete one route or upstream.')
    .addArgument(new Argument('<kind>', 'route or upstream').choices(['route', 'upstream']))
    .argument('<name>', 'name of the resource')
    .option('--if-version <n>', 'fail unless the store is still at this version', parseVersion)
    .action(
      async (kind: string, name: string, options: { ifVersion?: number }, command: Command) => {
        const response = await withClient(command, (client) =>
          client.delete({ kind, name, ifVersion: options.ifVersion ?? 0 }),
        );
        printChanges(response.changes, '');
        process.stdout.write(`version ${response.version}\n`);
      },
    );

  program
    .command('status')
    .description(
      'Show every proxy the control plane knows: version applied, last nack, connection.',
    )
    .addOption(
      new Option('-o, --output <format>', 'output format')
        .choices(['table', 'json'])
        .default('table'),
    )
    .action(async (options: { output: 'table' | 'json' }, command: Command) => {
      const status = await withClient(command, (client) => client.status());
      if (options.output === 'json') {
        process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
        return;
      }
      process.stdout.write(`control plane version ${status.version} (epoch ${status.epoch})\n`);
      process.stdout.write(formatStatusTable(status));
    });

  return program;
}

/** Formats proxies as an aligned table, one row per proxy. */
export function formatStatusTable(status: StatusResponse): string {
  const header = [
    'PROXY',
    'ADDRESS',
    'CONNECTED',
    'VERSION',
    'NACKED',
    'CONNECTED SINCE',
    'LAST SEEN',
  ];
  const rows = status.proxies.map((proxy) => [
    proxy.id,
    proxy.address,
    proxy.connected ? 'yes' : 'no',
    proxy.ackedEpoch === status.epoch
      ? String(proxy.ackedVersion)
      : `${proxy.ackedVersion} (other epoch)`,
    proxy.nackedVersion > 0 ? `${proxy.nackedVersion}: ${proxy.nackError}` : '-',
    new Date(proxy.connectedAtMs).toISOString(),
    new Date(proxy.lastSeenMs).toISOString(),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length)),
  );
  const format = (row: string[]) =>
    row
      .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column])))
      .join('  ');
  return [header, ...rows].map(format).join('\n') + '\n';
}

function parseVersion(value: string): number {
  const version = Number(value);
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --if-version "${value}"; expected a positive integer`,
    );
  }
  return version;
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
  if (commanderCode === 'commander.helpDisplayed' || commanderCode === 'commander.version')
    return EXIT.ok;
  if (typeof commanderCode === 'string' && commanderCode.startsWith('commander.'))
    return EXIT.usage;
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
