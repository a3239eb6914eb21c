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

/**
 * Maximum age of the last store read that finished in time, in milliseconds, for a read that
 * times out during a commit of this process to count as a busy store, not an unreachable one.
 * A commit with a later deadline extends it to that deadline.
 */
export const BUSY_STORE_GRACE_MS = 10_000;

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
  /** Overrides {@link BUSY_STORE_GRACE_MS}. */
  busyStoreGraceMs?: number;
}

/** Outcome of one store read of a readiness check. */
type StoreRead = { ok: true } | { ok: false; reason: string; timedOut: boolean };

/**
 * Decides whether the control plane is ready. Ready means both:
 *
 * 1. The snapshot cache has published a snapshot, so a proxy that connects gets a table.
 * 2. A read of the store finished within {@link STORE_CHECK_TIMEOUT_MS}. For etcd it is a
 *    linearizable read of one key, which only succeeds while the cluster has a leader and a
 *    quorum, the same condition under which writes commit. For the embedded store it succeeds
 *    while the store is open.
 *
 * A read that times out while a commit through the same store is in flight, such as a
 * large `loomctl apply`, does not make the control plane unready as long as the last read
 * that finished in time is at most {@link BUSY_STORE_GRACE_MS} old, or the commit's deadline
 * (`Store.commitDeadline`, 5 s plus 0.1 ms per key on etcd) has not passed. etcd serves a linearizable
 * read only after it has applied every earlier committed transaction, so a large transaction
 * of this process delays the read although the cluster has a quorum. A timed-out read without a commit in
 * flight, or after the grace, and a read that fails make it unready at once.
 *
 * A background check every {@link CHECK_INTERVAL_MS} sets the gRPC health status of every
 * service in {@link HEALTH_SERVICES} to SERVING or NOT_SERVING and logs each change.
 */
export class Readiness {
  readonly #options: ReadinessOptions;
  readonly #logger: Logger;
  readonly #busyStoreGraceMs: number;
  /** `Date.now()` when a store read last finished in time. */
  #lastStoreReadAt: number | undefined;
  /** True while timed-out reads are excused because of a commit in flight. */
  #storeBusy = false;
  #inFlight: Promise<ReadinessResult> | undefined;
  #last: ReadinessResult | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: ReadinessOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'readiness' });
    this.#busyStoreGraceMs = options.busyStoreGraceMs ?? BUSY_STORE_GRACE_MS;
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
    const read = await this.#readStore();
    this.#options.metrics.storeChecked(read.ok);
    if (read.ok) this.#lastStoreReadAt = Date.now();
    const busy = !read.ok && this.#isBusy(read);
    this.#recordBusy(busy, read);
    const snapshot = this.#options.cache.current?.snapshot;

    let result: ReadinessResult;
    if (snapshot === undefined) {
      result = { ready: false, reason: 'no snapshot published yet' };
    } else if (!read.ok && !busy) {
      result = { ready: false, reason: `store unreachable: ${read.reason}` };
    } else {
      result = { ready: true, epoch: snapshot.epoch, version: snapshot.version };
    }
    this.#record(result);
    return result;
  }

  /**
   * Returns true when a timed-out read is excused by a commit in flight, within the grace or
   * before the commit's deadline.
   */
  #isBusy(read: StoreRead & { ok: false }): boolean {
    const { store } = this.#options;
    if (!read.timedOut || store.commitsInFlight === 0 || this.#lastStoreReadAt === undefined) {
      return false;
    }
    const now = Date.now();
    const deadline = store.commitDeadline;
    return (
      now - this.#lastStoreReadAt <= this.#busyStoreGraceMs ||
      (deadline !== undefined && now <= deadline)
    );
  }

  #recordBusy(busy: boolean, read: StoreRead): void {
    if (busy === this.#storeBusy) return;
    this.#storeBusy = busy;
    if (busy) {
      const deadline = this.#options.store.commitDeadline;
      this.#logger.info(
        {
          reason: read.ok ? undefined : read.reason,
          commitsInFlight: this.#options.store.commitsInFlight,
          commitDeadline: deadline === undefined ? undefined : new Date(deadline).toISOString(),
          lastStoreReadAt: new Date(this.#lastStoreReadAt ?? 0).toISOString(),
        },
        'store busy with own commit',
      );
    } else {
      this.#logger.info({ storeRead: read.ok }, 'store no longer busy with own commit');
    }
  }

  /** Reads the store once with a deadline of {@link STORE_CHECK_TIMEOUT_MS}. */
  async #readStore(): Promise<StoreRead> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<StoreRead>((resolve) => {
      timer = setTimeout(
        () =>
          resolve({
            ok: false,
            reason: `no response within ${STORE_CHECK_TIMEOUT_MS} ms`,
            timedOut: true,
          }),
        STORE_CHECK_TIMEOUT_MS,
      );
    });
    const read = this.#options.store.epoch().then(
      (): StoreRead => ({ ok: true }),
      (error: unknown): StoreRead => ({
        ok: false,
        reason: error instanceof Error ? error.message : String(error),
        timedOut: false,
      }),
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
