import { setTimeout as sleep } from 'node:timers/promises';

import { Range, type Etcd3, type IEvent, type IWatchResponse, type Watcher } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { isRevisionOutOfRange, toStoreError } from './etcd-errors.js';
import { isMetaKey } from './key-space.js';
import type { Watch, WatchBatch, WatchEvent, WatchHandlers } from './store.js';

/**
 * States of an etcd watch. `failed` and `canceled` are final: a failed watch
 * has called `onError` once, a canceled one never does.
 */
type WatchState = 'connecting' | 'watching' | 'disconnected' | 'failed' | 'canceled';

const TRANSITIONS: Record<WatchState, WatchState[]> = {
  connecting: ['watching', 'disconnected', 'failed', 'canceled'],
  watching: ['disconnected', 'failed', 'canceled'],
  disconnected: ['watching', 'failed', 'canceled'],
  failed: [],
  canceled: [],
};

/** Dependencies of an {@link EtcdWatch}, provided by its store. */
export interface EtcdWatchContext {
  /** Client for reads. */
  client: Etcd3;
  /** Client whose connection carries the watch stream. */
  watchClient: Etcd3;
  endpoints: string[];
  /** Store root; keys under it with a `__meta` segment are hidden. */
  root: string;
  /** The key whose value sets the store's epoch; see {@link EtcdWatch} for its events. */
  generationKey: string;
  logger: Logger;
  /** Interval of the delivery check, in milliseconds. */
  checkIntervalMs: number;
  /**
   * Time a change under the prefix may stay undelivered, with the watch making no progress,
   * before the watch counts as stalled, in milliseconds. Defaults to `checkIntervalMs`.
   */
  stallGraceMs?: number;
  /** Maximum wait for etcd to confirm a cancellation, in milliseconds. */
  cancelTimeoutMs: number;
  /**
   * Reads the revision of the last commit under a directory (a prefix ending with `/`). The
   * delivery check calls it first, because it is one key read and also updates the store's
   * record of whether etcd is reachable.
   */
  lastWriteRevision(directory: string): Promise<number>;
  /** Called when this watch stopped delivering on `watchClient`'s connection. */
  onStall(watchClient: Etcd3): void;
  /** Called each time a broken watch stream is re-established; for metrics. */
  onReconnect?(): void;
  /**
   * Called when a watch whose stream broke hears from etcd again, whether it resumes or fails
   * because etcd's history restarted, as after a restore from a backup.
   */
  onStreamBack?(): void;
}

/**
 * A watch of one prefix on etcd that delivers one batch per revision.
 *
 * The etcd3 client (v1.1.2) reconnects a broken watch stream by itself and
 * resumes from the header revision of the last response plus one. etcd sets
 * that header to its current revision, not to the revision of the events sent,
 * so a stream that breaks while etcd is still replaying history would skip
 * events. This watch therefore tracks the revision after the last event it
 * delivered and sets it as the watcher's start revision on every disconnect.
 *
 * The watch fails with a retryable `LOOM_STORE_UNAVAILABLE` when etcd cancels
 * it, as etcd does when the start revision has been compacted. It also fails
 * when etcd's history restarts under it, because a lower revision or another
 * cluster id after a reconnect means that etcd was wiped or restored.
 *
 * A periodic delivery check catches a stream that stays open but stops
 * delivering. It finds the last change under the prefix from any writer: a
 * commit through any `EtcdStore`, or a put or delete by etcdctl or another
 * client. The watch counts as stalled when that change is past the last
 * revision delivered and the watch makes no progress for `stallGraceMs`. It then
 * logs `etcd watch stalled` once and the store replaces the watch connection.
 * The watch then fails with a retryable error, so the caller reads the prefix
 * again.
 *
 * A wiped or restored etcd whose revision has already passed the watch's by the
 * time the watch reconnects looks like the same history. The watch therefore
 * calls `onResumed` after every reconnect, and callers that must not serve stale
 * data read the prefix and the epoch again.
 *
 * The generation key is hidden like every `__meta` key. When the prefix contains
 * it, the watch also fails with a retryable error, before it delivers that
 * revision's batch, when a transaction deletes the key or replaces its value.
 * `etcdctl del --prefix` on the store root deletes it, which starts a new epoch,
 * and `renewEpoch` replaces it. The put that creates the key after a delete or on
 * an empty etcd passes, because the reader that created it already reads in the
 * new epoch.
 */
export class EtcdWatch implements Watch {
  readonly #context: EtcdWatchContext;
  readonly #prefix: string;
  readonly #handlers: WatchHandlers;
  readonly #watcher: Watcher;
  readonly #logger: Logger;
  #state: WatchState = 'connecting';
  /** Revision to resume from: one past the last revision delivered. */
  #nextRevision: number;
  /** Highest header revision etcd has reported to this watch. */
  #highestRevision = 0;
  #clusterId: string | undefined;
  #detached: Promise<void> | undefined;
  /** `#nextRevision` and the time when a check first found an undelivered change at it. */
  #behind: { nextRevision: number; sinceMs: number } | undefined;
  #stallReported = false;
  #checking = false;
  readonly #checkTimer: NodeJS.Timeout;

  constructor(
    context: EtcdWatchContext,
    prefix: string,
    fromRevision: number,
    handlers: WatchHandlers,
  ) {
    this.#context = context;
    this.#prefix = prefix;
    this.#handlers = handlers;
    this.#nextRevision = fromRevision;
    this.#logger = context.logger.child({ prefix, fromRevision });

    // `watcher()` lets the listeners attach before any response can arrive.
    // The promise of `create()` resolves one tick after 'connected', so a
    // 'data' or 'error' emitted in between would be lost.
    this.#watcher = context.watchClient
      .watch()
      .prefix(prefix)
      .startRevision(String(fromRevision))
      .watcher();
    this.#watcher.on('connected', (response) => this.#onConnected(response));
    this.#watcher.on('data', (response) => this.#onData(response));
    this.#watcher.on('disconnected', (error) => this.#onDisconnected(error));
    this.#watcher.on('error', (error) => void this.#onCanceledByEtcd(error));
    this.#checkTimer = setInterval(() => void this.#checkDelivery(), context.checkIntervalMs);
    this.#checkTimer.unref();
  }

  /** True when this watch's stream runs on `client`'s connection. */
  usesClient(client: Etcd3): boolean {
    return this.#context.watchClient === client;
  }

  /**
   * Fails the watch because its connection stopped delivering; the caller
   * replaces the connection.
   */
  // Failing instead of resuming on the new connection costs the snapshot cache nothing: it
  // reads the prefix again after a resumed stream too (`onResumed`).
  failStalled(): void {
    this.#fail(
      `etcd at ${this.#endpoints()} has commits from revision ${this.#nextRevision} on ` +
        'but the watch stream delivered none of them',
    );
    this.#detach();
  }

  /** Stops delivery at once; resolves when etcd has removed the watch. */
  cancel(): Promise<void> {
    if (this.#transition('canceled')) {
      this.#detach();
    }
    return this.#detached ?? Promise.resolve();
  }

  /** True once the watch has failed or been canceled; it delivers nothing more. */
  get stopped(): boolean {
    return this.#isFinal();
  }

  #onConnected(response: IWatchResponse): void {
    if (this.#isFinal()) {
      return;
    }
    if (this.#historyRestarted(response)) {
      this.#fail(
        `etcd at ${this.#endpoints()} restarted its history at revision ` +
          `${response.header.revision} after ${this.#highestRevision}; ` +
          'the cluster was wiped or restored',
      );
      this.#detach();
      return;
    }
    const resumed = this.#state === 'disconnected';
    this.#transition('watching');
    if (resumed) this.#handlers.onResumed?.();
  }

  #onData(response: IWatchResponse): void {
    if (this.#isFinal()) {
      return;
    }
    this.#noteHeader(response);

    const epochChange = this.#findEpochChange(response.events);
    for (const batch of groupByRevision(response.events)) {
      if (batch.revision === epochChange?.revision) {
        this.#fail(
          `the generation key ${this.#context.generationKey} in etcd at ${this.#endpoints()} ` +
            `was ${epochChange.change} at revision ${batch.revision}, so the store's epoch ` +
            'changed',
        );
        this.#detach();
        return;
      }
      this.#nextRevision = batch.revision + 1;
      const events = batch.events.filter((event) => !isMetaKey(event.key, this.#context.root));
      if (events.length > 0) {
        this.#handlers.onBatch({ revision: batch.revision, events });
      }
      if (this.#isFinal()) {
        return;
      }
    }
  }

  /**
   * Finds the first event that deletes the generation key or replaces its value. A put
   * with key version 1 creates the key and is no change of a known epoch.
   */
  #findEpochChange(
    events: IEvent[],
  ): { revision: number; change: 'deleted' | 'replaced' } | undefined {
    for (const event of events) {
      if (event.kv.key.toString() !== this.#context.generationKey) continue;
      if (event.type === 'Delete') {
        return { revision: Number(event.kv.mod_revision), change: 'deleted' };
      }
      if (Number(event.kv.version) > 1) {
        return { revision: Number(event.kv.mod_revision), change: 'replaced' };
      }
    }
    return undefined;
  }

  #onDisconnected(error: Error): void {
    if (this.#isFinal()) {
      return;
    }
    // etcd3 reads this field when it re-creates the watch on the new stream.
    this.#watcher.request.start_revision = String(this.#nextRevision);
    if (this.#state !== 'disconnected') {
      this.#transition('disconnected', error);
    }
  }

  /**
   * Handles etcd's cancellation of the watch. etcd3 drops the response's
   * compact revision and passes only the cancel reason, which etcd 3.4 leaves
   * empty for compaction, so a read at the resume revision finds out whether it
   * was compacted.
   */
  async #onCanceledByEtcd(error: Error): Promise<void> {
    if (this.#isFinal()) {
      return;
    }
    this.#transition('failed', error);

    const compacted = await this.#isCompacted(this.#nextRevision);
    const message = compacted
      ? `revision ${this.#nextRevision} of etcd at ${this.#endpoints()} has been compacted`
      : `etcd at ${this.#endpoints()} canceled the watch at revision ${this.#nextRevision}: ` +
        error.message;
    this.#handlers.onError(this.#error(message, error));
  }

  async #isCompacted(revision: number): Promise<boolean> {
    // A future revision is also out of range, but it cannot have been compacted.
    if (revision > this.#highestRevision) {
      return false;
    }

    const range = Range.prefix(this.#prefix);
    try {
      await this.#context.client.kv.range({
        key: range.start,
        range_end: range.end,
        revision,
        count_only: true,
      });
      return false;
    } catch (error) {
      return isRevisionOutOfRange(error);
    }
  }

  /** Compares the last change under the prefix with what the watch delivered. */
  async #checkDelivery(): Promise<void> {
    if (this.#checking || this.#isFinal() || this.#stallReported) return;

    this.#checking = true;
    try {
      const lastChange = await this.#lastChangeRevision();
      if (this.#isFinal() || this.#state === 'disconnected' || lastChange < this.#nextRevision) {
        this.#behind = undefined;
        return;
      }
      // A check may race with events in flight, so the watch gets a grace period to progress.
      const now = Date.now();
      if (this.#behind?.nextRevision !== this.#nextRevision) {
        this.#behind = { nextRevision: this.#nextRevision, sinceMs: now };
        return;
      }
      const graceMs = this.#context.stallGraceMs ?? this.#context.checkIntervalMs;
      if (now - this.#behind.sinceMs < graceMs) return;

      this.#stallReported = true;
      const fields = { nextRevision: this.#nextRevision, lastChange, graceMs };
      this.#logger.warn(fields, 'etcd watch stalled');
      this.#context.onStall(this.#context.watchClient);
    } catch {
      // etcd is unreachable; the store logs that, and the watch reconnects by itself.
    } finally {
      this.#checking = false;
    }
  }

  /**
   * Returns the revision of a change under the prefix at or after `#nextRevision`, or a lower
   * revision when the watch has delivered every change. Each step runs only when the cheaper
   * one before it found nothing undelivered.
   */
  async #lastChangeRevision(): Promise<number> {
    const delivered = this.#nextRevision - 1;
    // Commits through EtcdStore move the directory's marker, so one key read finds them.
    if (this.#prefix.endsWith('/')) {
      const lastWrite = await this.#context.lastWriteRevision(this.#prefix);
      if (lastWrite > delivered) return lastWrite;
    }

    // The header of any read carries etcd's current revision. When it is not past the
    // delivered one, nothing in etcd changed since.
    const client = this.#context.client;
    const head = await client.kv.range({ key: Buffer.from(this.#prefix), count_only: true });
    if (Number(head.header.revision) <= delivered) return 0;

    return this.#lastForeignChange(delivered);
  }

  /**
   * Finds a put or delete under the prefix after `delivered` by any etcd client. The newest
   * mod revision shows puts. A key count that differs from the one at `delivered` shows
   * deletes, whose revision is then only bounded by the current one.
   *
   * NOTE: etcd serves a range sorted by mod revision by reading every key under the prefix,
   * values included, before it keeps one. This step runs only when etcd's revision passed
   * the delivered one. Its cost therefore matters when other clients write the same etcd
   * often. A key created and deleted again after `delivered` leaves no trace here.
   */
  async #lastForeignChange(delivered: number): Promise<number> {
    const range = Range.prefix(this.#prefix);
    const kv = this.#context.client.kv;
    const [latest, before] = await Promise.all([
      kv.range({
        key: range.start,
        range_end: range.end,
        keys_only: true,
        sort_target: 'Mod',
        sort_order: 'Descend',
        limit: 1,
      }),
      this.#countAt(delivered),
    ]);

    const lastPut = Number(latest.kvs[0]?.mod_revision ?? 0);
    if (lastPut > delivered) return lastPut;
    if (before !== undefined && before !== Number(latest.count)) {
      return Number(latest.header.revision);
    }
    return 0;
  }

  /** Counts the keys under the prefix at `revision`, or returns undefined when it was compacted. */
  async #countAt(revision: number): Promise<number | undefined> {
    // Revision 0 would read the current state.
    if (revision < 1) return undefined;

    const range = Range.prefix(this.#prefix);
    try {
      const response = await this.#context.client.kv.range({
        key: range.start,
        range_end: range.end,
        revision,
        count_only: true,
      });
      return Number(response.count);
    } catch (error) {
      if (isRevisionOutOfRange(error)) return undefined;
      throw error;
    }
  }

  #historyRestarted(response: IWatchResponse): boolean {
    const { cluster_id: clusterId, revision } = response.header;
    const restarted =
      (this.#clusterId !== undefined && clusterId !== this.#clusterId) ||
      Number(revision) < this.#highestRevision;
    this.#noteHeader(response);
    return restarted;
  }

  #noteHeader(response: IWatchResponse): void {
    this.#clusterId ??= response.header.cluster_id;
    this.#highestRevision = Math.max(this.#highestRevision, Number(response.header.revision));
  }

  #fail(message: string): void {
    if (this.#transition('failed')) {
      this.#handlers.onError(this.#error(message));
    }
  }

  #error(message: string, cause?: unknown): LoomError {
    const full = `watch of "${this.#prefix}" stopped: ${message}`;
    const advice = '; read the prefix again and start a new watch';
    return new LoomError('LOOM_STORE_UNAVAILABLE', full + advice, { cause, retryable: true });
  }

  #detach(): void {
    const canceled = this.#watcher.cancel().catch((error: unknown) => {
      const storeError = toStoreError(error, this.#context.endpoints, 'watch cancel');
      this.#logger.warn({ err: storeError }, 'etcd watch cancel failed');
    });
    // etcd never confirms a cancellation sent on a stalled or silently broken connection.
    const timeout = sleep(this.#context.cancelTimeoutMs, undefined, { ref: false });
    this.#detached ??= Promise.race([canceled, timeout]);
  }

  #isFinal(): boolean {
    return this.#state === 'failed' || this.#state === 'canceled';
  }

  /** Moves to `next` if that is a legal move, logs it, and returns whether it moved. */
  #transition(next: WatchState, error?: Error): boolean {
    const from = this.#state;
    if (!TRANSITIONS[from].includes(next)) {
      return false;
    }

    this.#state = next;
    if (this.#isFinal()) clearInterval(this.#checkTimer);
    if (from === 'disconnected' && next === 'watching') this.#context.onReconnect?.();
    if (from === 'disconnected' && (next === 'watching' || next === 'failed')) {
      this.#context.onStreamBack?.();
    }
    const fields = { from, to: next, nextRevision: this.#nextRevision, err: error };
    if (next === 'disconnected' || next === 'failed') {
      this.#logger.warn(fields, 'etcd watch state changed');
    } else {
      this.#logger.info(fields, 'etcd watch state changed');
    }
    return true;
  }

  #endpoints(): string {
    return this.#context.endpoints.join(',');
  }
}

/** Splits a watch response into batches of one revision each, in commit order. */
function groupByRevision(events: IEvent[]): WatchBatch[] {
  const batches: WatchBatch[] = [];
  for (const event of events) {
    const revision = Number(event.kv.mod_revision);
    const converted: WatchEvent = {
      type: event.type === 'Put' ? 'put' : 'delete',
      key: event.kv.key.toString(),
      value: event.type === 'Put' ? event.kv.value.toString() : '',
      modRevision: revision,
    };
    // etcd sends all events of one revision in one response unless the watch
    // requests fragments, which this one does not.
    const last = batches.at(-1);
    if (last?.revision === revision) {
      last.events.push(converted);
    } else {
      batches.push({ revision, events: [converted] });
    }
  }
  return batches;
}
