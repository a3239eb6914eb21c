import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';

import { Authenticator, type CertificateRole } from '../common/auth.js';
import { LoomError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { createServerTlsCredentials, type ServerTlsFiles } from '../common/tls.js';
import { AdminServiceService } from '../proto/gen/loom/v1/admin.js';
import { AdminApi, createAdminService } from './admin/admin-service.js';
import { FleetPublisher } from './fleet/fleet-publisher.js';
import { SharedHolders } from './fleet/shared-holders.js';
import { ControlPlaneAdminServer } from './observability/admin-server.js';
import { ControlPlaneMetrics } from './observability/control-plane-metrics.js';
import {
  instrumentAdminService,
  instrumentSnapshotService,
} from './observability/instrument-services.js';
import { HEALTH_SERVICES, Readiness } from './observability/readiness.js';
import { DEFAULT_PREFIX } from './resources.js';
import { CommitTimes } from './snapshot/commit-times.js';
import { SnapshotCache } from './snapshot/snapshot-cache.js';
import { EmbeddedStore } from './store/embedded-store.js';
import type { EtcdTlsFiles } from './store/etcd-client.js';
import { EtcdStore } from './store/etcd-store.js';
import type { Store } from './store/store.js';
import {
  DEFAULT_ADMISSION_RATE,
  DEFAULT_MAX_STREAMS,
  StreamAdmission,
} from './stream/admission.js';
import { ProxyRegistry } from './stream/proxy-registry.js';
import { rejectMalformedRequests } from './malformed-requests.js';
import { createSnapshotService, SNAPSHOT_SERVICE_DEFINITION } from './stream/snapshot-service.js';

/** Interval of the check for proxies disconnected past their retention, in milliseconds. */
const PRUNE_INTERVAL_MS = 60_000;

/**
 * Default time a gRPC connection with no open stream stays open, in milliseconds. Every Loom
 * client keeps a stream open or makes its calls and exits: a proxy keeps its snapshot stream open
 * and retries a rejected one within 10 s, and loomctl makes a few calls. So only a client that
 * connects and opens no stream reaches this limit.
 */
export const DEFAULT_CONNECTION_IDLE_TIMEOUT_MS = 60_000;

/** Largest message either side of a stream accepts: snapshots of 100,000 routes fit with headroom. */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** Settings of a control-plane process. */
export interface ControlPlaneOptions {
  /** host:port for gRPC (snapshot stream and admin API); port 0 picks a free port. */
  listen: string;
  /** host:port of the HTTP listener for /healthz, /readyz and /metrics; none when undefined. */
  adminListen?: string;
  /** etcd endpoints; when empty, the embedded store in `dataDir` is used. */
  etcdEndpoints: string[];
  dataDir: string;
  prefix?: string;
  logger: Logger;
  /** TLS of the gRPC port; mutual TLS when `clientCa` is set. Files are re-read when they change. */
  tls?: ServerTlsFiles;
  /** File of `role:token` lines for loomctl and proxies. */
  tokensFile?: string;
  /** Client certificate subjects that grant admin roles. */
  certificateRoles?: CertificateRole[];
  /** Maximum of open snapshot streams; default 10,000. */
  maxStreams?: number;
  /** New snapshot streams admitted per second; default 25. */
  streamAdmissionRate?: number;
  /** Largest request message accepted, in bytes; default `MAX_MESSAGE_BYTES`. */
  maxReceiveMessageBytes?: number;
  /**
   * Time a gRPC connection with no open stream stays open, in milliseconds; default
   * `DEFAULT_CONNECTION_IDLE_TIMEOUT_MS`. 0 keeps such connections open.
   */
  connectionIdleTimeoutMs?: number;
  /** Time a snapshot stream may stay open without a hello, in milliseconds; for tests. */
  helloTimeoutMs?: number;
  /** Keepalive overrides, in milliseconds, for tests of idle streams. */
  keepalive?: { timeMs?: number; minPingIntervalMs?: number };
  /** TLS and password authentication to etcd. */
  etcdTls?: EtcdTlsFiles;
  etcdAuth?: { username: string; password: string };
  /** Interval of the etcd watch delivery check, in milliseconds; default 10,000. */
  etcdWatchCheckIntervalMs?: number;
}

/** Server options shared by every gRPC server of the control plane. */
export const GRPC_SERVER_OPTIONS = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  // Proxies ping every 20 s on idle streams. NOTE: the grpc-js 1.14 server ignores the minimum
  // ping interval and never sends GOAWAY too_many_pings, so the 10 s below has no effect yet.
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
};

/** A running control plane: store, snapshot cache, snapshot stream and admin API. */
export class ControlPlane {
  readonly store: Store;
  readonly cache: SnapshotCache;
  readonly registry: ProxyRegistry;
  readonly commitTimes = new CommitTimes();
  /** Identifier of this process among the control planes that share the store. */
  readonly replica = randomUUID();
  /** Metrics served at `GET /metrics` on the admin listener. */
  readonly metrics: ControlPlaneMetrics;
  readonly #health = new HealthImplementation(
    Object.fromEntries(HEALTH_SERVICES.map((service) => [service, 'NOT_SERVING'])),
  );
  readonly #readiness: Readiness;
  readonly #adminHttp: ControlPlaneAdminServer;
  readonly #server: Server;
  readonly #logger: Logger;
  readonly #admission: StreamAdmission;
  /** Aborted by `stop`, which ends every snapshot stream. */
  readonly #stopping = new AbortController();
  #publisher: FleetPublisher | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #closeTls: (() => void) | undefined;
  #port = 0;
  #adminPort = 0;

  private constructor(store: Store, options: ControlPlaneOptions) {
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.store = store;
    this.#logger = options.logger;
    this.registry = new ProxyRegistry({
      logger: options.logger.child({ component: 'proxy-registry' }),
    });
    this.metrics = new ControlPlaneMetrics({
      registry: this.registry,
      current: () => this.cache.current,
      commitTimes: this.commitTimes,
    });
    this.cache = new SnapshotCache({
      store,
      prefix,
      logger: options.logger,
      commitTimes: this.commitTimes,
      metrics: this.metrics,
    });
    const admin = new AdminApi({
      store,
      prefix,
      cache: this.cache,
      registry: this.registry,
      commitTimes: this.commitTimes,
      logger: options.logger,
      controlPlane: () => this.name,
      fleet: store.fleet && { store: store.fleet, replica: this.replica },
    });
    const authenticator = new Authenticator({
      tokensFile: options.tokensFile,
      certificateRoles: options.certificateRoles,
      mutualTls: options.tls?.clientCa !== undefined,
      logger: options.logger,
    });
    this.#admission = new StreamAdmission({
      maxStreams: options.maxStreams ?? DEFAULT_MAX_STREAMS,
      ratePerSecond: options.streamAdmissionRate ?? DEFAULT_ADMISSION_RATE,
      authenticator,
      logger: options.logger,
    });
    this.#server = new Server(serverOptions(options));
    const sharedHolders =
      store.fleet && new SharedHolders(store.fleet, this.replica, options.logger);
    const snapshotService = createSnapshotService({
      cache: this.cache,
      registry: this.registry,
      logger: options.logger,
      admission: this.#admission,
      sharedHolder: sharedHolders && ((id, stream) => sharedHolders.find(id, stream)),
      metrics: this.metrics,
      stopping: this.#stopping.signal,
      helloTimeoutMs: options.helloTimeoutMs,
    });
    const streams = rejectMalformedRequests(
      SNAPSHOT_SERVICE_DEFINITION,
      instrumentSnapshotService(snapshotService, this.metrics),
      options.logger,
    );
    this.#server.addService(streams.definition, streams.implementation);
    const adminService = createAdminService(admin, options.logger, (call, permission) =>
      authenticator.check(call, permission),
    );
    const adminApi = rejectMalformedRequests(
      AdminServiceService,
      instrumentAdminService(adminService, this.metrics),
      options.logger,
    );
    this.#server.addService(adminApi.definition, adminApi.implementation);
    // grpc.health.v1.Health needs no credentials, so probes can reach it.
    this.#health.addToServer(this.#server);
    this.#readiness = new Readiness({
      store,
      cache: this.cache,
      health: this.#health,
      metrics: this.metrics,
      logger: options.logger,
    });
    this.#adminHttp = new ControlPlaneAdminServer(this.metrics, this.#readiness, options.logger);
  }

  /**
   * False while the store cannot be reached, so writes would fail; snapshots
   * already published keep streaming. The embedded store is always reachable.
   */
  get storeReachable(): boolean {
    return this.store instanceof EtcdStore ? this.store.reachable : true;
  }

  /** Snapshot streams open now. */
  get openStreams(): number {
    return this.#admission.open;
  }

  /** Opens the store, loads the first snapshot and starts listening. */
  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    // The store exists before the control plane that owns the metrics; reconnects come later.
    const late: { metrics?: ControlPlaneMetrics } = {};
    const store: Store =
      options.etcdEndpoints.length > 0
        ? new EtcdStore({
            endpoints: options.etcdEndpoints,
            prefix: options.prefix ?? DEFAULT_PREFIX,
            logger: options.logger,
            tls: options.etcdTls,
            auth: options.etcdAuth,
            watchCheckIntervalMs: options.etcdWatchCheckIntervalMs,
            onWatchReconnect: () => late.metrics?.watchReconnected(),
            onWatchStall: () => late.metrics?.watchStalled(),
          })
        : await EmbeddedStore.open({ dataDir: options.dataDir, logger: options.logger });
    const controlPlane = new ControlPlane(store, options);
    late.metrics = controlPlane.metrics;
    try {
      await controlPlane.cache.start();
      // The admin listener binds first, so that the control plane reports itself ready only
      // once every listener is open.
      await controlPlane.#startAdmin(options.adminListen);
      await controlPlane.#listen(options.listen, options);
      controlPlane.#startFleet(options.logger);
      controlPlane.#startPruning();
    } catch (error) {
      await controlPlane.stop();
      throw error;
    }
    return controlPlane;
  }

  /** The port gRPC listens on. */
  get port(): number {
    return this.#port;
  }

  /** This control plane as `status` shows it: host name and gRPC port; empty before it listens. */
  get name(): string {
    return this.#port === 0 ? '' : `${hostname()}:${this.#port}`;
  }

  /** Shares the proxy records with the other replicas, when the store can. */
  #startFleet(logger: Logger): void {
    if (!this.store.fleet) return;
    this.#publisher = new FleetPublisher({
      registry: this.registry,
      fleet: this.store.fleet,
      replica: this.replica,
      controlPlane: this.name,
      logger,
    });
    this.#publisher.start();
  }

  /** Forgets proxies disconnected for longer than the registry keeps them, once a minute. */
  #startPruning(): void {
    this.#pruneTimer = setInterval(() => {
      const forgotten = this.registry.prune();
      if (forgotten > 0) {
        this.#logger.info({ proxies: forgotten }, 'disconnected proxies forgotten');
      }
    }, PRUNE_INTERVAL_MS);
    this.#pruneTimer.unref();
  }

  /** The port of the HTTP admin listener; 0 when there is none. */
  get adminPort(): number {
    return this.#adminPort;
  }

  async #startAdmin(adminListen: string | undefined): Promise<void> {
    await this.#readiness.start();
    if (adminListen === undefined) return;

    await this.#adminHttp.listen(adminListen);
    this.#adminPort = this.#adminHttp.port;
    this.#logger.info({ adminListen, port: this.#adminPort }, 'admin listening');
  }

  async #listen(listen: string, options: ControlPlaneOptions): Promise<void> {
    let serverCredentials = ServerCredentials.createInsecure();
    if (options.tls !== undefined) {
      const tls = createServerTlsCredentials(options.tls, this.#logger);
      serverCredentials = tls.credentials;
      this.#closeTls = tls.close;
    }
    this.#port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(listen, serverCredentials, (error, port) => {
        if (error) {
          reject(
            new LoomError('LOOM_INVALID_ARGUMENT', `cannot listen on ${listen}: ${error.message}`),
          );
        } else {
          resolve(port);
        }
      });
    });
    this.#logger.info(
      {
        listen,
        port: this.#port,
        tls: options.tls !== undefined,
        mutualTls: !!options.tls?.clientCa,
        connectionIdleTimeoutMs:
          options.connectionIdleTimeoutMs ?? DEFAULT_CONNECTION_IDLE_TIMEOUT_MS,
      },
      'control plane listening',
    );
  }

  /** Stops accepting streams, ends open ones and closes the store. */
  async stop(): Promise<void> {
    this.#readiness.stop();
    clearInterval(this.#pruneTimer);
    await this.#adminHttp.close();
    await this.cache.stop();
    this.#stopping.abort();
    // Admin calls in progress may finish within 2 s. A Watch stream of grpc-health-check 2.1
    // never ends by itself, so a client that watches health delays the shutdown by those 2 s.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, 2_000);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.#admission.close();
    this.#closeTls?.();
    await this.#publisher?.stop();
    await this.store.close();
    this.#logger.info('control plane stopped');
  }
}

/**
 * Returns the options of the gRPC server. `grpc.max_connection_idle_ms` makes grpc-js 1.14
 * close an HTTP/2 session once no stream has been open on it for that long, so a snapshot
 * stream keeps its connection however quiet it is, and so does an admin call in progress.
 * On a plaintext port, Node.js creates the session when the TCP connection opens, so the
 * limit also closes a connection that never sends the HTTP/2 preface. On a TLS port, the
 * session starts after the handshake, and Node.js's TLS handshake timeout (`handshakeTimeout`
 * of `tls.createServer`, 120 s by default) closes a connection that never completes one.
 *
 * NOTE: grpc-js ends an idle session with the graceful `session.close()`, which Node.js 20.20
 * follows with a destroy of the socket because no stream is open. The idle-connections test
 * checks this on the Node.js version that runs it, and has run on 20.20 only.
 */
function serverOptions(options: ControlPlaneOptions): Record<string, number> {
  const idleMs = options.connectionIdleTimeoutMs ?? DEFAULT_CONNECTION_IDLE_TIMEOUT_MS;
  return {
    ...GRPC_SERVER_OPTIONS,
    ...(idleMs === 0 ? {} : { 'grpc.max_connection_idle_ms': idleMs }),
    'grpc.max_receive_message_length': options.maxReceiveMessageBytes ?? MAX_MESSAGE_BYTES,
    ...(options.keepalive?.timeMs === undefined
      ? {}
      : { 'grpc.keepalive_time_ms': options.keepalive.timeMs }),
    ...(options.keepalive?.minPingIntervalMs === undefined
      ? {}
      : { 'grpc.http2.min_ping_interval_without_data_ms': options.keepalive.minPingIntervalMs }),
  };
}
