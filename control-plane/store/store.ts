/**
 * The key-value store behind the control plane. Two implementations exist:
 * etcd (`EtcdStore`) and a file-backed store in a local data directory
 * (`EmbeddedStore`). Both pass the same conformance suite.
 *
 * Revisions follow etcd's model: one counter for the whole store that grows by
 * one with every committed transaction, never reused within an epoch.
 */

/** One key and its value, with the revision that last modified it. */
export interface KeyValue {
  key: string;
  value: string;
  modRevision: number;
}

/** The keys under a prefix as they were at one revision. */
export interface RangeResult {
  revision: number;
  items: KeyValue[];
  /**
   * The store's epoch at `revision`, when the store reads it in the same view as the keys
   * (etcd does). Undefined when the store does not, or when etcd has no generation key at
   * `revision` (a wiped etcd); `epoch()` then returns or creates it.
   */
  epoch?: string;
}

/** A snapshot version that a proxy acked, recorded so that every control plane can send it. */
export interface AcceptedVersion {
  epoch: string;
  version: number;
  /** Hex SHA-256 of the snapshot's encoded routes and upstreams. */
  hash: string;
}

/** The data a store keeps to rebuild the snapshot of an accepted version. */
export type AcceptedContent =
  /** The keys under the prefix at the version's revision, read from the store's history. */
  | { kind: 'history'; range: RangeResult }
  /** The snapshot's encoded routes and upstreams, kept by a store without history. */
  | { kind: 'recorded'; bytes: Uint8Array }
  /** etcd compacted the version's revision; `storeRevision` is etcd's current one. */
  | { kind: 'compacted'; storeRevision: number }
  /** The store keeps nothing for this version, such as after a newer one was recorded. */
  | { kind: 'missing' };

/** One change seen by a watch. A delete carries an empty value. */
export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  value: string;
  modRevision: number;
}

/** A group of events committed in one transaction, in commit order. */
export interface WatchBatch {
  revision: number;
  events: WatchEvent[];
}

/** Callbacks of a watch. */
export interface WatchHandlers {
  onBatch(batch: WatchBatch): void;
  /**
   * Called once when the watch ends for a reason other than `cancel()`. A
   * `LoomError` with code `LOOM_STORE_UNAVAILABLE` and `retryable` means the
   * caller should read the prefix again and start a new watch; the revision it
   * asked for may have been compacted.
   */
  onError(error: Error): void;
  /**
   * Called when a watch re-established a broken stream and resumes from the revision after
   * the last batch, before any later batch. While the stream was down, etcd may have been
   * wiped or restored and then written past that revision. The resumed stream cannot tell
   * that apart from the same history, so a caller that must not serve a stale copy reads
   * the prefix again. Stores without connections never call it.
   */
  onResumed?(): void;
}

/** A running watch. */
export interface Watch {
  cancel(): Promise<void>;
}

/** One write of a transaction. */
export type StoreOperation =
  { type: 'put'; key: string; value: string } | { type: 'delete'; key: string };

/** Options of a transaction. */
export interface CommitOptions {
  /**
   * When set, the transaction commits only if no key under `prefix` was modified
   * after this revision; otherwise it fails with `LOOM_VERSION_CONFLICT`.
   */
  ifRevision?: number;
  prefix?: string;
}

/** One proxy's record as a control plane shared it with the other replicas. */
export interface FleetRecord {
  /** Identifier of the control-plane process that wrote the record. */
  replica: string;
  proxy: string;
  value: string;
  /**
   * False when the replica has not written since etcd's last leader election, which renews
   * every lease: its records may outlive a replica that stopped while etcd was down, so they
   * prove no open stream.
   */
  confirmed: boolean;
}

/**
 * Proxy records that control-plane replicas on one store share, so that each can list every
 * proxy. A replica's records live as long as the replica: they vanish when it stops, or
 * soon after it loses the store or dies. Writing them changes no configuration, creates no
 * snapshot version and never makes a conditional commit fail.
 */
export interface FleetStore {
  /**
   * Writes `records` of `replica`, replacing what it wrote before for those proxies, and
   * deletes its records of the `removed` proxies.
   */
  publish(
    replica: string,
    records: { proxy: string; value: string }[],
    removed?: string[],
  ): Promise<void>;
  /** Reads every replica's records. */
  read(): Promise<FleetRecord[]>;
  /**
   * Calls `listener` when records written before were lost or changed without `close`. After
   * the store expired them while it was unreachable, `proxies` is undefined: all are lost. After
   * a delete by hand or a restore of etcd from a backup, `proxies` lists the changed ones. The
   * caller writes those records again.
   */
  onLost(listener: (proxies: string[] | undefined) => void): void;
  /** Deletes the records this process wrote. */
  close(): Promise<void>;
}

/** The storage interface both stores implement. */
export interface Store {
  /**
   * Shared proxy records; undefined for a store that one control plane opens at a time,
   * whose proxies all stream from that control plane.
   */
  readonly fleet?: FleetStore;
  /**
   * Identifier of the store's history. It changes when the history restarts
   * (a wiped or restored store) so that revisions compare only within one epoch.
   */
  epoch(): Promise<string>;
  /**
   * Starts a new epoch after the store's history went backwards: a restore
   * from a backup can keep the old epoch while revisions drop below ones that
   * proxies already hold. `stale` is the epoch that saw the higher revision;
   * when another control plane renewed it first, the current epoch is returned.
   */
  renewEpoch(stale: string): Promise<string>;
  /** Reads every key under `prefix` at one revision. */
  range(prefix: string): Promise<RangeResult>;
  /** Delivers every change under `prefix` from `fromRevision` (inclusive) on. */
  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch;
  /** Applies all operations atomically and returns the new revision. */
  commit(operations: StoreOperation[], options?: CommitOptions): Promise<number>;
  /** Number of `commit` calls on this store object that have not settled yet. */
  readonly commitsInFlight: number;
  /**
   * Latest deadline of the commits in flight, as a `Date.now()` time. Each commit has
   * succeeded or failed by its deadline. Undefined when none is in flight or the store sets none.
   */
  readonly commitDeadline: number | undefined;
  /** Returns the accepted version last recorded, of any epoch, or undefined when none is. */
  acceptedVersion(): Promise<AcceptedVersion | undefined>;
  /**
   * Records `accepted` when it is newer than the recorded version of its epoch, or when the
   * recorded one belongs to another epoch. A version of an epoch other than the store's
   * current one is not recorded. `content` is the snapshot's encoded routes and upstreams,
   * whose SHA-256 is `accepted.hash`; a store without history keeps it. Returns true when
   * this call wrote the record. Several control planes may call it at once; the record
   * never moves back within an epoch.
   */
  recordAccepted(accepted: AcceptedVersion, content: Uint8Array): Promise<boolean>;
  /** Reads what the store keeps to rebuild the snapshot of `accepted` under `prefix`. */
  readAcceptedContent(prefix: string, accepted: AcceptedVersion): Promise<AcceptedContent>;
  close(): Promise<void>;
}
