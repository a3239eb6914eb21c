import {
  EtcdLeaseInvalidError,
  Range,
  type Etcd3,
  type IKeyValue,
  type IRequestOp,
  type Lease,
} from 'etcd3';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { FleetRecord, FleetStore } from './store.js';

/**
 * Seconds a replica's records outlive its last lease keepalive. The other replicas list the
 * proxies of a replica that died for at most this long. Those proxies reconnect elsewhere
 * meanwhile, and the newer connection wins (see `mergeFleet`).
 */
export const FLEET_LEASE_SECONDS = 10;
/** Default interval of the check that the lease still exists, in milliseconds. */
const DEFAULT_LEASE_CHECK_MS = 5_000;
/**
 * Records per transaction. etcd rejects a transaction of more than 128 operations by
 * default (`--max-txn-ops`), and each transaction also puts the write marker.
 */
const RECORDS_PER_TXN = 100;
/** Keys per range request when reading the records. */
const READ_PAGE_SIZE = 1_000;

/** Dependencies of `EtcdFleet` on its store. */
export interface EtcdFleetContext {
  client: Etcd3;
  /** `<prefix>__meta/`, under which the records and their write marker live. */
  metaDirectory: string;
  logger: Logger;
  /** Runs one etcd call and converts its errors, as every store request does. */
  request<T>(operation: string, call: () => Promise<T>): Promise<T>;
  /** Interval of the lease check, in milliseconds; default 5,000. */
  leaseCheckMs?: number;
}

/** The lease this process holds, with the etcd3 object that keeps it alive. */
interface FleetLease {
  id: string;
  lease: Lease;
}

/**
 * Fleet records in etcd. Each replica writes `<prefix>__meta/fleet/<replica>/<proxy>` under
 * one lease of {@link FLEET_LEASE_SECONDS}, which etcd3 keeps alive, and closes by deleting
 * its records and revoking the lease. Every transaction that writes records also puts
 * `<prefix>__meta/fleet-write`, so that a read can tell a revision that wrote only records
 * from one that changed the configuration (see `EtcdStore.range`).
 *
 * A lost lease (etcd expired it while unreachable, or an operator revoked it) is found by
 * etcd3's keepalive, by a write that etcd rejects for it, or by a check of its time to live
 * every few seconds. The next write then takes a new lease, and `onLost` listeners write
 * every record again.
 */
export class EtcdFleet implements FleetStore {
  readonly #context: EtcdFleetContext;
  readonly #listeners = new Set<() => void>();
  readonly #written = new Map<string, Set<string>>();
  readonly #checkTimer: NodeJS.Timeout;
  #current: FleetLease | undefined;
  #granting: Promise<FleetLease> | undefined;
  #closed = false;

  constructor(context: EtcdFleetContext) {
    this.#context = context;
    this.#checkTimer = setInterval(
      () => void this.#checkLease(),
      context.leaseCheckMs ?? DEFAULT_LEASE_CHECK_MS,
    );
    this.#checkTimer.unref();
  }

  /** The key that every transaction writing records also puts. */
  get markerKey(): string {
    return `${this.#context.metaDirectory}fleet-write`;
  }

  /** The directory of every replica's records. */
  get recordsDirectory(): string {
    return `${this.#context.metaDirectory}fleet/`;
  }

  async publish(replica: string, records: { proxy: string; value: string }[]): Promise<void> {
    if (this.#closed) {
      throw new LoomError('LOOM_STORE_UNAVAILABLE', 'cannot write fleet records after close');
    }
    for (let start = 0; start < records.length; start += RECORDS_PER_TXN) {
      const granted = await this.#lease();
      const chunk = records.slice(start, start + RECORDS_PER_TXN);
      const operations: IRequestOp[] = chunk.map((record) => ({
        request_put: {
          key: Buffer.from(this.#key(replica, record.proxy)),
          value: Buffer.from(record.value),
          lease: granted.id,
        },
      }));
      operations.push({
        request_put: { key: Buffer.from(this.markerKey), value: Buffer.alloc(0) },
      });
      try {
        await this.#context.request('fleet record write', () =>
          this.#context.client.kv.txn({ compare: [], success: operations, failure: [] }),
        );
      } catch (error) {
        if (isLeaseInvalid(error)) this.#lost(granted, error);
        throw error;
      }
      const proxies = this.#written.get(replica) ?? new Set<string>();
      for (const record of chunk) proxies.add(record.proxy);
      this.#written.set(replica, proxies);
    }
  }

  async read(): Promise<FleetRecord[]> {
    const directory = this.recordsDirectory;
    const range = Range.prefix(directory);
    const records: FleetRecord[] = [];
    let start = range.start;
    for (;;) {
      const page = await this.#context.request('fleet record read', () =>
        this.#context.client.kv.range({
          key: start,
          range_end: range.end,
          limit: READ_PAGE_SIZE,
        }),
      );
      for (const kv of page.kvs) {
        const record = parseKey(kv, directory);
        if (record) records.push(record);
      }
      if (!page.more || page.kvs.length === 0) return records;
      start = Buffer.concat([page.kvs[page.kvs.length - 1].key, Buffer.from([0])]);
    }
  }

  onLost(listener: () => void): void {
    this.#listeners.add(listener);
  }

  /**
   * Deletes the records this process wrote, then revokes the lease. Deleting first, with the
   * write marker, keeps the revoke from taking a revision of its own. Gives up quietly when
   * etcd cannot be reached: the lease then expires on its own.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#checkTimer);
    const granted = this.#current ?? (await this.#granting?.catch(() => undefined));
    this.#current = undefined;
    try {
      const deletes: IRequestOp[] = [];
      for (const [replica, proxies] of this.#written) {
        for (const proxy of proxies) {
          deletes.push({ request_delete_range: { key: Buffer.from(this.#key(replica, proxy)) } });
        }
      }
      for (let start = 0; start < deletes.length; start += RECORDS_PER_TXN) {
        const operations = deletes.slice(start, start + RECORDS_PER_TXN);
        operations.push({
          request_put: { key: Buffer.from(this.markerKey), value: Buffer.alloc(0) },
        });
        await this.#context.request('fleet record delete', () =>
          this.#context.client.kv.txn({ compare: [], success: operations, failure: [] }),
        );
      }
      if (granted) await this.#context.request('fleet lease revoke', () => granted.lease.revoke());
    } catch (error) {
      this.#context.logger.warn({ err: error }, 'fleet records left to expire');
      granted?.lease.release();
    }
  }

  #key(replica: string, proxy: string): string {
    return `${this.recordsDirectory}${replica}/${encodeURIComponent(proxy)}`;
  }

  /** Returns the current lease, or grants a new one. Concurrent callers share one grant. */
  async #lease(): Promise<FleetLease> {
    if (this.#current) return this.#current;
    if (this.#granting) return this.#granting;

    const lease = this.#context.client.lease(FLEET_LEASE_SECONDS, { autoKeepAlive: true });
    // A failed grant also emits `lost`; the rejected promise below reports it.
    lease.on('lost', (error) => {
      if (this.#current?.lease === lease) this.#lost(this.#current, error);
    });
    this.#granting = this.#context
      .request('fleet lease grant', () => lease.grant())
      .then(
        (id) => {
          const granted = { id, lease };
          if (this.#closed) {
            void lease.revoke().catch(() => undefined);
          } else {
            this.#current = granted;
            this.#context.logger.info({ lease: id }, 'fleet lease granted');
          }
          return granted;
        },
        (error: unknown) => {
          lease.release();
          throw error;
        },
      )
      .finally(() => {
        this.#granting = undefined;
      });
    return this.#granting;
  }

  async #checkLease(): Promise<void> {
    const granted = this.#current;
    if (!granted) return;
    try {
      const response = await this.#context.client.leaseClient.leaseTimeToLive({ ID: granted.id });
      if (Number(response.TTL) <= 0) {
        this.#lost(granted, new Error(`lease ${granted.id} has expired`));
      }
    } catch (error) {
      // An unreachable etcd is reported by the store's own requests; a missing lease is lost.
      if (isLeaseInvalid(error)) this.#lost(granted, error);
    }
  }

  #lost(granted: FleetLease, error: unknown): void {
    if (this.#current !== granted) return;

    this.#current = undefined;
    granted.lease.release();
    this.#written.clear();
    this.#context.logger.warn({ lease: granted.id, err: error }, 'fleet lease lost');
    for (const listener of this.#listeners) listener();
  }
}

/** Splits a record key into replica and proxy; undefined for a key of another shape. */
function parseKey(kv: IKeyValue, directory: string): FleetRecord | undefined {
  const rest = kv.key.toString().slice(directory.length);
  const slash = rest.indexOf('/');
  if (slash <= 0 || slash === rest.length - 1) return undefined;
  try {
    const proxy = decodeURIComponent(rest.slice(slash + 1));
    return { replica: rest.slice(0, slash), proxy, value: kv.value.toString() };
  } catch {
    return undefined;
  }
}

function isLeaseInvalid(error: unknown): boolean {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof EtcdLeaseInvalidError) return true;
    if (cause.message.includes('requested lease not found')) return true;
  }
  return false;
}
