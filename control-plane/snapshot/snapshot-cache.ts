import { Backoff } from '../../common/backoff.js';
import type { Logger } from '../../common/logger.js';
import type { ControlPlaneMetrics } from '../observability/control-plane-metrics.js';
import type { RangeResult, Store, Watch, WatchBatch } from '../store/store.js';
import { encodeContent, publishContent, type PublishedSnapshot } from './build-snapshot.js';
import type { CommitTimes } from './commit-times.js';
import { ConfigState } from './config-state.js';

type Listener = (published: PublishedSnapshot) => void;

/** Sync states; every change goes through `#transition`, which logs it. */
export type SyncState = 'idle' | 'syncing' | 'watching' | 'stopped';

/**
 * Keeps the newest snapshot of the store's resources. It reads the prefix at
 * one revision, watches from the next, coalesces batches that arrive together
 * into one build, and publishes a snapshot only when the content hash or the
 * epoch changes. When the watch fails (etcd down, revision compacted, or the
 * epoch changed because the store's prefix was deleted or its epoch renewed),
 * it reads everything again with backoff. When the watch resumes a broken
 * stream, it reads everything again at once. So its snapshot always equals a
 * fresh read.
 */
export class SnapshotCache {
  #state: SyncState = 'idle';
  #current: PublishedSnapshot | undefined;
  #epoch = '';
  #watch: Watch | undefined;
  /** Number of `#sync` calls so far. A sync that a later one superseded stops at its next step. */
  #syncRuns = 0;
  #buildScheduled = false;
  #probing = false;
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #config: ConfigState;
  readonly #listeners = new Set<Listener>();
  readonly #backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
  readonly #store: Store;
  readonly #prefix: string;
  readonly #logger: Logger;
  readonly #commitTimes: CommitTimes | undefined;
  readonly #metrics: ControlPlaneMetrics | undefined;

  /**
   * `commitTimes`, when given, records when the watch delivered each revision; `metrics`
   * counts builds, watch deliveries and resyncs.
   */
  constructor(options: {
    store: Store;
    prefix: string;
    logger: Logger;
    commitTimes?: CommitTimes;
    metrics?: ControlPlaneMetrics;
  }) {
    this.#store = options.store;
    this.#prefix = options.prefix;
    this.#commitTimes = options.commitTimes;
    this.#metrics = options.metrics;
    this.#logger = options.logger.child({ component: 'snapshot-cache' });
    this.#config = new ConfigState(options.prefix, this.#logger, { reportValues: true });
  }

  /** The newest published snapshot, or undefined before the first read succeeded. */
  get current(): PublishedSnapshot | undefined {
    return this.#current;
  }

  get state(): SyncState {
    return this.#state;
  }

  /** The store this cache reads. */
  get store(): Store {
    return this.#store;
  }

  /** Key prefix of the resources this cache reads. */
  get prefix(): string {
    return this.#prefix;
  }

  /** Starts syncing in the background; resolves after the first attempt, successful or not. */
  async start(): Promise<void> {
    await this.#sync();
  }

  /** Registers a listener for every published snapshot; returns its removal. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async stop(): Promise<void> {
    this.#transition('stopped');
    clearTimeout(this.#retryTimer);
    await this.#watch?.cancel();
    this.#watch = undefined;
  }

  /**
   * Reads the prefix and its epoch, publishes them, and watches from the next revision. A
   * watch failure, a resumed watch and a renewed epoch each start a new sync, so a sync
   * that a later one superseded ends without touching the state.
   */
  async #sync(): Promise<void> {
    if (this.#state === 'stopped') return;
    const run = ++this.#syncRuns;
    clearTimeout(this.#retryTimer);
    this.#transition('syncing');
    const previous = this.#watch;
    this.#watch = undefined;
    await previous?.cancel();

    try {
      let { range, epoch } = await this.#readWithEpoch();
      if (this.#isStopped() || run !== this.#syncRuns) return;
      if (epoch === this.#epoch && this.#historyDiverged(range)) {
        await this.#renewEpoch(epoch, this.#config.revision, range.revision);
        // Read again, so that the watch starts after the renewal's write of the generation
        // key. A watch that saw that write would fail as an epoch change.
        ({ range, epoch } = await this.#readWithEpoch());
        if (this.#isStopped() || run !== this.#syncRuns) return;
      }

      if (this.#epoch !== '' && epoch !== this.#epoch) {
        this.#logger.warn(
          { from: this.#epoch, to: epoch, version: range.revision },
          'store epoch changed',
        );
      }
      this.#epoch = epoch;
      this.#config.reset(range);
      this.#publish();
      const watch = this.#store.watch(this.#prefix, range.revision + 1, {
        onBatch: (batch) => this.#onBatch(batch),
        onError: (error) => this.#onWatchError(error),
        onResumed: () => this.#onWatchResumed(watch),
      });
      this.#watch = watch;
      this.#backoff.reset();
      this.#transition('watching');
    } catch (error) {
      if (run === this.#syncRuns) this.#scheduleResync(error);
    }
  }

  /**
   * Reads the prefix and the epoch of that read. etcd returns the epoch with the keys, at
   * their revision, because a separate read could return the epoch from before another
   * replica renewed it. When the store has no epoch yet (a new or wiped etcd, or one whose
   * prefix was deleted), `epoch()` creates it, or returns the one another replica created
   * first.
   */
  async #readWithEpoch(): Promise<{ range: RangeResult; epoch: string }> {
    const range = await this.#store.range(this.#prefix);
    return { range, epoch: range.epoch ?? (await this.#store.epoch()) };
  }

  /**
   * Returns true when a read in the current epoch cannot continue the history
   * this cache followed: its revision is lower, or it is the same revision with
   * other content. Either means that the store was restored from a backup.
   */
  #historyDiverged(range: RangeResult): boolean {
    const seen = this.#config.revision;
    if (range.revision !== seen) return range.revision < seen;

    const before = encodeContent(this.#config.routes(), this.#config.upstreams());
    const check = new ConfigState(this.#prefix, this.#logger);
    check.reset(range);
    return encodeContent(check.routes(), check.upstreams()).hash !== before.hash;
  }

  /**
   * Checks the store when a proxy holds a newer version of the current epoch
   * than this control plane published. A replica that only lags catches up
   * through its watch; but when the store itself is below that version, its
   * history went backwards (a restore from backup), so the epoch is renewed and
   * the store read again, and proxies accept the restored state.
   */
  noteHeldVersion(epoch: string, version: number): void {
    const published = this.#current?.snapshot;
    if (!published || epoch !== published.epoch || version <= published.version) return;
    if (this.#probing || this.#state !== 'watching') return;

    this.#probing = true;
    void this.#probeHistory(epoch, version).finally(() => {
      this.#probing = false;
    });
  }

  async #probeHistory(epoch: string, version: number): Promise<void> {
    try {
      // A range over a folder that holds no keys returns just the store's current revision.
      const probe = await this.#store.range(`${this.#prefix}__revision-probe/`);
      if (probe.revision >= version || this.#isStopped()) return;

      await this.#renewEpoch(epoch, version, probe.revision);
      void this.#sync();
    } catch (error) {
      this.#logger.warn({ err: error }, 'store history check failed');
    }
  }

  async #renewEpoch(stale: string, seenRevision: number, storeRevision: number): Promise<string> {
    const epoch = await this.#store.renewEpoch(stale);
    this.#logger.warn(
      { stale, epoch, seenRevision, storeRevision },
      'store history went backwards, epoch renewed',
    );
    return epoch;
  }

  #onBatch(batch: WatchBatch): void {
    // Before the commit time below is recorded, so that only the admin API's own time counts.
    this.#metrics?.watchDelivered(this.#epoch, batch.revision);
    if (!this.#config.apply(batch)) return;

    this.#commitTimes?.record(this.#epoch, batch.revision);
    if (this.#buildScheduled) return;

    // Batches that arrive in the same turn of the event loop become one snapshot.
    this.#buildScheduled = true;
    setImmediate(() => {
      this.#buildScheduled = false;
      this.#publishWatched();
    });
  }

  /**
   * Reads the store again after the watch re-established its stream. While the
   * stream was down, etcd may have been wiped or restored and written past the
   * watch's revision, so neither the resumed stream nor the epoch read before is
   * trusted. The read publishes nothing when the content and epoch are unchanged.
   */
  #onWatchResumed(watch: Watch): void {
    if (this.#watch !== watch || this.#state !== 'watching') return;

    this.#metrics?.resyncScheduled();
    this.#logger.info({ revision: this.#config.revision }, 'watch resumed, reading store again');
    // `#sync` cancels the watch before it returns to the event loop, so no batch of the
    // resumed stream reaches the old state.
    void this.#sync();
  }

  #onWatchError(error: Error): void {
    if (this.#state === 'stopped') return;
    this.#logger.warn({ err: error, revision: this.#config.revision }, 'watch lost');
    this.#watch = undefined;
    this.#scheduleResync(error);
  }

  #scheduleResync(error: unknown): void {
    if (this.#state === 'stopped') return;
    const delayMs = Math.round(this.#backoff.next());
    this.#metrics?.resyncScheduled();
    this.#logger.warn({ err: error, delayMs }, 'store sync failed, retrying');
    this.#transition('idle');
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => void this.#sync(), delayMs);
  }

  /**
   * Publishes the state a watch batch changed. A value that cannot be encoded must not stop the
   * process, because every replica reads the same store and would stop too. Proxies then keep
   * the previous snapshot.
   */
  #publishWatched(): void {
    try {
      this.#publish();
    } catch (error) {
      this.#logger.error(
        { err: error, epoch: this.#epoch, version: this.#config.revision },
        'snapshot not published; proxies keep the previous version until the store changes',
      );
    }
  }

  #publish(): void {
    const start = performance.now();
    const content = encodeContent(this.#config.routes(), this.#config.upstreams());
    const previous = this.#current?.snapshot;
    if (previous && previous.hash === content.hash && previous.epoch === this.#epoch) {
      this.#logger.debug(
        { epoch: this.#epoch, version: this.#config.revision, hash: content.hash },
        'snapshot unchanged',
      );
      return;
    }

    const next = publishContent(this.#epoch, this.#config.revision, content);
    this.#current = next;
    const buildMs = performance.now() - start;
    this.#metrics?.snapshotPublished(next, buildMs / 1e3);
    this.#logger.info(
      {
        epoch: next.snapshot.epoch,
        version: next.snapshot.version,
        routes: next.snapshot.routes.length,
        upstreams: next.snapshot.upstreams.length,
        bytes: next.encoded.length,
        buildMs: Number(buildMs.toFixed(2)),
      },
      'snapshot published',
    );
    for (const listener of this.#listeners) listener(next);
  }

  #isStopped(): boolean {
    return this.#state === 'stopped';
  }

  #transition(next: SyncState): void {
    if (this.#state === next) return;
    this.#logger.debug({ from: this.#state, to: next }, 'sync state changed');
    this.#state = next;
  }
}
