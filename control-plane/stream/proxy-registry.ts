import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';

/** Acks remembered per proxy for convergence queries; older ones are dropped. */
export const ACK_HISTORY_LIMIT = 64;

/** One ack as the control plane received it. */
interface AckRecord {
  epoch: string;
  version: number;
  atMs: number;
}

/** What the control plane records about one proxy. */
interface ProxyRecord extends Omit<ProxyStatus, 'versionAckedAtMs'> {
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
 * `loomctl apply --wait`.
 */
export class ProxyRegistry {
  readonly #proxies = new Map<string, ProxyRecord>();

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
  }

  disconnect(id: string): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.streams = Math.max(0, record.streams - 1);
    record.connected = record.streams > 0;
    record.lastSeenMs = Date.now();
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
  }

  nack(id: string, epoch: string, version: number, error: string): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.nackedEpoch = epoch;
    record.nackedVersion = version;
    record.nackError = error;
    record.lastSeenMs = Date.now();
  }

  /** Records that the proxy was sent the accepted `version` after it nacked a newer one. */
  fallback(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.fallbackEpoch = epoch;
    record.fallbackVersion = version;
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
  list(convergence?: VersionRef): ProxyStatus[] {
    return [...this.#proxies.values()]
      .map(({ streams: _streams, acks, ...status }) => ({
        ...status,
        versionAckedAtMs: convergence ? firstAckAt(acks, convergence) : 0,
      }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

function firstAckAt(acks: AckRecord[], target: VersionRef): number {
  for (const ack of acks) {
    if (ack.epoch === target.epoch && ack.version >= target.version) return ack.atMs;
  }
  return 0;
}
