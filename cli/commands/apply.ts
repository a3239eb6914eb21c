import { Option, type Command } from 'commander';

import { ConfigError } from '../../common/errors.js';
import { loadConfigFiles } from '../../config/load.js';
import type { ApplyResponse, Change } from '../../proto/gen/loom/v1/admin.js';
import type { AdminClient } from '../admin-client.js';
import {
  EXIT,
  ExitError,
  exitHelp,
  parseDuration,
  parseIfVersion,
  withClient,
  type ClientWrite,
} from '../context.js';
import { addFilenameOption, configFiles } from '../file-option.js';
import { locateControlPlaneIssues } from '../issue-locations.js';
import { err, isUnreadable, out, plural, printOfflineIssues, printWarnings } from '../output.js';
import { percentile, waitForVersion, type ProxyOutcome, type WaitResult } from '../wait.js';

/** Added to an unknown upstream's message under --prune, which deletes what the files omit. */
export const PRUNE_UNDECLARED_HINT =
  '--prune deletes the stored upstreams that these files do not declare, so declare it in the ' +
  'files or run without --prune';

interface ApplyOptions {
  filename?: string[];
  prune: boolean;
  dryRun: boolean;
  ifVersion?: number;
  wait: boolean;
  timeout: number;
  allowEmpty: boolean;
}

const PAST_TENSE: Record<string, string> = {
  create: 'created',
  update: 'configured',
  delete: 'deleted',
};

/** Registers `loomctl apply`. */
export function registerApply(program: Command): void {
  const apply = program
    .command('apply')
    .description(
      'Validate config files and write the declared routes and upstreams in one transaction.',
    );
  addFilenameOption(apply)
    .option(
      '--prune',
      'also delete stored routes and upstreams that the files do not declare',
      false,
    )
    .option('--dry-run', 'validate and print what would change without writing', false)
    .option(
      '--if-version <n>',
      'fail unless the configuration is still at version n (from "loomctl get")',
      parseIfVersion,
    )
    .option(
      '--allow-empty',
      'with --prune, allow files that declare nothing, which deletes every stored resource',
      false,
    )
    .option('--wait', 'wait until every connected proxy applied the new version', false)
    .addOption(
      new Option('--timeout <duration>', 'how long --wait waits, such as 30s, 500ms, 2m or 1h')
        .argParser(parseDuration('--timeout'))
        .default(30_000, '30s'),
    )
    .addHelpText(
      'after',
      '\nWithout --prune, apply only creates and updates: resources stored by other\n' +
        'files or teams stay. With --prune the files describe the whole configuration.\n' +
        'Above 1,000 changes, apply prints counts per kind and action instead of one\n' +
        'line per resource.\n' +
        exitHelp('success', 'invalid configuration, unreachable control plane, version conflict', [
          '  3  --wait: the write was committed, but a proxy nacked the version or did not',
          '     apply it before the timeout',
          '  4  --wait: every connected proxy applied the version, but a proxy disconnected',
          '     during the wait before applying it',
          '  130  --wait interrupted (Ctrl-C): the write was committed, the wait stopped',
        ]),
    )
    .action(async (options: ApplyOptions, command: Command) => {
      const files = configFiles(command, options.filename);
      if (command.getOptionValueSource('timeout') === 'cli' && !options.wait) {
        throw new ExitError(
          EXIT.usage,
          '--timeout sets how long --wait waits; add --wait or drop it',
        );
      }
      if (options.dryRun && options.wait) {
        // A dry run commits no version, so there is nothing for proxies to apply.
        throw new ExitError(
          EXIT.usage,
          '--dry-run writes nothing, so --wait has no version to wait for; drop one of them',
        );
      }
      if (options.allowEmpty && !options.prune) {
        // Without --prune an apply never deletes, so the flag would be silently ignored.
        throw new ExitError(
          EXIT.usage,
          '--allow-empty only lets --prune delete every stored resource; add --prune or drop it',
        );
      }
      const declared = await loadConfigFiles(files, {
        partial: !options.prune,
        undeclaredUpstreamHint: options.prune ? PRUNE_UNDECLARED_HINT : undefined,
      }).catch((error: unknown) => {
        if (!(error instanceof ConfigError)) throw error;
        // As in validate: warnings first, so that the errors end the output.
        printWarnings(error.warnings);
        printOfflineIssues('invalid configuration, nothing was written', error.issues);
        throw new ExitError(EXIT.error, '');
      });
      printWarnings(declared.warnings);
      await withClient(
        command,
        async (client) => {
          const pruneAll =
            options.prune && declared.routes.length === 0 && declared.upstreams.length === 0;
          if (pruneAll && !options.allowEmpty) {
            // The names of `sources` call standard input `(stdin)`, as other messages do.
            await rejectEmptyPrune(
              client,
              declared.sources.map((source) => source.file),
            );
          }
          const response = await client
            .apply({
              routes: declared.routes,
              upstreams: declared.upstreams,
              prune: options.prune,
              dryRun: options.dryRun,
              ifVersion: options.ifVersion,
              includeValues: false,
            })
            .catch(async (error: unknown) => {
              throw locateControlPlaneIssues(error, declared.sources);
            });
          printApplied(response, options.dryRun);
          if (options.wait) await waitAndReport(client, response, options.timeout);
        },
        options.dryRun ? undefined : APPLY_WRITE,
      );
    });
}

/** The write of an apply, for the message when the connection is lost during it. */
const APPLY_WRITE: ClientWrite = {
  name: 'apply',
  check: 'run "loomctl diff" with the same -f files to see whether it was written',
};

/**
 * Throws unless the store is empty too: a prune with files that declare nothing deletes every
 * stored resource, which is more often a wrong file than the intent.
 */
async function rejectEmptyPrune(client: AdminClient, files: string[]): Promise<void> {
  const stored = await client.getConfig();
  const total = stored.routes.length + stored.upstreams.length;
  if (total === 0) return;

  throw new ExitError(
    EXIT.error,
    `${files.join(', ')} ${files.length === 1 ? 'declares' : 'declare'} no routes or upstreams, ` +
      `so --prune would delete all ${total} ` +
      `stored resources (${plural(stored.routes.length, 'route')}, ` +
      `${plural(stored.upstreams.length, 'upstream')}); nothing was written. ` +
      'Check the files, or add --allow-empty to delete them all.',
  );
}

/** Changes above which apply prints counts per kind and action instead of one line each. */
const LISTED_CHANGES_LIMIT = 1_000;

function printApplied(response: ApplyResponse, dryRun: boolean): void {
  if (response.changes.length === 0) {
    out(`no changes (version ${response.version})`);
    return;
  }
  const suffix = dryRun ? ' (dry run)' : '';
  if (response.changes.length <= LISTED_CHANGES_LIMIT) {
    for (const change of response.changes) {
      const note = isUnreadable(response.unreadable, change.kind, change.name)
        ? ` (its stored value was not a valid ${change.kind})`
        : '';
      out(`${formatChange(change)}${note}${suffix}`);
    }
  } else {
    const counts = new Map<string, { kind: string; action: string; count: number }>();
    for (const change of response.changes) {
      const action = PAST_TENSE[change.action] ?? change.action;
      const key = `${change.kind} ${action}`;
      const entry = counts.get(key) ?? { kind: change.kind, action, count: 0 };
      entry.count++;
      counts.set(key, entry);
    }
    for (const { kind, action, count } of counts.values()) {
      out(`${plural(count, kind)} ${action}${suffix}`);
    }
  }
  if (response.committed) out(`version ${response.version}`);
}

function formatChange(change: Change): string {
  return `${change.kind}/${change.name} ${PAST_TENSE[change.action] ?? change.action}`;
}

async function waitAndReport(
  client: AdminClient,
  response: ApplyResponse,
  timeoutMs: number,
): Promise<void> {
  const tty = process.stderr.isTTY === true;
  // The write is committed at this point, so an interrupt stops only the wait, and the
  // operator must learn that the version stays.
  const onInterrupt = () => {
    if (tty) process.stderr.write('\n');
    err(
      `interrupted: version ${response.version} was committed; only the wait for proxies ` +
        'stopped. Run "loomctl status" to see which proxies applied it.',
    );
    process.exit(EXIT.interrupted);
  };
  process.once('SIGINT', onInterrupt);
  const result = await waitForVersion(client, {
    epoch: response.epoch,
    version: response.version,
    committedAtMs: response.committedAtMs,
    timeoutMs,
    onProgress: tty
      ? (applied, total) =>
          process.stderr.write(
            `\rwaiting for version ${response.version}: ${applied} of ${total} proxies applied`,
          )
      : undefined,
  }).finally(() => process.off('SIGINT', onInterrupt));
  if (tty) process.stderr.write('\n');
  reportWait(result, timeoutMs);
}

/** Proxies that `reportWait` names in its summary line before it gives a count of the rest. */
const LISTED_PROXIES_LIMIT = 10;

/**
 * Prints the outcome of a wait. Throws an ExitError with {@link EXIT.notConverged} when a proxy
 * nacked the version or did not apply it in time, and otherwise with
 * {@link EXIT.proxyDisconnected} when a proxy disconnected before it applied the version.
 */
export function reportWait(result: WaitResult, timeoutMs: number): void {
  const applied = result.proxies.filter((proxy) => proxy.state === 'applied');
  const total = result.proxies.length;
  // A proxy that applied the version before it disconnected needs no report.
  const nackedThenDisconnected = result.disconnected.filter((proxy) => proxy.state === 'nacked');
  const unapplied = result.disconnected.filter((proxy) => proxy.state === 'pending');
  const alone = unapplied.length === 0 && nackedThenDisconnected.length === 0;
  if (total === 0 && alone && result.fleetError === undefined) {
    out(`no proxies are connected; nothing to wait for (version ${result.version})`);
    return;
  }

  const times = applied.flatMap((proxy) =>
    proxy.state === 'applied' && proxy.convergenceMs !== undefined ? [proxy.convergenceMs] : [],
  );
  const timing =
    times.length > 0
      ? `; convergence p50 ${percentile(times, 50)} ms, p99 ${percentile(times, 99)} ms`
      : '';
  if (result.disconnected.length === 0) {
    out(`version ${result.version} applied by ${applied.length} of ${total} proxies${timing}`);
  } else {
    const disconnectedNote =
      unapplied.length === 0
        ? ''
        : `; ${proxyCount(unapplied.length)} disconnected before applying it: ${listIds(unapplied)}`;
    out(
      `version ${result.version} applied by ${applied.length} of ${total} connected ` +
        `proxies${timing}${disconnectedNote}`,
    );
  }

  let failed = false;
  let nacked = false;
  for (const proxy of [...result.proxies, ...nackedThenDisconnected]) {
    if (proxy.state === 'nacked') {
      failed = true;
      nacked = true;
      err(`proxy ${proxy.id} nacked version ${proxy.nackedVersion}: ${proxy.error}`);
    } else if (proxy.state === 'pending') {
      failed = true;
      const serves =
        proxy.servedEpoch === result.epoch ? `version ${proxy.servedVersion}` : 'another epoch';
      err(`proxy ${proxy.id} has not applied version ${result.version}; it serves ${serves}`);
    }
  }
  for (const proxy of unapplied) {
    if (proxy.state !== 'pending') continue;
    const served =
      proxy.servedEpoch === result.epoch ? `version ${proxy.servedVersion}` : 'another epoch';
    err(
      `proxy ${proxy.id} disconnected before applying version ${result.version}; ` +
        `it last served ${served}`,
    );
  }
  if (nacked) {
    // Applying the same files again writes nothing, so it cannot retry a nacked version.
    err(
      'The control plane does not send a nacked version again to the proxy process that ' +
        'nacked it. Fix the configuration and apply it, or fix a cause on the proxy host (such ' +
        'as a missing file) and restart that proxy.',
    );
  }
  if (result.fleetError !== undefined) {
    err(`the proxies of other control planes could not be read: ${result.fleetError}`);
    failed = true;
  }
  if (failed) {
    const reason = result.settled
      ? 'a proxy rejected it'
      : `not every proxy applied it within ${timeoutMs} ms`;
    throw new ExitError(
      EXIT.notConverged,
      `version ${result.version} was committed, but ${reason}`,
    );
  }
  if (unapplied.length > 0) {
    throw new ExitError(
      EXIT.proxyDisconnected,
      `version ${result.version} was committed and every connected proxy applied it, but ` +
        `${proxyCount(unapplied.length)} disconnected before applying it; run "loomctl status" ` +
        'to see which version each proxy serves',
    );
  }
}

function proxyCount(count: number): string {
  return `${count} ${count === 1 ? 'proxy' : 'proxies'}`;
}

/** Joins the ids of `proxies`, naming at most LISTED_PROXIES_LIMIT and counting the rest. */
function listIds(proxies: readonly ProxyOutcome[]): string {
  const ids = proxies.slice(0, LISTED_PROXIES_LIMIT).map((proxy) => proxy.id);
  const rest = proxies.length - ids.length;
  return rest > 0 ? `${ids.join(', ')} and ${rest} more` : ids.join(', ');
}
