import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';

/** What the control plane records about one proxy. */
interface ProxyRecord extends ProxyStatus {
  /** Open streams of this proxy; a reconnect can overlap the old stream's close. */
  streams: number;
}

/**
 * Every proxy that has connected since the control plane started, with the
 * last version it acked and the last it nacked. Read by `loomctl status` and
 * `apply --wait`.
 */
export class ProxyRegistry {
  readonly #proxies = new Map<string, ProxyRecord>();

  /** Records a stream opened by a proxy. */
  connect(id: string, address: string, epoch: string, version: number): void {
    const now = Date.now();
    const existing = this.#proxies.get(id);
    const record: ProxyRecord = existing ?? {
      id,
      address,
      connected: true,
      ackedEpoch: epoch,
      ackedVersion: version,
      nackedVersion: 0,
      nackError: '',
      connectedAtMs: now,
      lastSeenMs: now,
      streams: 0,
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

  ack(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.ackedEpoch = epoch;
    record.ackedVersion = version;
    record.lastSeenMs = Date.now();
  }

  nack(id: string, version: number, error: string): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.nackedVersion = version;
    record.nackError = error;
    record.lastSeenMs = Date.now();
  }

  /** Every known proxy, sorted by id. */
  list(): ProxyStatus[] {
    return [...this.#proxies.values()]
      .map(({ streams: _streams, ...status }) => ({ ...status }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}
