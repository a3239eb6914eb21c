import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { PublishedSnapshot } from '../snapshot/build-snapshot.js';
import type { CommitTimes } from '../snapshot/commit-times.js';
import type { ProxyRegistry } from '../stream/proxy-registry.js';

/** Interval of the event-loop delay samples behind `nodejs_eventloop_lag_*`, in ms. */
const EVENT_LOOP_SAMPLE_MS = 100;

/** Versions that keep their own ack and nack series; older versions' series are removed. */
export const VERSION_SERIES_LIMIT = 10;

/** Result label of `loom_control_plane_applies_total`. */
export type ApplyResult = 'committed' | 'unchanged' | 'dry_run' | 'error';

/**
 * Label of `loom_control_plane_duplicate_proxy_id_rejections_total`: the replica with the stream
 * that has the id, this one or another one named in the shared records.
 */
export type DuplicateIdHolder = 'this_replica' | 'other_replica';

/** What the metrics read from the rest of the control plane when scraped. */
export interface ControlPlaneMetricsSources {
  registry: ProxyRegistry;
  /** Returns the newest published snapshot, or undefined before the first one. */
  current(): PublishedSnapshot | undefined;
  /** When each version was committed; the watch lag is measured from it. */
  commitTimes?: CommitTimes;
}

const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Deliveries kept while they wait for the commit response of the same revision. */
const UNMATCHED_DELIVERIES_LIMIT = 1024;

/**
 * Every metric of one control-plane process, in its own prom-client registry that the admin
 * HTTP listener serves at `GET /metrics`. Version labels are bounded: only the
 * {@link VERSION_SERIES_LIMIT} newest versions keep their ack and nack series.
 */
export class ControlPlaneMetrics {
  readonly registry = new Registry();
  readonly #sources: ControlPlaneMetricsSources;
  readonly #acks: Counter<'version'>;
  readonly #unsentAcks: Counter;
  readonly #nacks: Counter<'version'>;
  readonly #allNacks: Counter;
  readonly #versions: number[] = [];
  readonly #applies: Counter<'result'>;
  readonly #applyErrors: Counter<'code'>;
  readonly #watchLag: Histogram;
  /** Delivery times of revisions whose commit time was unknown, by revision. */
  readonly #unmatchedDeliveries = new Map<number, { epoch: string; atMs: number }>();
  readonly #watchReconnects: Counter;
  readonly #watchStalls: Counter;
  readonly #resyncs: Counter;
  readonly #published: Counter;
  readonly #buildSeconds: Histogram;
  readonly #encodedBytes: Gauge;
  readonly #storeUp: Gauge;
  readonly #duplicateIds: Counter<'holder'>;

  constructor(sources: ControlPlaneMetricsSources) {
    this.#sources = sources;
    const registers = [this.registry];
    // prom-client samples event-loop delay every 10 ms by default. That cost an idle control
    // plane about 4 ms of CPU per second here, and every 100 ms under 1 ms.
    collectDefaultMetrics({
      register: this.registry,
      eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
    });

    new Gauge({
      name: 'loom_control_plane_connected_proxies',
      help: 'Proxies with an open snapshot stream to this control plane.',
      registers,
      collect() {
        this.set(sources.registry.list().filter((proxy) => proxy.connected).length);
      },
    });
    new Gauge({
      name: 'loom_control_plane_proxies_current',
      help: 'Connected proxies that acked the newest published snapshot of this control plane.',
      registers,
      collect() {
        this.set(countCurrent(sources));
      },
    });
    new Gauge({
      name: 'loom_control_plane_snapshot_version',
      help: 'Version of the newest published snapshot; 0 before the first one.',
      registers,
      collect() {
        this.set(sources.current()?.snapshot.version ?? 0);
      },
    });
    this.#acks = new Counter({
      name: 'loom_control_plane_acks_total',
      help: 'Snapshot versions acked by proxies, by version (newest versions only).',
      labelNames: ['version'],
      registers,
    });
    this.#unsentAcks = new Counter({
      name: 'loom_control_plane_unsent_acks_total',
      help:
        'Acks ignored because they name a version this control plane never sent to that ' +
        'proxy id and that its hello did not report. Only a broken or hostile client sends one.',
      registers,
    });
    this.#nacks = new Counter({
      name: 'loom_control_plane_nacks_total',
      help: 'Snapshot versions nacked by proxies, by version (newest versions only).',
      labelNames: ['version'],
      registers,
    });
    // A versioned series appears at 1 when its version is first nacked, so increase() and
    // rate() miss that nack. This series exists from the start at 0 and counts every nack.
    this.#allNacks = new Counter({
      name: 'loom_control_plane_snapshot_nacks_total',
      help: 'Snapshots nacked by proxies, of every version. Alert on its increase.',
      registers,
    });
    this.#applies = new Counter({
      name: 'loom_control_plane_applies_total',
      help: 'loomctl apply and diff calls, by result: committed, unchanged, dry_run (apply --dry-run or diff) or error.',
      labelNames: ['result'],
      registers,
    });
    this.#applyErrors = new Counter({
      name: 'loom_control_plane_apply_errors_total',
      help: 'loomctl apply and diff calls that failed, by Loom error code.',
      labelNames: ['code'],
      registers,
    });
    this.#watchLag = new Histogram({
      name: 'loom_control_plane_watch_lag_seconds',
      help:
        'Seconds from a commit by this control plane to its delivery by the store watch; ' +
        '0 when the watch delivered it before the commit response arrived.',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#watchReconnects = new Counter({
      name: 'loom_control_plane_etcd_watch_reconnects_total',
      help: 'Times the etcd watch stream broke and was re-established by the etcd client.',
      registers,
    });
    this.#watchStalls = new Counter({
      name: 'loom_control_plane_etcd_watch_stalls_total',
      help: 'Times the delivery check found an etcd watch stream that stopped delivering.',
      registers,
    });
    this.#resyncs = new Counter({
      name: 'loom_control_plane_store_resyncs_total',
      help:
        'Times the snapshot cache lost or resumed its watch, or failed a read, and ' +
        'scheduled a full read again.',
      registers,
    });
    this.#published = new Counter({
      name: 'loom_control_plane_snapshots_published_total',
      help: 'Snapshots published to proxies: built with a new content hash or epoch.',
      registers,
    });
    this.#buildSeconds = new Histogram({
      name: 'loom_control_plane_snapshot_build_seconds',
      help: 'Seconds to encode, hash and publish one snapshot.',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#encodedBytes = new Gauge({
      name: 'loom_control_plane_snapshot_encoded_bytes',
      help: 'Size of the newest published snapshot as sent on the wire, in bytes.',
      registers,
    });
    this.#storeUp = new Gauge({
      name: 'loom_control_plane_store_up',
      help: '1 when the last readiness check read the store within its deadline, else 0.',
      registers,
    });
    this.#duplicateIds = new Counter({
      name: 'loom_control_plane_duplicate_proxy_id_rejections_total',
      help:
        'Proxy streams rejected with ALREADY_EXISTS because another proxy process holds the ' +
        'proxy id, by where its stream is: this_replica, or other_replica (shared records).',
      labelNames: ['holder'],
      registers,
    });
    for (const result of ['committed', 'unchanged', 'dry_run', 'error'] as const) {
      this.#applies.inc({ result }, 0);
    }
    for (const holder of ['this_replica', 'other_replica'] as const) {
      this.#duplicateIds.inc({ holder }, 0);
    }
  }

  /** Counts an ack of `version` by one proxy. */
  acked(version: number): void {
    if (this.#trackVersion(version)) this.#acks.inc({ version: String(version) });
  }

  /** Counts an ack ignored because its version was never sent to the proxy. */
  unsentAcked(): void {
    this.#unsentAcks.inc();
  }

  /** Counts a nack of `version` by one proxy. */
  nacked(version: number): void {
    this.#allNacks.inc();
    if (this.#trackVersion(version)) this.#nacks.inc({ version: String(version) });
  }

  /** Counts one finished apply; `code` is the Loom error code when it failed. */
  applied(result: ApplyResult, code?: string): void {
    this.#applies.inc({ result });
    if (result === 'error') this.#applyErrors.inc({ code: code ?? 'LOOM_INTERNAL' });
  }

  /**
   * Records the watch delivering `revision`. When this control plane committed that revision
   * and noted the time already, the difference is the watch lag. Otherwise the delivery waits
   * for {@link commitConfirmed}, because the watch often delivers before the commit response
   * arrives on the other connection.
   */
  watchDelivered(epoch: string, revision: number): void {
    const atMs = Date.now();
    const committedAtMs = this.#sources.commitTimes?.get(epoch, revision) ?? 0;
    if (committedAtMs > 0) {
      this.#watchLag.observe(Math.max(0, atMs - committedAtMs) / 1e3);
      return;
    }

    this.#unmatchedDeliveries.set(revision, { epoch, atMs });
    if (this.#unmatchedDeliveries.size > UNMATCHED_DELIVERIES_LIMIT) {
      const oldest = this.#unmatchedDeliveries.keys().next().value as number;
      this.#unmatchedDeliveries.delete(oldest);
    }
  }

  /**
   * Records that this control plane's commit of `revision` was confirmed by the store at
   * `committedAtMs`. When the watch delivered the revision earlier, the lag is the time from
   * confirmation to delivery, 0 when the delivery came first. `epoch`, when known, must match
   * the delivery's.
   */
  commitConfirmed(epoch: string | undefined, revision: number, committedAtMs: number): void {
    const delivery = this.#unmatchedDeliveries.get(revision);
    if (delivery === undefined || (epoch !== undefined && epoch !== delivery.epoch)) return;

    this.#unmatchedDeliveries.delete(revision);
    this.#watchLag.observe(Math.max(0, delivery.atMs - committedAtMs) / 1e3);
  }

  /** Counts a reconnect of the etcd watch stream. */
  watchReconnected(): void {
    this.#watchReconnects.inc();
  }

  /** Counts a stalled etcd watch found by the delivery check. */
  watchStalled(): void {
    this.#watchStalls.inc();
  }

  /** Counts a full read of the store scheduled after a lost or resumed watch, or a failed read. */
  resyncScheduled(): void {
    this.#resyncs.inc();
  }

  /** Records a published snapshot and the seconds its build took. */
  snapshotPublished(published: PublishedSnapshot, buildSeconds: number): void {
    this.#published.inc();
    this.#buildSeconds.observe(buildSeconds);
    this.#encodedBytes.set(published.encoded.length);
  }

  /** Counts a proxy stream rejected because another proxy process is connected under its id. */
  duplicateProxyIdRejected(holder: DuplicateIdHolder): void {
    this.#duplicateIds.inc({ holder });
  }

  /** Records the result of a readiness check of the store. */
  storeChecked(up: boolean): void {
    this.#storeUp.set(up ? 1 : 0);
  }

  /**
   * Adds `version` to the versions with series. Returns false when it is older than all of them,
   * or newer than the newest snapshot this control plane published, as in an ack of a version
   * never sent. Such a version would push out the series of real versions for good.
   */
  #trackVersion(version: number): boolean {
    if (this.#versions.includes(version)) return true;
    const newest = this.#sources.current()?.snapshot.version ?? 0;
    if (version > newest) return false;
    if (this.#versions.length >= VERSION_SERIES_LIMIT && version < this.#versions[0]) return false;

    this.#versions.push(version);
    this.#versions.sort((a, b) => a - b);
    while (this.#versions.length > VERSION_SERIES_LIMIT) {
      const oldest = String(this.#versions.shift());
      this.#acks.remove({ version: oldest });
      this.#nacks.remove({ version: oldest });
    }
    return true;
  }
}

function countCurrent(sources: ControlPlaneMetricsSources): number {
  const snapshot = sources.current()?.snapshot;
  if (snapshot === undefined) return 0;
  return sources.registry
    .list()
    .filter(
      (proxy) =>
        proxy.connected &&
        proxy.ackedEpoch === snapshot.epoch &&
        proxy.ackedVersion >= snapshot.version,
    ).length;
}
