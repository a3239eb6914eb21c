import { Option, type Command } from 'commander';

import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import type { AdminClient } from '../admin-client.js';
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
      const status = await withClient(command, readStatus);
      if (options.output === 'json') {
        out(JSON.stringify(status, null, 2));
        return;
      }
      out(`control plane version ${status.version} (epoch ${status.epoch})`);
      if (status.proxies.length === 0) {
        // On stderr, as kubectl reports an empty list: scripts that read the table see none.
        err(
          'no proxies: none is connected or was seen recently; start one with ' +
            '"loom data-plane --control-plane HOST:PORT"',
        );
      } else {
        process.stdout.write(formatStatusTable(status));
      }
      for (const warning of duplicateIdWarnings(status.proxies)) err(warning);
      if (status.fleetError !== '') {
        err(`the proxies of other control planes are missing: ${status.fleetError}`);
      }
    });
}

/** Maximum number of status requests in one {@link readStatus}. */
const STATUS_READS = 3;

/**
 * Reads the status with each proxy's first ack of the served version (`versionAckedAtMs`). The
 * control plane fills ack times only for a version named in the request, so the first read
 * finds the served version and the next requests it. A commit between two reads moves the
 * served version, so the reads repeat until the response reports the version it was asked for.
 */
export async function readStatus(client: AdminClient): Promise<StatusResponse> {
  let status = await client.status();
  for (let read = 1; read < STATUS_READS && status.version > 0; read++) {
    const requested = status.version;
    status = await client.status({ version: requested });
    if (status.version === requested) return status;
  }
  // NOTE: when every read meets a new commit, the ack times are those of the version requested
  // last, which is older than `version`.
  return status;
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
 * Returns the nack cell. A nack of the version the proxy acked, or of an older one, is history:
 * the same version acked after a nack comes from a restarted proxy process. So is a nack of
 * another epoch once the proxy acked in the served one (after a wipe or restore).
 */
function describeNack(proxy: ProxyStatus, servedEpoch: string): string {
  if (proxy.nackedVersion === 0) return '-';
  const superseded =
    proxy.nackedEpoch === proxy.ackedEpoch && proxy.nackedVersion <= proxy.ackedVersion;
  const nack = `${proxy.nackedVersion}: ${proxy.nackError}`;
  if (superseded) return `${nack} (since superseded)`;
  if (proxy.nackedEpoch !== servedEpoch && proxy.ackedEpoch === servedEpoch) {
    return `${nack} (other epoch)`;
  }
  if (proxy.fallbackVersion === 0) return nack;
  return `${nack} (sent last accepted version ${proxy.fallbackVersion})`;
}

/**
 * Returns one warning per proxy id that several connected processes use, as when two proxies
 * with one `--id` connected through two control planes at the same moment.
 */
export function duplicateIdWarnings(proxies: ProxyStatus[]): string[] {
  const addresses = new Map<string, string[]>();
  for (const proxy of proxies) {
    if (!proxy.connected) continue;
    addresses.set(proxy.id, [...(addresses.get(proxy.id) ?? []), proxy.address]);
  }
  return [...addresses]
    .filter(([, list]) => list.length > 1)
    .map(
      ([id, list]) =>
        `proxy id ${JSON.stringify(id)} is used by ${list.length} connected processes ` +
        `(${list.join(', ')}); give each proxy a unique --id, or omit --id to use the default`,
    );
}
