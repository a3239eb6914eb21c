import { setTimeout as sleep } from 'node:timers/promises';

import { InvalidArgumentError, Option, type Command } from 'commander';

import { LoomError } from '../../common/errors.js';
import { tidyGrpcDetails } from '../../common/grpc-errors.js';
import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import type { AdminClient } from '../admin-client.js';
import { EXIT, ExitError, exitHelp, parseDuration, withClient } from '../context.js';
import { err, formatTable, out } from '../output.js';

interface StatusOptions {
  output: 'table' | 'json';
  watch: boolean;
  interval: number;
}

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
    .addOption(
      new Option(
        '-w, --watch',
        'keep reading the status and print it again on each change',
      ).default(false),
    )
    .addOption(
      new Option('--interval <duration>', 'how often --watch reads the status, such as 500ms or 2s')
        .argParser(parseInterval)
        .default(1_000, '1s'),
    )
    .addHelpText(
      'after',
      exitHelp('success; with --watch, also when Ctrl-C ends it', 'unreachable control plane'),
    )
    .action(async (options: StatusOptions, command: Command) => {
      if (command.getOptionValueSource('interval') === 'cli' && !options.watch) {
        throw new ExitError(
          EXIT.usage,
          '--interval sets how often --watch reads the status; add --watch or drop it',
        );
      }
      await withClient(command, async (client) => {
        const status = await readStatus(client);
        if (!options.watch) {
          printStatus(status, options.output);
          return;
        }
        process.once('SIGINT', () => process.exit(EXIT.ok));
        // A reader that went away, as `head` does, ends the watch at its next print.
        process.stdout.on('error', (error: NodeJS.ErrnoException) => {
          if (error.code === 'EPIPE') process.exit(EXIT.ok);
        });
        await watchStatus(client, status, options);
      });
    });
}

/** Shortest `--interval`, so a watch cannot flood the control plane with reads. */
const MIN_INTERVAL_MS = 100;

/**
 * Parses `--interval` as a duration of at least `MIN_INTERVAL_MS`. Throws commander's
 * InvalidArgumentError, so a shorter one is a usage error (exit 2) that prints the usage.
 */
function parseInterval(value: string): number {
  const intervalMs = parseDuration('--interval')(value);
  if (intervalMs < MIN_INTERVAL_MS) {
    throw new InvalidArgumentError(
      `The interval must be at least ${MIN_INTERVAL_MS}ms, so that a watch does not flood ` +
        `the control plane with reads. Use ${MIN_INTERVAL_MS}ms or more, such as 500ms or 2s.`,
    );
  }
  return intervalMs;
}

function printStatus(status: StatusResponse, output: 'table' | 'json'): void {
  if (output === 'json') {
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
}

/**
 * Prints the status, then reads it every `interval` and prints it again when it changed, until
 * the process is interrupted. A table gets a line with the time and the fleet's convergence
 * above it, and JSON is one object per line. An unreachable control plane is reported once on
 * stderr and read again at the next interval, so a watch outlives a control-plane restart.
 */
async function watchStatus(
  client: AdminClient,
  first: StatusResponse,
  options: StatusOptions,
): Promise<never> {
  let status = first;
  let printedKey: string | undefined;
  let unreachable = false;
  for (;;) {
    const key = statusKey(status);
    if (key !== printedKey) {
      printedKey = key;
      printWatchedStatus(status, options.output);
    }
    await sleep(options.interval);
    try {
      status = await readStatus(client);
      if (unreachable) err(`${new Date().toISOString()} control plane reachable again`);
      unreachable = false;
    } catch (error) {
      if (!(error instanceof LoomError) || error.code !== 'LOOM_UNAVAILABLE') throw error;
      if (!unreachable) {
        err(
          `${new Date().toISOString()} cannot reach the control plane at ${client.address}: ` +
            `${tidyGrpcDetails(error.message)}; still watching`,
        );
      }
      unreachable = true;
    }
  }
}

function printWatchedStatus(status: StatusResponse, output: 'table' | 'json'): void {
  if (output === 'json') {
    out(JSON.stringify(status));
    return;
  }
  out('');
  out(`${new Date().toISOString()} ${describeConvergence(status)}`);
  printStatus(status, output);
}

/**
 * Returns what a watch compares between two reads: everything but the times a proxy was last
 * seen, which move on every heartbeat without any change to show.
 */
function statusKey(status: StatusResponse): string {
  return JSON.stringify({
    ...status,
    proxies: status.proxies.map((proxy) => ({ ...proxy, lastSeenMs: 0 })),
  });
}

/**
 * Summarizes how far the connected proxies are with the served version, such as
 * `version 7: 2 of 3 connected proxies applied it, 1 nacked it`.
 */
export function describeConvergence(status: StatusResponse): string {
  const connected = status.proxies.filter((proxy) => proxy.connected);
  const isApplied = (proxy: ProxyStatus) =>
    proxy.ackedEpoch === status.epoch && proxy.ackedVersion >= status.version;
  const applied = connected.filter(isApplied).length;
  const nacked = connected.filter(
    (proxy) =>
      !isApplied(proxy) &&
      proxy.nackedEpoch === status.epoch &&
      proxy.nackedVersion === status.version,
  ).length;
  const summary = `version ${status.version}: ${applied} of ${connected.length} connected proxies applied it`;
  return nacked === 0 ? summary : `${summary}, ${nacked} nacked it`;
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
