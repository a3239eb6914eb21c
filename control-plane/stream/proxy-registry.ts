import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';

/** Acks remembered per proxy for convergence queries; older ones are dropped. */
export const ACK_HISTORY_LIMIT = 64;

/**
 * How long a proxy stays listed after its last stream closed, in milliseconds: a day, so that
 * `status` still shows a proxy that died overnight.
 */
export const DISCONNECTED_RETENTION_MS = 24 * 60 * 60 * 1000;

/** One ack as the control plane received it. */
export interface AckRecord {
  epoch: string;
  version: number;
  atMs: number;
}

/** State a control plane records for one proxy, without the fields filled per query. */
export type ProxyState = Omit<ProxyStatus, 'versionAckedAtMs' | 'controlPlane'>;

/** What the control plane records about one proxy. */
interface ProxyRecord extends ProxyState {
  /** Open streams of this proxy; a reconnect can overlap the old stream's close. */
  streams: number;
  /** Most recent acks, oldest first, at most ACK_HISTORY_LIMIT. */
  acks: AckRecord[];
}

/** A version within one epoch. */
export interface VersionRef {
  epoch: string;
  version: number;
}

/**
 * Every proxy that has connected since the control plane started, with the
 * last version it acked, the last it nacked, how many snapshots it was sent,
 * and when it acked recent versions. Read by `loomctl status` and
 * `loomctl apply --wait`. `prune` removes proxies disconnected for longer than
 * {@link DISCONNECTED_RETENTION_MS}, so proxies that come back under new ids (the pods of
 * each rollout) do not grow the list for ever.
 */
export class ProxyRegistry {
  readonly #proxies = new Map<string, ProxyRecord>();
  readonly #listeners = new Set<(id: string) => void>();

  /**
   * Calls `listener` with the proxy's id after each connect, disconnect, ack, nack, fallback
   * and prune; a snapshot sent changes only a counter and calls nothing.
   */
  onChange(listener: (id: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Ids of every known proxy. */
  ids(): string[] {
    return [...this.#proxies.keys()];
  }

  /** Returns the proxy's state and its most recent acks, oldest first; undefined for an unknown id. */
  entry(id: string): { state: ProxyState; acks: AckRecord[] } | undefined {
    const record = this.#proxies.get(id);
    if (!record) return undefined;
    return toEntry(record);
  }

  /**
   * Forgets every proxy whose streams all closed more than `retentionMs` before `nowMs`, and
   * returns how many it forgot.
   */
  prune(nowMs = Date.now(), retentionMs = DISCONNECTED_RETENTION_MS): number {
    let forgotten = 0;
    for (const [id, record] of this.#proxies) {
      if (record.connected || nowMs - record.lastSeenMs <= retentionMs) continue;
      this.#proxies.delete(id);
      forgotten += 1;
      this.#changed(id);
    }
    return forgotten;
  }

  #changed(id: string): void {
    for (const listener of this.#listeners) listener(id);
  }

  /** Records a stream opened by a proxy that serves `version` of `epoch` (0 for none). */
  connect(id: string, address: string, epoch: string, version: number): void {
    const now = Date.now();
    const record: ProxyRecord = this.#proxies.get(id) ?? {
      id,
      address,
      connected: true,
      ackedEpoch: epoch,
      ackedVersion: version,
      nackedEpoch: '',
      nackedVersion: 0,
      nackError: '',
      connectedAtMs: now,
      lastSeenMs: now,
      snapshotsSent: 0,
      fallbackVersion: 0,
      fallbackEpoch: '',
      streams: 0,
      acks: [],
    };
    record.address = address;
    record.connected = true;
    record.connectedAtMs = now;
    record.lastSeenMs = now;
    record.streams += 1;
    if (version > 0) {
      record.ackedEpoch = epoch;
      record.ackedVersion = version;
    }
    this.#proxies.set(id, record);
    this.#changed(id);
  }

  disconnect(id: string): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.streams = Math.max(0, record.streams - 1);
    record.connected = record.streams > 0;
    record.lastSeenMs = Date.now();
    this.#changed(id);
  }

  /** Counts one snapshot written to a stream of the proxy. */
  sent(id: string): void {
    const record = this.#proxies.get(id);
    if (record) record.snapshotsSent += 1;
  }

  ack(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    const now = Date.now();
    record.ackedEpoch = epoch;
    record.ackedVersion = version;
    record.lastSeenMs = now;
    if (record.fallbackEpoch !== epoch || record.fallbackVersion < version) {
      record.fallbackVersion = 0;
      record.fallbackEpoch = '';
    }
    record.acks.push({ epoch, version, atMs: now });
    if (record.acks.length > ACK_HISTORY_LIMIT) record.acks.shift();
    this.#changed(id);
  }

  nack(id: string, epoch: string, version: number, error: string): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.nackedEpoch = epoch;
    record.nackedVersion = version;
    record.nackError = error;
    record.lastSeenMs = Date.now();
    this.#changed(id);
  }

  /** Records that the proxy was sent the accepted `version` after it nacked a newer one. */
  fallback(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.fallbackEpoch = epoch;
    record.fallbackVersion = version;
    this.#changed(id);
  }

  /** The last version the proxy nacked, or undefined when it never nacked one. */
  lastNack(id: string): VersionRef | undefined {
    const record = this.#proxies.get(id);
    if (!record || record.nackedVersion === 0) return undefined;
    return { epoch: record.nackedEpoch, version: record.nackedVersion };
  }

  /**
   * Every known proxy, sorted by id. With `convergence`, each status carries
   * when the proxy first acked that version or a newer one of its epoch.
   */
  list(convergence?: VersionRef, controlPlane = ''): ProxyStatus[] {
    return [...this.#proxies.values()]
      .map(({ streams: _streams, acks, ...status }) => ({
        ...status,
        versionAckedAtMs: convergence ? firstAckAt(acks, convergence) : 0,
        controlPlane,
      }))
      .sort(byId);
  }
}

function toEntry({ streams: _streams, acks, ...state }: ProxyRecord): {
  state: ProxyState;
  acks: AckRecord[];
} {
  return { state, acks: [...acks] };
}

/** Orders proxy statuses by id. */
export function byId(a: { id: string }, b: { id: string }): number {
  if (a.id < b.id) return -1;
  if (a.id > b.id) return 1;
  return 0;
}

/** When the first of `acks` at or past `target` in its epoch arrived; 0 when none did. */
export function firstAckAt(acks: AckRecord[], target: VersionRef): number {
  for (const ack of acks) {
    if (ack.epoch === target.epoch && ack.version >= target.version) return ack.atMs;
  }
  return 0;
}
