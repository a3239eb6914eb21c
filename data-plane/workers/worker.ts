import { existsSync } from 'node:fs';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

import { parseHostPort } from '../../common/address.js';
import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { describeBuildFailure } from '../build-table.js';
import { DEFAULT_SLICE_MS } from '../router/router.js';
import { SnapshotDecoder } from '../snapshot-client/snapshot-decoder.js';
import { HttpDrainer, type DrainGrace } from '../lifecycle/drain.js';
import { AccessLog } from '../observability/access-log.js';
import { MetricsObserver } from '../observability/metrics-observer.js';
import { MetricsRetention } from '../observability/metrics-retention.js';
import { ProxyMetrics } from '../observability/proxy-metrics.js';
import { createProxyServer, type ProxyServerOptions } from '../proxy/proxy-server.js';
import type { RoutingTable } from '../table.js';
import { setHealthSource } from '../upstreams/health-checker.js';
import { UpstreamRegistry, type UpstreamRegistryOptions } from '../upstreams/registry.js';
import { HealthReplica } from './health-replica.js';
import {
  isPrimaryMessage,
  type PrimaryMessage,
  type PrimaryRequest,
  type ReplyResults,
  type WorkerMessage,
} from './messages.js';
import { stageTable, type StagedTable } from './staged-table.js';

/** Test-only switches of one worker, read from the environment by {@link workerFaults}. */
export interface WorkerFaults {
  /** Fail every snapshot that contains a route of this name. */
  rejectRoute?: string;
  /** Finish staging a snapshot only once this file exists. */
  stageGate?: string;
  /** Add `x-loom-worker: INDEX-PID` to every routed response. */
  workerHeader?: boolean;
  /** Exit with code 1 at start, before the `ready` message, while this file exists. */
  crashFile?: string;
}

/** Settings of one worker process. */
export interface ProxyWorkerOptions {
  /** Slot of the worker, 1 to the worker count; a restarted worker keeps its slot. */
  index: number;
  /** Traffic listener, host:port, shared by every worker through the primary. */
  listen: string;
  logger: Logger;
  /** Access log destination: `stdout` or a file path; undefined turns it off. */
  accessLog?: string;
  proxy?: Omit<ProxyServerOptions, 'getTable' | 'logger' | 'observer'>;
  upstreams?: Omit<UpstreamRegistryOptions, 'logger'>;
  /** Grace periods of a drain; see `DrainGrace`. */
  drainGrace?: DrainGrace;
  faults?: WorkerFaults;
}

/**
 * Reads the test-only fault switches of worker `index`. `LOOM_FAULT_REJECT_ROUTE`,
 * `LOOM_FAULT_STAGE_GATE` and `LOOM_FAULT_CRASH_FILE` apply to every worker, or only to the
 * worker whose slot `LOOM_FAULT_WORKER` names; `LOOM_TEST_WORKER_HEADER=1` applies to all.
 */
export function workerFaults(index: number, env: NodeJS.ProcessEnv = process.env): WorkerFaults {
  const target = env.LOOM_FAULT_WORKER;
  const applies = target === undefined || target === '' || Number(target) === index;
  return {
    rejectRoute: applies ? env.LOOM_FAULT_REJECT_ROUTE || undefined : undefined,
    stageGate: applies ? env.LOOM_FAULT_STAGE_GATE || undefined : undefined,
    workerHeader: env.LOOM_TEST_WORKER_HEADER === '1',
    crashFile: applies ? env.LOOM_FAULT_CRASH_FILE || undefined : undefined,
  };
}

interface Staged {
  table: StagedTable;
  snapshot: Snapshot;
}

/**
 * One worker process of a multi-process proxy: the traffic listener, the upstream pools, the
 * request metrics and the access log, without a control-plane stream or an admin listener.
 * The primary sends it snapshots over IPC in two steps, stage and commit, and then the `listen`
 * request; see `WorkerPrimary`. It sends no active health checks: the primary runs them and
 * sends the results, which a {@link HealthReplica} applies.
 */
export class ProxyWorker {
  readonly #options: ProxyWorkerOptions;
  readonly #logger: Logger;
  readonly #upstreams: UpstreamRegistry;
  readonly #server: Server;
  readonly #drainer: HttpDrainer;
  readonly #metrics = new ProxyMetrics();
  readonly #retention = new MetricsRetention(this.#metrics);
  readonly #accessLog: AccessLog;
  readonly #faults: WorkerFaults;
  readonly #health = new HealthReplica();
  /**
   * Decodes the primary's StreamResponse messages, keeping the objects of unchanged routes and
   * upstreams, so a staged table reuses the serving table's work for them.
   */
  readonly #decoder = new SnapshotDecoder();
  /** The decode in progress, which the next stage request waits for. */
  #decodes: Promise<unknown> = Promise.resolve();
  #table: RoutingTable | undefined;
  #staged: Staged | undefined;
  #draining: Promise<void> | undefined;

  /** @throws LoomError `LOOM_INVALID_ARGUMENT` when the access log file cannot be opened. */
  constructor(options: ProxyWorkerOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#faults = options.faults ?? {};
    this.#accessLog = AccessLog.open(options.accessLog, options.logger);
    // Set before the registry starts any checker; one worker process has one registry.
    setHealthSource(this.#health);
    this.#upstreams = new UpstreamRegistry({
      ...options.upstreams,
      logger: options.logger,
      healthListener: this.#metrics,
    });
    this.#server = createProxyServer({
      ...options.proxy,
      getTable: () => this.#table,
      logger: options.logger,
      observer: new MetricsObserver(this.#metrics, this.#accessLog),
    }).server;
    this.#drainer = new HttpDrainer(this.#server, options.logger, options.drainGrace);
    this.#server.on('connection', (socket: Socket) => {
      this.#metrics.connectionOpened();
      socket.once('close', () => this.#metrics.connectionClosed());
    });
  }

  /** Starts handling the primary's messages and sends it `ready`. */
  start(): void {
    if (this.#faults.crashFile !== undefined && existsSync(this.#faults.crashFile)) {
      process.exit(1);
    }
    process.on('message', (message: unknown) => {
      if (isPrimaryMessage(message)) this.#onMessage(message);
    });
    send({ type: 'ready' });
  }

  /**
   * Shuts down gracefully as `DataPlane.drain` does, then exits the process with 0. A worker
   * can get both a signal and the primary's drain request; later calls return the first
   * call's promise, so none of them exits early.
   */
  drain(timeoutMs: number): Promise<void> {
    this.#draining ??= this.#drain(timeoutMs);
    return this.#draining;
  }

  async #drain(timeoutMs: number): Promise<void> {
    if (this.#server.listening) {
      await this.#drainer.drain(timeoutMs);
    }
    await this.#upstreams.close();
    await this.#accessLog.close();
    this.#logger.info('worker stopped');
    process.exit(0);
  }

  /** Reopens the access log file after log rotation. */
  reopenAccessLog(): void {
    this.#accessLog.reopen();
  }

  #onMessage(message: PrimaryMessage): void {
    switch (message.type) {
      case 'drain':
        void this.drain(message.timeoutMs);
        return;
      case 'reopen-access-log':
        this.reopenAccessLog();
        return;
      case 'target-health':
        this.#health.update(message.unhealthy);
        return;
      case 'stage':
      case 'commit':
      case 'discard':
      case 'listen':
      case 'metrics':
        void this.#answer(message);
        return;
    }
  }

  async #answer(request: PrimaryRequest): Promise<void> {
    try {
      const result = await this.#handle(request);
      send({ type: 'reply', id: request.id, ok: true, result });
    } catch (error) {
      send({ type: 'reply', id: request.id, ok: false, error: describeBuildFailure(error) });
    }
  }

  async #handle(request: PrimaryRequest): Promise<unknown> {
    switch (request.type) {
      case 'stage':
        return this.#stage(request.snapshot);
      case 'commit':
        return this.#commit(request.version);
      case 'discard':
        this.#staged = undefined;
        return {};
      case 'listen':
        return this.#listen();
      case 'metrics':
        return this.#metrics.registry.getMetricsAsJSON();
    }
  }

  async #stage(bytes: Uint8Array): Promise<ReplyResults['stage']> {
    const start = performance.now();
    this.#staged = undefined;
    // Decodes run one at a time on the shared decoder, each in slices that let traffic through.
    const decoded = this.#decodes.then(() => this.#decoder.decodeSliced(bytes, DEFAULT_SLICE_MS));
    this.#decodes = decoded.catch(() => undefined);
    const { snapshot } = await decoded;
    if (snapshot === undefined) {
      throw new LoomError('LOOM_INTERNAL', 'the primary sent a stage request without a snapshot');
    }
    rejectFaultRoute(snapshot, this.#faults.rejectRoute);
    const header = this.#faults.workerHeader
      ? ['x-loom-worker', `${this.#options.index}-${process.pid}`]
      : [];
    const table = await stageTable(snapshot, this.#upstreams, header, this.#table);
    await waitForGate(this.#faults.stageGate);

    this.#staged = { table, snapshot };
    const buildMs = performance.now() - start;
    this.#logger.debug(
      { version: table.version, buildMs: Number(buildMs.toFixed(2)) },
      'snapshot staged',
    );
    return { buildMs, routes: table.routes };
  }

  #commit(version: number): ReplyResults['commit'] {
    const staged = this.#staged;
    if (staged === undefined || staged.table.version !== version) {
      throw new LoomError(
        'LOOM_INTERNAL',
        `worker ${this.#options.index} has no staged snapshot of version ${version}`,
      );
    }

    this.#staged = undefined;
    const table = staged.table.commit();
    this.#table = table;
    this.#metrics.tables.track(table);
    this.#retention.retain(staged.snapshot);
    this.#logger.debug({ epoch: table.epoch, version: table.version }, 'snapshot committed');
    return {};
  }

  async #listen(): Promise<ReplyResults['listen']> {
    if (!this.#server.listening) {
      const address = parseHostPort(this.#options.listen, '--listen');
      this.#server.listen(address.port, address.host);
      await once(this.#server, 'listening');
      this.#logger.info({ version: this.#table?.version ?? 0 }, 'worker listening');
    }
    return { port: (this.#server.address() as AddressInfo).port };
  }
}

function send(message: WorkerMessage): void {
  // The channel is gone once the primary exited; cluster then exits this process too. The
  // callback keeps a failed write from becoming an 'error' event that would crash the worker.
  if (process.connected) process.send?.(message, undefined, undefined, ignore);
}

function ignore(): void {}

/** Throws when the test-only fault switch names a route of the snapshot. */
function rejectFaultRoute(snapshot: Snapshot, route: string | undefined): void {
  if (route === undefined || !snapshot.routes.some((candidate) => candidate.name === route)) return;
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(route)} rejected by the test-only fault switch LOOM_FAULT_REJECT_ROUTE`,
  );
}

/** Resolves once `file` exists, checking every 50 ms; at once when `file` is undefined. */
async function waitForGate(file: string | undefined): Promise<void> {
  while (file !== undefined && !existsSync(file)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
