import { Server, ServerCredentials } from '@grpc/grpc-js';

import { LoomError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { AdminServiceService } from '../proto/gen/loom/v1/admin.js';
import { AdminApi, createAdminService } from './admin/admin-service.js';
import { DEFAULT_PREFIX } from './resources.js';
import { SnapshotCache } from './snapshot/snapshot-cache.js';
import { EmbeddedStore } from './store/embedded-store.js';
import { EtcdStore } from './store/etcd-store.js';
import type { Store } from './store/store.js';
import { ProxyRegistry } from './stream/proxy-registry.js';
import { createSnapshotService, SNAPSHOT_SERVICE_DEFINITION } from './stream/snapshot-service.js';

/** Largest message either side of a stream accepts: snapshots of 100,000 routes fit with headroom. */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** Settings of a control-plane process. */
export interface ControlPlaneOptions {
  /** host:port for gRPC (snapshot stream and admin API); port 0 picks a free port. */
  listen: string;
  /** etcd endpoints; when empty, the embedded store in `dataDir` is used. */
  etcdEndpoints: string[];
  dataDir: string;
  prefix?: string;
  logger: Logger;
}

/** Server options shared by every gRPC server of the control plane. */
export const GRPC_SERVER_OPTIONS = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  // Proxies ping every 20 s on idle streams; accept down to 10 s so they are never sent GOAWAY.
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
};

/** A running control plane: store, snapshot cache, snapshot stream and admin API. */
export class ControlPlane {
  readonly store: Store;
  readonly cache: SnapshotCache;
  readonly registry = new ProxyRegistry();
  readonly #server: Server;
  readonly #logger: Logger;
  #port = 0;

  private constructor(store: Store, options: ControlPlaneOptions) {
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.store = store;
    this.#logger = options.logger;
    this.cache = new SnapshotCache({ store, prefix, logger: options.logger });
    const admin = new AdminApi({
      store,
      prefix,
      cache: this.cache,
      registry: this.registry,
      logger: options.logger,
    });
    this.#server = new Server(GRPC_SERVER_OPTIONS);
    this.#server.addService(
      SNAPSHOT_SERVICE_DEFINITION,
      createSnapshotService({ cache: this.cache, registry: this.registry, logger: options.logger }),
    );
    this.#server.addService(AdminServiceService, createAdminService(admin, options.logger));
  }

  /** Opens the store, loads the first snapshot and starts listening. */
  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    const store: Store =
      options.etcdEndpoints.length > 0
        ? new EtcdStore({ endpoints: options.etcdEndpoints, prefix: options.prefix ?? DEFAULT_PREFIX, logger: options.logger })
        : await EmbeddedStore.open({ dataDir: options.dataDir, logger: options.logger });
    const controlPlane = new ControlPlane(store, options);
    try {
      await controlPlane.cache.start();
      await controlPlane.#listen(options.listen);
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

  async #listen(listen: string): Promise<void> {
    this.#port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(listen, ServerCredentials.createInsecure(), (error, port) => {
        if (error) {
          reject(new LoomError('LOOM_INVALID_ARGUMENT', `cannot listen on ${listen}: ${error.message}`));
        } else {
          resolve(port);
        }
      });
    });
    this.#logger.info({ listen, port: this.#port }, 'control plane listening');
  }

  /** Stops accepting streams, ends open ones and closes the store. */
  async stop(): Promise<void> {
    await this.cache.stop();
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
    await this.store.close();
    this.#logger.info('control plane stopped');
  }
}
