import cluster from 'node:cluster';
import { hostname } from 'node:os';

import { Command } from 'commander';

import { parseDialAddress, parseHostPort } from '../common/address.js';
import { LoomError } from '../common/errors.js';
import { createLogger, LOG_LEVELS, type Logger } from '../common/logger.js';
import { proxyIdProblem } from '../common/proxy-id.js';
import { loadClientTls } from '../common/tls.js';
import {
  addControlPlaneSecurityOptions,
  addDataPlaneLifecycleOptions,
  checkReadable,
  controlPlaneSecurity,
  dataPlaneLifecycle,
  type ControlPlaneSecurityFlags,
  type DataPlaneLifecycleFlags,
} from './security-options.js';
import { parseFlagDuration } from './duration.js';
import { installGrpcLogger } from './grpc-logging.js';
import { checkDistinctListeners, describeListenError, type ListenerFlag } from './listen-error.js';
import { addProxyOptions, proxyOptions, workerCount, type ProxyFlags } from './proxy-options.js';
import { LOOM_VERSION } from './version.js';

/** Exit codes of `loom`: 1 when the server fails to start or stops on an error, 2 for usage errors. */
export const LOOM_EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/**
 * A command line that is wrong in itself: invalid flag values or flags that contradict each
 * other. It carries one message per invalid flag.
 */
class UsageError extends Error {
  readonly messages: string[];

  constructor(messages: string[], options: { cause: unknown }) {
    super(messages.join('\n'), options);
    this.name = 'UsageError';
    this.messages = messages;
  }
}

/**
 * Runs each check of the flags, which read nothing but the command line and the environment,
 * and returns their results by name. A LoomError that a check throws is a usage error, with
 * one invalid flag per line of its message. Every check runs, so one UsageError names every
 * invalid flag.
 */
function checkFlags<T extends Record<string, unknown>>(checks: {
  [K in keyof T]: () => T[K];
}): T {
  const results: Partial<T> = {};
  const failures: LoomError[] = [];
  for (const key of Object.keys(checks) as (keyof T)[]) {
    try {
      results[key] = checks[key]();
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
      failures.push(error);
    }
  }

  if (failures.length > 0) {
    throw new UsageError(
      failures.flatMap((failure) => failure.message.split('\n')),
      { cause: failures[0] },
    );
  }
  return results as T;
}

interface LogOptions {
  logLevel?: string;
  logPretty: boolean;
}

/** Parses `--etcd-watch-check-interval`, which must be at least 1ms. */
function watchCheckInterval(value: string): number {
  return parseFlagDuration(value, '--etcd-watch-check-interval');
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

/**
 * Returns a check per listen address and one that no two listeners bind the same port. They
 * run before anything opens, so a typo or a clash fails at once with the flags and the values
 * instead of as a bind error of the library underneath.
 */
function listenerChecks(listeners: ListenerFlag[]): Record<string, () => unknown> {
  return {
    ...Object.fromEntries(
      listeners.map((listener) => [
        listener.flag,
        () => parseHostPort(listener.address, listener.flag),
      ]),
    ),
    distinctListeners: () => checkDistinctListeners(listeners),
  };
}

const ETCD_ENDPOINT_FORM =
  'expected http://HOST:PORT or https://HOST:PORT, such as http://127.0.0.1:2379, with ' +
  'several endpoints separated by commas';

/**
 * Splits and checks `--etcd`. etcd3 strips the scheme and dials HOST:PORT over gRPC, with TLS
 * when every endpoint starts with https://, and it throws at start when only some do.
 * Without the flag, the control plane uses the embedded store.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the flag and every invalid endpoint.
 */
function etcdEndpoints(value: string | undefined): string[] {
  if (value === undefined) return [];
  const endpoints = splitList(value);
  if (endpoints.length === 0) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `missing endpoint in --etcd ${JSON.stringify(value)}: ${ETCD_ENDPOINT_FORM}; leave ` +
        '--etcd out to use the embedded store',
    );
  }
  const invalid = endpoints.filter((endpoint) => !isEtcdEndpoint(endpoint));
  if (invalid.length > 0) {
    const names = invalid.map((endpoint) => JSON.stringify(endpoint)).join(', ');
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --etcd endpoint ${names}: ${ETCD_ENDPOINT_FORM}`,
    );
  }
  const secure = endpoints.filter((endpoint) => endpoint.startsWith('https://'));
  if (secure.length > 0 && secure.length < endpoints.length) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --etcd ${JSON.stringify(value)}: it mixes http:// and https:// endpoints; use ` +
        'https:// for every member of a TLS cluster, or http:// for every member',
    );
  }
  return endpoints;
}

function isEtcdEndpoint(endpoint: string): boolean {
  // etcd3 strips only the scheme, and grpc-js cannot parse a target with a trailing slash.
  const match = /^https?:\/\/([^/?#@]+)$/.exec(endpoint);
  if (match === null) return false;
  try {
    parseDialAddress(match[1], '--etcd');
    return true;
  } catch {
    return false;
  }
}

/** Splits and checks `--control-plane`; a URL is rejected because the stream dials HOST:PORT. */
/** Returns `--id`, or the host name and pid when it is not given. */
function proxyId(value: string | undefined): string {
  if (value === undefined) return `${hostname()}-${process.pid}`;
  const problem = proxyIdProblem(value);
  if (problem !== undefined) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --id ${JSON.stringify(value.slice(0, 80))}: it ${problem}; use a name such as ` +
        'the pod name',
    );
  }
  return value;
}

function controlPlaneAddresses(value: string | undefined): string[] {
  // Checked here rather than by Commander, so that the missing flag is listed with the other
  // invalid flags instead of hiding them.
  if (value === undefined) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      "required option '--control-plane <addresses>' not specified; pass the gRPC address of " +
        'the control plane, such as --control-plane 127.0.0.1:7400',
    );
  }
  const addresses = splitList(value);
  if (addresses.length === 0) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --control-plane ${JSON.stringify(value)}; expected HOST:PORT such as 127.0.0.1:7400`,
    );
  }
  for (const address of addresses) {
    if (address.includes('://')) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid --control-plane ${JSON.stringify(address)}; expected HOST:PORT such as ` +
          '127.0.0.1:7400, without a scheme (TLS is set with --tls-ca)',
      );
    }
    parseDialAddress(address, '--control-plane');
  }
  return addresses;
}

/**
 * Checks `--data-dir`. An empty path resolves to the current directory, so the store's files
 * would land among whatever files it contains. A path of only white space is most often an
 * empty variable too.
 */
function dataDirFlag(value: string): string {
  if (value.trim() === '') {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --data-dir ${JSON.stringify(value)}: the path is empty or only white space; ` +
        'name the directory of the store, such as --data-dir ./loom-data',
    );
  }
  return value;
}

/** Checks `--prefix`, the key prefix of both stores, which must end with `/`. */
function storePrefix(value: string): string {
  if (!value.endsWith('/')) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --prefix ${JSON.stringify(value)}: the key prefix must end with "/"; use ` +
        `--prefix ${value}/`,
    );
  }
  return value;
}

/** Waits for a server to start; a failed bind is reworded to name the address and the flag. */
async function awaitStart<T>(start: Promise<T>, listeners: ListenerFlag[]): Promise<T> {
  try {
    return await start;
  } catch (error) {
    throw describeListenError(error, listeners);
  }
}

/**
 * Stops the server on SIGTERM or SIGINT and exits 0 once it has stopped. The handlers go in
 * before the server starts: a signal that arrives while it binds its ports waits for the start,
 * then stops it, instead of killing the process with the default action.
 */
function stopOnSignal<T>(
  logger: Logger,
  started: Promise<T>,
  stop: (server: T) => Promise<void>,
): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    started.then(stop).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

function addLogOptions(command: Command): Command {
  return command
    .option(
      '--log-level <level>',
      `${LOG_LEVELS.slice(0, -1).join(', ')} or ${LOG_LEVELS.at(-1)} ` +
        '(env LOOM_LOG_LEVEL, default info)',
    )
    .option('--log-pretty', 'human-readable logs instead of JSON lines', false);
}

/** Builds the `loom` command tree. */
export function createProgram(): Command {
  const program = new Command('loom')
    .description('Loom API gateway servers.')
    .version(LOOM_VERSION, '--version', 'print the version of Loom')
    // Commander 14 leaves descriptions unwrapped when their column is under 40 characters, as
    // the long flags of control-plane make it. At 30, every command's help wraps at 80.
    .configureHelp({ minWidthToWrap: 30 })
    .exitOverride();

  addLogOptions(
    program
      .command('control-plane')
      .description(
        'Store routes and stream snapshots to proxies; serves the admin API for loomctl.',
      )
      .option('--listen <host:port>', 'gRPC address for proxies and loomctl', '127.0.0.1:7400')
      .option(
        '--admin-listen <host:port>',
        'HTTP address for /healthz, /readyz and /metrics',
        '127.0.0.1:7401',
      )
      .option(
        '--etcd <urls>',
        'comma-separated etcd endpoints, each http://HOST:PORT or https://HOST:PORT; without ' +
          'it the embedded store is used',
      )
      .option('--data-dir <dir>', 'directory of the embedded store', './loom-data')
      .option('--prefix <prefix>', 'key prefix of Loom resources in etcd', '/loom/')
      .option(
        '--etcd-watch-check-interval <duration>',
        'how often to check that the etcd watch still delivers changes, such as 500ms or 10s',
        '10s',
      ),
  ).action(
    async (
      options: LogOptions &
        ControlPlaneSecurityFlags & {
          listen: string;
          adminListen: string;
          etcd?: string;
          dataDir: string;
          prefix: string;
          etcdWatchCheckInterval: string;
        },
    ) => {
      const listeners: ListenerFlag[] = [
        { flag: '--listen', address: options.listen },
        { flag: '--admin-listen', address: options.adminListen },
      ];
      const { etcd, dataDir, prefix, security, etcdWatchCheckIntervalMs, logger } = checkFlags({
        ...listenerChecks(listeners),
        etcd: () => etcdEndpoints(options.etcd),
        dataDir: () => dataDirFlag(options.dataDir),
        prefix: () => storePrefix(options.prefix),
        security: () => controlPlaneSecurity(options),
        etcdWatchCheckIntervalMs: () => watchCheckInterval(options.etcdWatchCheckInterval),
        logger: () =>
          createLogger({
            name: 'control-plane',
            level: options.logLevel,
            pretty: options.logPretty,
          }),
      });
      checkReadable(security.tokensFile, '--admin-tokens-file');
      // Each server is loaded by its own command only, which halves the start time of the other.
      const { ControlPlane } = await import('../control-plane/control-plane.js');
      const starting = ControlPlane.start({
        listen: options.listen,
        adminListen: options.adminListen,
        etcdEndpoints: etcd,
        dataDir,
        prefix,
        logger,
        etcdWatchCheckIntervalMs,
        ...security,
      });
      stopOnSignal(logger, starting, (controlPlane) => controlPlane.stop());
      await awaitStart(starting, listeners);
    },
  );

  addLogOptions(
    program
      .command('data-plane')
      .description('Run a proxy that serves traffic from the snapshots of a control plane.')
      .option(
        '--control-plane <addresses>',
        'comma-separated control-plane host:port list (required)',
      )
      .option('--listen <host:port>', 'traffic address', '0.0.0.0:8080')
      .option(
        '--admin-listen <host:port>',
        'admin address for /healthz, /readyz and /metrics',
        '127.0.0.1:9901',
      )
      .option(
        '--id <name>',
        'proxy id reported to the control plane, unique per proxy process; a second process ' +
          'with the same id is rejected while the first is connected (default: host name and pid)',
      )
      .option(
        '--access-log <stdout|path>',
        'write one JSON line per request to stdout or a file (default off)',
      ),
  ).action(
    async (
      options: LogOptions &
        DataPlaneLifecycleFlags &
        ProxyFlags & {
          controlPlane?: string;
          listen: string;
          adminListen: string;
          id?: string;
          accessLog?: string;
        },
    ) => {
      const listeners: ListenerFlag[] = [
        { flag: '--listen', address: options.listen },
        { flag: '--admin-listen', address: options.adminListen },
      ];
      const { controlPlanes, logger, lifecycle, proxy, workers, id } = checkFlags({
        controlPlanes: () => controlPlaneAddresses(options.controlPlane),
        ...listenerChecks(listeners),
        logger: () =>
          createLogger({ name: 'data-plane', level: options.logLevel, pretty: options.logPretty }),
        lifecycle: () => dataPlaneLifecycle(options),
        proxy: () => proxyOptions(options),
        workers: () => workerCount(options.workers),
        id: () => proxyId(options.id),
      });
      // The snapshot client reads the TLS files again before every connect, so that renewed
      // files take effect, and retries on a failed read. One read here makes a missing file or
      // a key that does not match its certificate fail the start instead.
      if (lifecycle.options.tls !== undefined && !cluster.isWorker) {
        loadClientTls(lifecycle.options.tls);
      }
      const dataPlaneOptions = {
        controlPlanes,
        listen: options.listen,
        adminListen: options.adminListen,
        id,
        logger,
        accessLog: options.accessLog,
        ...lifecycle.options,
        ...proxy,
      };
      if (workers > 1 || cluster.isWorker) {
        const { startClusterProcess } = await import('../data-plane/workers/cluster.js');
        const role = startClusterProcess({ ...dataPlaneOptions, workers });
        stopOnSignal(logger, role, (started) => started.drain(lifecycle.drainTimeoutMs));
        process.on('SIGHUP', () => void role.then((started) => started.reopenAccessLog()));
        await awaitStart(role, listeners);
        return;
      }
      const { DataPlane } = await import('../data-plane/data-plane.js');
      const dataPlane = new DataPlane(dataPlaneOptions);
      const starting = dataPlane.start();
      stopOnSignal(logger, starting, () => dataPlane.drain(lifecycle.drainTimeoutMs));
      await awaitStart(starting, listeners);
      // Log rotation tools move the file, then send SIGHUP so the proxy opens a new one.
      process.on('SIGHUP', () => dataPlane.accessLog.reopen());
    },
  );

  addControlPlaneSecurityOptions(subcommand(program, 'control-plane'));
  addDataPlaneLifecycleOptions(subcommand(program, 'data-plane'));
  addProxyOptions(subcommand(program, 'data-plane'));
  return program;
}

function subcommand(program: Command, name: string): Command {
  const command = program.commands.find((candidate) => candidate.name() === name);
  if (command === undefined) throw new Error(`loom has no ${name} command`);
  return command;
}

/**
 * Runs `loom` with argv and resolves once the server started. It resolves with an exit code
 * (`LOOM_EXIT`) instead when the command line is wrong or the server fails to start.
 */
export async function main(argv: string[]): Promise<number | undefined> {
  installGrpcLogger();
  try {
    await createProgram().parseAsync(argv, { from: 'user' });
    return undefined;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'commander.helpDisplayed') return LOOM_EXIT.ok;
    // `loom help` exits 0; `loom` without a command prints the help as an error.
    if (code === 'commander.help') {
      return (error as { exitCode?: number }).exitCode === 0 ? LOOM_EXIT.ok : LOOM_EXIT.usage;
    }
    if (code === 'commander.version') return LOOM_EXIT.ok;
    // Commander has already printed its message (unknown flag, missing value).
    if (typeof code === 'string' && code.startsWith('commander.')) return LOOM_EXIT.usage;
    if (error instanceof UsageError) {
      for (const message of error.messages) process.stderr.write(`error: ${message}\n`);
      return LOOM_EXIT.usage;
    }
    const message =
      error instanceof LoomError
        ? error.message
        : error instanceof Error
          ? error.stack
          : String(error);
    process.stderr.write(`error: ${message}\n`);
    return LOOM_EXIT.failure;
  }
}
