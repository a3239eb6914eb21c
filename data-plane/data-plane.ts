import type { Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';

import { formatHostPort, parseHostPort } from '../common/address.js';
import { LoomError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ClientTlsFiles } from '../common/tls.js';
import type { Snapshot } from '../proto/gen/loom/v1/snapshot.js';
import { buildTable, describeBuildFailure } from './build-table.js';
import { AccessLog } from './observability/access-log.js';
import { createAdminServer } from './observability/admin-server.js';
import { MetricsObserver } from './observability/metrics-observer.js';
import { MetricsRetention } from './observability/metrics-retention.js';
import { ProxyMetrics } from './observability/proxy-metrics.js';
import { createProxyServer, type ProxyServerOptions } from './proxy/proxy-server.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, HttpDrainer, type DrainGrace } from './lifecycle/drain.js';
import { readiness, type TableSource } from './lifecycle/readiness.js';
import { SnapshotClient } from './snapshot-client/snapshot-client.js';
import { encodedSnapshotOf } from './snapshot-client/snapshot-decoder.js';
import {
  DEFAULT_SNAPSHOT_CACHE_MAX_AGE_MS,
  SnapshotFile,
} from './snapshot-client/snapshot-file.js';
import type { RoutingTable } from './table.js';
import { UpstreamRegistry, type UpstreamRegistryOptions } from './upstreams/registry.js';

/** Settings of a proxy process. */
export interface DataPlaneOptions {
  /** Control-plane addresses (host:port), tried in turn. */
  controlPlanes: string[];
  /** Traffic listener, host:port; port 0 picks a free port. */
  listen: string;
  /** Admin listener for /healthz, /readyz and /metrics, host:port. */
  adminListen: string;
  /** Proxy id reported to the control plane. */
  id: string;
  logger: Logger;
  /** Access log destination: `stdout` or a file path; undefined turns the access log off. */
  accessLog?: string;
  /** File of the last-known-good snapshot, served at start until a control plane answers. */
  snapshotCache?: string;
  /** Age past which the cached snapshot is not served, in milliseconds; default 24 h. */
  snapshotCacheMaxAgeMs?: number;
  /** TLS to the control plane. */
  tls?: ClientTlsFiles;
  /** Bearer token for control planes that require one from proxies. */
  token?: string;
  /** Keepalive ping interval of the snapshot stream, in milliseconds. */
  keepaliveTimeMs?: number;
  /** Time a control plane gets to open a new snapshot stream, in milliseconds; 0 means no limit. */
  controlPlaneTimeoutMs?: number;
  /** Grace periods of a drain; see `DrainGrace`. */
  drainGrace?: DrainGrace;
  /** Client limits and request handling of the traffic listener; see `createProxyServer`. */
  proxy?: Omit<ProxyServerOptions, 'getTable' | 'logger' | 'observer'>;
  /** Upstream connection settings; see `UpstreamRegistry`. */
  upstreams?: Omit<UpstreamRegistryOptions, 'logger'>;
  /**
   * Test only: nack every snapshot that contains a route of this name.
   * Defaults to the environment variable LOOM_FAULT_REJECT_ROUTE, read once here.
   */
  faultRejectRoute?: string;
}

/**
 * A proxy: the traffic listener, the admin listener and the snapshot client.
 * Every snapshot builds a new immutable table; one reference swap publishes it.
 */
export class DataPlane {
  #table: RoutingTable | undefined;
  readonly #upstreams: UpstreamRegistry;
  readonly #traffic: Server;
  readonly #admin: Server;
  readonly #client: SnapshotClient;
  readonly #logger: Logger;
  readonly #options: DataPlaneOptions;
  readonly #faultRejectRoute: string | undefined;
  readonly #drainer: HttpDrainer;
  readonly #snapshotFile: SnapshotFile | undefined;
  #tableSource: TableSource = 'control-plane';
  /** Routes and upstreams of the snapshot in service, to tell which metrics to drop. */
  /** Metrics served at `GET /metrics` on the admin listener. */
  readonly metrics = new ProxyMetrics();
  readonly #retention = new MetricsRetention(this.metrics);
  /** The per-request access log; disabled unless `accessLog` was given. */
  readonly accessLog: AccessLog;

  /** @throws LoomError `LOOM_INVALID_ARGUMENT` when the access log file cannot be opened. */
  constructor(options: DataPlaneOptions) {
    this.#options = options;
    this.#faultRejectRoute =
      options.faultRejectRoute ?? (process.env.LOOM_FAULT_REJECT_ROUTE || undefined);
    this.#logger = options.logger;
    this.accessLog = AccessLog.open(options.accessLog, options.logger);
    this.#upstreams = new UpstreamRegistry({
      ...options.upstreams,
      logger: options.logger,
      healthListener: this.metrics,
    });
    this.#traffic = createProxyServer({
      ...options.proxy,
      getTable: () => this.#table,
      logger: options.logger,
      observer: new MetricsObserver(this.metrics, this.accessLog),
    }).server;
    this.#drainer = new HttpDrainer(this.#traffic, options.logger, options.drainGrace);
    this.#snapshotFile =
      options.snapshotCache === undefined
        ? undefined
        : new SnapshotFile(options.snapshotCache, options.logger);
    this.#traffic.on('connection', (socket: Socket) => {
      this.metrics.connectionOpened();
      socket.once('close', () => this.metrics.connectionClosed());
    });
    this.#admin = createAdminServer({
      readiness: () =>
        readiness({
          table: this.#table,
          source: this.#tableSource,
          draining: this.#drainer.draining,
          controlPlaneConnected: this.#client.state === 'streaming',
          idRejection: this.#client.idRejection,
          escapedSlashes: options.proxy?.escapedSlashes ?? 'keep',
        }),
      metrics: () => this.metrics.registry,
      logger: this.#logger,
    });
    this.#client = new SnapshotClient({
      addresses: options.controlPlanes,
      proxyId: options.id,
      proxyAddress: options.listen.trim(),
      logger: options.logger,
      held: () => ({ epoch: this.#table?.epoch ?? '', version: this.#table?.version ?? 0 }),
      apply: (snapshot) => this.applySnapshot(snapshot),
      tls: options.tls,
      token: options.token,
      keepaliveTimeMs: options.keepaliveTimeMs,
      openTimeoutMs: options.controlPlaneTimeoutMs,
    });
    this.metrics.watchControlPlane(() => this.#client.state === 'streaming');
  }

  /** The table serving new requests, or undefined before the first snapshot. */
  get table(): RoutingTable | undefined {
    return this.#table;
  }

  /** Port of the traffic listener. */
  get port(): number {
    return (this.#traffic.address() as AddressInfo).port;
  }

  /** Port of the admin listener. */
  get adminPort(): number {
    return (this.#admin.address() as AddressInfo).port;
  }

  /** Starts both listeners, then the snapshot stream. */
  async start(): Promise<void> {
    const adminAddress = parseHostPort(this.#options.adminListen, '--admin-listen');
    await listen(this.#traffic, parseHostPort(this.#options.listen, '--listen'));
    try {
      await listen(this.#admin, adminAddress);
    } catch (error) {
      // Without this close, a failed start keeps the traffic port open with no stream behind it.
      await closeServer(this.#traffic);
      throw error;
    }
    await this.#serveSnapshotCache();
    this.#client.start();
    this.#logger.info(
      {
        id: this.#options.id,
        listen: formatHostPort(parseHostPort(this.#options.listen, '--listen').host, this.port),
        adminPort: this.adminPort,
        controlPlanes: this.#options.controlPlanes,
        escapedSlashes: this.#options.proxy?.escapedSlashes ?? 'keep',
      },
      'proxy listening',
    );
  }

  /**
   * Builds a table from a snapshot and swaps it in. Throws with the reason
   * when the build fails; the previous table then keeps serving.
   */
  async applySnapshot(snapshot: Snapshot, options: { fromCache?: boolean } = {}): Promise<void> {
    const start = performance.now();
    let table: RoutingTable;
    try {
      rejectFaultRoute(snapshot, this.#faultRejectRoute);
      table = await buildTable(snapshot, this.#upstreams, { previous: this.#table });
    } catch (error) {
      const reason = describeBuildFailure(error);
      this.metrics.snapshotRejected();
      this.#logger.warn(
        { epoch: snapshot.epoch, version: snapshot.version, error: reason },
        'snapshot rejected',
      );
      throw new Error(reason, { cause: error });
    }
    const buildMs = performance.now() - start;

    this.#table = table;
    this.#tableSource = options.fromCache ? 'snapshot-cache' : 'control-plane';
    if (!options.fromCache) void this.#snapshotFile?.save(snapshot, encodedSnapshotOf(snapshot));
    this.metrics.tables.track(table);
    this.#retention.retain(snapshot);
    const applyMs = performance.now() - start;
    this.metrics.snapshotApplied(table.version, table.router.size, applyMs / 1e3, buildMs / 1e3);
    this.#logger.info(
      {
        epoch: table.epoch,
        version: table.version,
        routes: table.router.size,
        buildMs: Number(buildMs.toFixed(2)),
      },
      'snapshot applied',
    );
  }

  /**
   * Shuts down gracefully: readiness turns false at once, the traffic listener
   * stops accepting, requests in flight get up to `timeoutMs` to finish, then
   * everything closes as in `stop()`.
   */
  async drain(timeoutMs = DEFAULT_DRAIN_TIMEOUT_MS): Promise<void> {
    const draining = this.#drainer.drain(timeoutMs);
    this.#client.stop();
    await draining;
    await this.stop();
  }

  /**
   * Stops the stream and both listeners, writes a snapshot still waiting for the snapshot cache
   * file, and closes upstream pools.
   */
  async stop(): Promise<void> {
    this.#client.stop();
    this.#traffic.closeAllConnections();
    this.#admin.closeAllConnections();
    await Promise.all([closeServer(this.#traffic), closeServer(this.#admin)]);
    await this.#snapshotFile?.flush();
    await this.#upstreams.close();
    await this.accessLog.close();
    this.#logger.info({ id: this.#options.id }, 'proxy stopped');
  }

  /** Serves the cached snapshot, if young enough, until the control plane sends one. */
  async #serveSnapshotCache(): Promise<void> {
    if (this.#snapshotFile === undefined) return;

    const maxAgeMs = this.#options.snapshotCacheMaxAgeMs ?? DEFAULT_SNAPSHOT_CACHE_MAX_AGE_MS;
    const cached = await this.#snapshotFile.load(maxAgeMs);
    if (cached === undefined) return;
    try {
      await this.applySnapshot(cached.snapshot, { fromCache: true });
    } catch {
      return; // applySnapshot logged the rejection; the control plane's snapshot will follow.
    }
    this.#logger.warn(
      {
        path: this.#snapshotFile.path,
        epoch: cached.snapshot.epoch,
        version: cached.snapshot.version,
        ageMs: Date.now() - cached.savedAtMs,
      },
      'serving cached snapshot',
    );
  }
}

async function listen(server: Server, address: { host: string; port: number }): Promise<void> {
  server.listen(address.port, address.host);
  await once(server, 'listening');
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Throws when the test-only fault switch names a route of the snapshot. */
function rejectFaultRoute(snapshot: Snapshot, route: string | undefined): void {
  if (route === undefined || !snapshot.routes.some((candidate) => candidate.name === route)) return;
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(route)} rejected by the test-only fault switch LOOM_FAULT_REJECT_ROUTE`,
  );
}
