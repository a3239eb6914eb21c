import type { HealthImplementation } from 'grpc-health-check';

import type { Logger } from '../../common/logger.js';
import type { SnapshotCache } from '../snapshot/snapshot-cache.js';
import type { Store } from '../store/store.js';
import type { ControlPlaneMetrics } from './control-plane-metrics.js';

/** gRPC services whose health status follows readiness; `''` is the whole server. */
export const HEALTH_SERVICES = ['', 'loom.v1.SnapshotService', 'loom.v1.AdminService'];

/** Deadline of the store read of one readiness check, in milliseconds. */
export const STORE_CHECK_TIMEOUT_MS = 1_000;

/** Interval of the background readiness check that drives gRPC health, in milliseconds. */
export const CHECK_INTERVAL_MS = 2_000;

/** Outcome of one readiness check. */
export interface ReadinessResult {
  ready: boolean;
  /** Reason the control plane is not ready; absent when ready. */
  reason?: string;
  epoch?: string;
  version?: number;
}

/** Dependencies of {@link Readiness}. */
export interface ReadinessOptions {
  store: Store;
  cache: SnapshotCache;
  health: HealthImplementation;
  metrics: ControlPlaneMetrics;
  logger: Logger;
}

/**
 * Decides whether the control plane is ready. Ready means both:
 *
 * 1. The snapshot cache has published a snapshot, so a proxy that connects gets a table.
 * 2. A read of the store finished within {@link STORE_CHECK_TIMEOUT_MS}. For etcd it is a
 *    linearizable read of one key, which only succeeds while the cluster has a leader and a
 *    quorum, the same condition under which writes commit. For the embedded store it succeeds
 *    while the store is open.
 *
 * A background check every {@link CHECK_INTERVAL_MS} sets the gRPC health status of every
 * service in {@link HEALTH_SERVICES} to SERVING or NOT_SERVING and logs each change.
 */
export class Readiness {
  readonly #options: ReadinessOptions;
  readonly #logger: Logger;
  #inFlight: Promise<ReadinessResult> | undefined;
  #last: ReadinessResult | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: ReadinessOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'readiness' });
  }

  /** Runs the first check and starts the background checks. */
  async start(): Promise<void> {
    await this.check();
    this.#timer = setInterval(() => void this.check(), CHECK_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Stops the background checks and reports NOT_SERVING to gRPC health clients. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    for (const service of HEALTH_SERVICES) this.#options.health.setStatus(service, 'NOT_SERVING');
  }

  /** Checks readiness now; concurrent callers share one check. */
  check(): Promise<ReadinessResult> {
    this.#inFlight ??= this.#evaluate().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #evaluate(): Promise<ReadinessResult> {
    const storeError = await this.#readStore();
    this.#options.metrics.storeChecked(storeError === undefined);
    const snapshot = this.#options.cache.current?.snapshot;

    let result: ReadinessResult;
    if (snapshot === undefined) {
      result = { ready: false, reason: 'no snapshot published yet' };
    } else if (storeError !== undefined) {
      result = { ready: false, reason: `store unreachable: ${storeError}` };
    } else {
      result = { ready: true, epoch: snapshot.epoch, version: snapshot.version };
    }
    this.#record(result);
    return result;
  }

  /** Returns undefined when the store read succeeded in time, else the reason it failed. */
  async #readStore(): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(
        () => resolve(`no response within ${STORE_CHECK_TIMEOUT_MS} ms`),
        STORE_CHECK_TIMEOUT_MS,
      );
    });
    const read = this.#options.store.epoch().then(
      () => undefined,
      (error: unknown) => (error instanceof Error ? error.message : String(error)),
    );
    try {
      return await Promise.race([read, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #record(result: ReadinessResult): void {
    const previous = this.#last;
    this.#last = result;
    if (this.#stopped || previous?.ready === result.ready) return;

    const status = result.ready ? 'SERVING' : 'NOT_SERVING';
    for (const service of HEALTH_SERVICES) this.#options.health.setStatus(service, status);
    if (result.ready) {
      this.#logger.info({ epoch: result.epoch, version: result.version }, 'control plane ready');
    } else {
      this.#logger.warn({ reason: result.reason }, 'control plane not ready');
    }
  }
}
