import { Option, type Command } from 'commander';

import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { exitHelp, withClient } from '../context.js';
import { err, formatTable, out } from '../output.js';

/** Registers `loomctl status`. */
export function registerStatus(program: Command): void {
  program
    .command('status')
    .description(
      'Show every proxy the control plane knows: version applied, last nack with its error, ' +
        'snapshots sent, connection.',
    )
    .addOption(
      new Option('-o, --output <format>', 'output format')
        .choices(['table', 'json'])
        .default('table'),
    )
    .addHelpText('after', exitHelp('success', 'unreachable control plane'))
    .action(async (options: { output: 'table' | 'json' }, command: Command) => {
      const status = await withClient(command, (client) => client.status());
      if (options.output === 'json') {
        out(JSON.stringify(status, null, 2));
        return;
      }
      out(`control plane version ${status.version} (epoch ${status.epoch})`);
      process.stdout.write(formatStatusTable(status));
      if (status.fleetError !== '') {
        err(`the proxies of other control planes are missing: ${status.fleetError}`);
      }
    });
}

/** Formats proxies as an aligned table, one row per proxy. */
export function formatStatusTable(status: StatusResponse): string {
  const header = [
    'PROXY',
    'ADDRESS',
    'CONTROL PLANE',
    'CONNECTED',
    'VERSION',
    'SENT',
    'CONNECTED SINCE',
    'LAST SEEN',
    'NACKED',
  ];
  const rows = status.proxies.map((proxy) => [
    proxy.id,
    proxy.address,
    proxy.controlPlane || '-',
    proxy.connected ? 'yes' : 'no',
    proxy.ackedEpoch === status.epoch
      ? String(proxy.ackedVersion)
      : `${proxy.ackedVersion} (other epoch)`,
    String(proxy.snapshotsSent),
    new Date(proxy.connectedAtMs).toISOString(),
    new Date(proxy.lastSeenMs).toISOString(),
    describeNack(proxy, status.epoch),
  ]);
  return formatTable(header, rows);
}

/**
 * Returns the nack cell. A nack older than the version the proxy acked since is history, and
 * so is a nack of another epoch once the proxy acked in the served one (after a wipe or restore).
 */
function describeNack(proxy: ProxyStatus, servedEpoch: string): string {
  if (proxy.nackedVersion === 0) return '-';
  const superseded =
    proxy.nackedEpoch === proxy.ackedEpoch && proxy.nackedVersion < proxy.ackedVersion;
  const nack = `${proxy.nackedVersion}: ${proxy.nackError}`;
  if (superseded) return `${nack} (since superseded)`;
  if (proxy.nackedEpoch !== servedEpoch && proxy.ackedEpoch === servedEpoch) {
    return `${nack} (other epoch)`;
  }
  if (proxy.fallbackVersion === 0) return nack;
  return `${nack} (sent last accepted version ${proxy.fallbackVersion})`;
}
