import {
  EtcdLeaseInvalidError,
  Range,
  type Etcd3,
  type IKeyValue,
  type IRequestOp,
  type IResponseHeader,
  type Lease,
} from 'etcd3';

import { setTimeout as sleep } from 'node:timers/promises';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { isTransactionTooLarge } from './etcd-errors.js';
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
 * Records per transaction at first. etcd rejects a transaction of more than 128 operations
 * by default (`--max-txn-ops`), and each transaction also puts the write marker. When etcd
 * rejects a transaction for its size, later ones carry half as many records.
 */
const RECORDS_PER_TXN = 100;
/** Leaseless record keys remembered as logged; past it they are logged again. */
const LEASELESS_LOG_LIMIT = 1_024;
/** Keys per range request when reading the records. */
const READ_PAGE_SIZE = 1_000;
/** Maximum wait of `close` for etcd, in milliseconds, so that a shutdown without etcd is quick. */
const CLOSE_WAIT_MS = 2_000;
/** Format version of a replica key's JSON. */
const REPLICA_KEY_FORMAT = 1;
/** Replicas remembered as logged with unconfirmed records; past it they are logged again. */
const UNCONFIRMED_LOG_LIMIT = 1_024;

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
 *
 * etcd renews every lease to its full time to live at a leader election, and every restart of
 * a one-member etcd is one. So the records of a replica that stopped while etcd was down
 * outlive it by up to {@link FLEET_LEASE_SECONDS}. Each replica therefore also writes its replica key
 * `<prefix>__meta/fleet/<replica>`, under the same lease, with the raft term of its last
 * write. It writes the key again as soon as a response shows a newer term. A reader marks
 * the records of a replica whose key carries an older term than the read as unconfirmed:
 * their replica has not shown itself alive since the election.
 *
 * NOTE: raft terms start again low after etcd is wiped or restored from a backup. A restored
 * replica key of a stopped replica can then carry a higher term than the new history, and its
 * records count as confirmed until their lease expires, as they did before the replica key.
 */
export class EtcdFleet implements FleetStore {
  readonly #context: EtcdFleetContext;
  readonly #listeners = new Set<(proxies: string[] | undefined) => void>();
  /** Revision of the last write of each record, by replica and proxy. */
  readonly #written = new Map<string, Map<string, number>>();
  /** Leaseless record keys already logged, so that each is logged once. */
  readonly #leaselessLogged = new Set<string>();
  /** Writes in progress; the record check waits for a moment without any. */
  #publishing = 0;
  readonly #checkTimer: NodeJS.Timeout;
  /** True while a lease and record check runs, so that a second one waits for the next turn. */
  #checking = false;
  #current: FleetLease | undefined;
  #recordsPerTxn = RECORDS_PER_TXN;
  #granting: Promise<FleetLease> | undefined;
  #closed = false;
  /** Highest raft term of any etcd response so far. */
  #raftTerm = 0;
  /** Raft term of the last write of each replica key this process wrote, by replica. */
  readonly #confirmedTerms = new Map<string, number>();
  /** Replica key writes in progress; one at a time. */
  #confirming: Promise<void> | undefined;
  /** Replicas and terms already logged as unconfirmed, so that each is logged once. */
  readonly #unconfirmedLogged = new Set<string>();

  constructor(context: EtcdFleetContext) {
    this.#context = context;
    this.#checkTimer = setInterval(
      () => void this.#check(),
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

  async publish(
    replica: string,
    records: { proxy: string; value: string }[],
    removed: string[] = [],
  ): Promise<void> {
    if (this.#closed) {
      throw new LoomError('LOOM_STORE_UNAVAILABLE', 'cannot write fleet records after close');
    }
    // A record without a value is a delete.
    const changes: { proxy: string; value?: string }[] = [
      ...records,
      ...removed.map((proxy) => ({ proxy })),
    ];
    for (let start = 0; start < changes.length;) {
      const granted = await this.#lease();
      const chunk = changes.slice(start, start + this.#recordsPerTxn);
      const operations: IRequestOp[] = chunk.map(({ proxy, value }) => {
        const key = Buffer.from(this.#key(replica, proxy));
        return value === undefined
          ? { request_delete_range: { key } }
          : { request_put: { key, value: Buffer.from(value), lease: granted.id } };
      });
      const term = this.#raftTerm;
      operations.push(this.#replicaKeyPut(replica, term, granted));
      operations.push({
        request_put: { key: Buffer.from(this.markerKey), value: Buffer.alloc(0) },
      });
      let revision: number;
      this.#publishing += 1;
      try {
        const response = await this.#context.request('fleet record write', () =>
          this.#context.client.kv.txn({ compare: [], success: operations, failure: [] }),
        );
        revision = Number(response.header.revision);
        this.#confirmedTerms.set(replica, Math.max(term, this.#confirmedTerms.get(replica) ?? 0));
        this.#observe(response.header);
      } catch (error) {
        if (isLeaseInvalid(error)) this.#lost(granted, error);
        if (isTransactionTooLarge(error) && this.#recordsPerTxn > 1) {
          this.#recordsPerTxn = Math.ceil(this.#recordsPerTxn / 2);
          this.#context.logger.warn(
            { recordsPerTxn: this.#recordsPerTxn, err: error },
            'fleet record transaction too large, splitting',
          );
          continue;
        }
        throw error;
      } finally {
        this.#publishing -= 1;
      }
      start += chunk.length;
      const proxies = this.#written.get(replica) ?? new Map<string, number>();
      for (const { proxy, value } of chunk) {
        if (value === undefined) proxies.delete(proxy);
        else proxies.set(proxy, revision);
      }
      this.#written.set(replica, proxies);
    }
  }

  /**
   * Reads the records of every replica. A record without a lease is skipped, because replicas
   * write every record under their fleet lease. Such a key was written by hand or by another
   * tool and would never expire. Listed, it would show a proxy as connected for good and
   * reject every new stream of that proxy id as a duplicate. A record is unconfirmed when its
   * replica's key carries an older raft term than this read. A replica without a key (a
   * control plane older than the replica key) has every record confirmed.
   */
  async read(): Promise<FleetRecord[]> {
    const { kvs, raftTerm } = await this.#readKeys(this.recordsDirectory, false);
    const records: Omit<FleetRecord, 'confirmed'>[] = [];
    const replicaTerms = new Map<string, number>();
    for (const kv of kvs) {
      if (kv.lease === '0' || kv.lease === '') {
        this.#logLeaseless(kv.key.toString());
        continue;
      }
      const replicaKey = parseReplicaKey(kv, this.recordsDirectory);
      if (replicaKey) {
        replicaTerms.set(replicaKey.replica, replicaKey.raftTerm);
        continue;
      }
      const record = parseKey(kv, this.recordsDirectory);
      if (record) records.push(record);
    }
    return records.map((record) => {
      const replicaTerm = replicaTerms.get(record.replica);
      const confirmed = replicaTerm === undefined || replicaTerm >= raftTerm;
      if (!confirmed) this.#logUnconfirmed(record.replica, replicaTerm!, raftTerm);
      return { ...record, confirmed };
    });
  }

  #logUnconfirmed(replica: string, replicaTerm: number, raftTerm: number): void {
    const key = `${replica}@${raftTerm}`;
    if (this.#unconfirmedLogged.has(key)) return;
    if (this.#unconfirmedLogged.size >= UNCONFIRMED_LOG_LIMIT) this.#unconfirmedLogged.clear();
    this.#unconfirmedLogged.add(key);
    this.#context.logger.warn(
      { replica, replicaTerm, raftTerm },
      'fleet records of a replica not confirmed since the etcd leader election, ' +
        'listing its proxies as disconnected',
    );
  }

  #logLeaseless(key: string): void {
    if (this.#leaselessLogged.has(key)) return;
    if (this.#leaselessLogged.size >= LEASELESS_LOG_LIMIT) this.#leaselessLogged.clear();
    this.#leaselessLogged.add(key);
    this.#context.logger.warn(
      { key, fix: `etcdctl del ${key}` },
      'fleet record without a lease ignored',
    );
  }

  /**
   * Reads the keys under `directory` in pages, with their values unless `keysOnly`. Returns
   * them with the raft term of the first page.
   */
  async #readKeys(
    directory: string,
    keysOnly = true,
  ): Promise<{ kvs: IKeyValue[]; raftTerm: number }> {
    const range = Range.prefix(directory);
    const kvs: IKeyValue[] = [];
    let raftTerm: number | undefined;
    let start = range.start;
    for (;;) {
      const page = await this.#context.request('fleet record read', () =>
        this.#context.client.kv.range({
          key: start,
          range_end: range.end,
          limit: READ_PAGE_SIZE,
          keys_only: keysOnly,
        }),
      );
      raftTerm ??= Number(page.header.raft_term);
      this.#observe(page.header);
      kvs.push(...page.kvs);
      if (!page.more || page.kvs.length === 0) return { kvs, raftTerm };
      start = Buffer.concat([page.kvs[page.kvs.length - 1].key, Buffer.from([0])]);
    }
  }

  /** Builds the put of `replica`'s key with `raftTerm`, under the lease of `granted`. */
  #replicaKeyPut(replica: string, raftTerm: number, granted: FleetLease): IRequestOp {
    const value = JSON.stringify({ format: REPLICA_KEY_FORMAT, raftTerm });
    return {
      request_put: {
        key: Buffer.from(this.#replicaKey(replica)),
        value: Buffer.from(value),
        lease: granted.id,
      },
    };
  }

  #replicaKey(replica: string): string {
    return `${this.recordsDirectory}${replica}`;
  }

  /** Notes the raft term of an etcd response, and confirms the replicas when it is newer. */
  #observe(header: IResponseHeader | undefined): void {
    const term = Number(header?.raft_term ?? 0);
    if (term > this.#raftTerm) this.#raftTerm = term;
    this.#confirmIfBehind();
  }

  /**
   * Writes again each replica key whose term is older than the newest term seen. A failed
   * write is logged and retried at the next response of etcd or the next check.
   */
  #confirmIfBehind(): void {
    if (this.#closed || this.#confirming) return;
    const behind = [...this.#confirmedTerms].filter(([, term]) => term < this.#raftTerm);
    if (behind.length === 0) return;
    this.#confirming = this.#confirm(behind.map(([replica]) => replica))
      .catch((error: unknown) => {
        this.#context.logger.warn(
          { err: error, raftTerm: this.#raftTerm },
          'fleet replica key not written, retrying',
        );
      })
      .finally(() => {
        this.#confirming = undefined;
      });
  }

  async #confirm(replicas: string[]): Promise<void> {
    const granted = await this.#lease();
    const term = this.#raftTerm;
    const operations: IRequestOp[] = replicas.map((replica) =>
      this.#replicaKeyPut(replica, term, granted),
    );
    operations.push({
      request_put: { key: Buffer.from(this.markerKey), value: Buffer.alloc(0) },
    });
    this.#publishing += 1;
    try {
      const response = await this.#context.request('fleet replica key write', () =>
        this.#context.client.kv.txn({ compare: [], success: operations, failure: [] }),
      );
      for (const replica of replicas) {
        // A replica removed by a lost lease meanwhile is written again by its next publish.
        if (this.#confirmedTerms.has(replica)) this.#confirmedTerms.set(replica, term);
      }
      this.#context.logger.info({ replicas, raftTerm: term }, 'fleet replica key written');
      const newer = Number(response.header.raft_term);
      if (newer > this.#raftTerm) this.#raftTerm = newer;
    } catch (error) {
      if (isLeaseInvalid(error)) this.#lost(granted, error);
      throw error;
    } finally {
      this.#publishing -= 1;
    }
  }

  onLost(listener: (proxies: string[] | undefined) => void): void {
    this.#listeners.add(listener);
  }

  /**
   * Deletes the records this process wrote, then revokes the lease. Deleting first, with the
   * write marker, keeps the revoke from taking a revision of its own. Gives up after
   * `CLOSE_WAIT_MS` when etcd does not respond: the lease then expires on its own.
   */
  // NOTE: the records of proxies that cannot reach another replica go too, so those proxies
  // drop out of every replica's status until they reconnect somewhere.
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#checkTimer);
    const timeout = new AbortController();
    const expired = sleep(CLOSE_WAIT_MS, undefined, { signal: timeout.signal }).then(
      () => new Error(`etcd did not respond within ${CLOSE_WAIT_MS} ms`),
      () => undefined,
    );
    // A replica key written after the deletes would be deleted by the revoke, which takes a
    // revision without the write marker.
    await Promise.race([this.#confirming, expired]);
    const granted = await Promise.race([
      this.#current ?? this.#granting?.catch(() => undefined),
      expired.then(() => undefined),
    ]);
    this.#current = undefined;
    const failure = await Promise.race([
      this.#deleteAndRevoke(granted).then(
        () => undefined,
        (error: unknown) => error,
      ),
      expired,
    ]);
    timeout.abort();
    if (failure !== undefined) {
      this.#context.logger.warn({ err: failure }, 'fleet records left to expire');
      granted?.lease.release();
    }
  }

  async #deleteAndRevoke(granted: FleetLease | undefined): Promise<void> {
    const deletes: IRequestOp[] = [];
    for (const [replica, proxies] of this.#written) {
      for (const proxy of proxies.keys()) {
        deletes.push({ request_delete_range: { key: Buffer.from(this.#key(replica, proxy)) } });
      }
    }
    for (const replica of this.#confirmedTerms.keys()) {
      deletes.push({ request_delete_range: { key: Buffer.from(this.#replicaKey(replica)) } });
    }
    for (let start = 0; start < deletes.length; start += this.#recordsPerTxn) {
      const operations = deletes.slice(start, start + this.#recordsPerTxn);
      operations.push({
        request_put: { key: Buffer.from(this.markerKey), value: Buffer.alloc(0) },
      });
      await this.#context.request('fleet record delete', () =>
        this.#context.client.kv.txn({ compare: [], success: operations, failure: [] }),
      );
    }
    if (granted) await this.#context.request('fleet lease revoke', () => granted.lease.revoke());
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
    lease.on('keepaliveSucceeded', (response: { header?: IResponseHeader }) => {
      if (this.#current?.lease === lease) this.#observe(response.header);
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

  /**
   * Runs the lease and record check now instead of at the next interval, as when a watch hears
   * from etcd again. etcd may have been restored from a backup, and other replicas would list
   * its old records until this process writes them again.
   */
  checkSoon(): void {
    if (this.#closed || this.#checking) return;
    void this.#check();
  }

  async #check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      await this.#checkLease();
      this.#confirmIfBehind();
      if (this.#publishing === 0) await this.#checkRecords().catch(() => undefined);
    } finally {
      this.#checking = false;
    }
  }

  /**
   * Finds records that changed since this process wrote them: deleted by hand, or older ones
   * back after a restore of etcd from a backup, which also restores the lease. Each differs in
   * its mod revision from this process's last write, and `onLost` listeners write them again.
   */
  async #checkRecords(): Promise<void> {
    for (const [replica, proxies] of this.#written) {
      const stored = new Map<string, number>();
      const { kvs } = await this.#readKeys(`${this.recordsDirectory}${replica}/`);
      for (const kv of kvs) {
        const record = parseKey(kv, this.recordsDirectory);
        if (record) stored.set(record.proxy, Number(kv.mod_revision));
      }
      // A write that started during the read may have changed a record this read missed.
      if (this.#publishing > 0 || this.#written.get(replica) !== proxies) return;
      const stale = [...proxies].flatMap(([proxy, revision]) =>
        stored.get(proxy) === revision ? [] : [proxy],
      );
      if (stale.length === 0) continue;
      for (const proxy of stale) proxies.delete(proxy);
      this.#context.logger.warn(
        { replica, records: stale.length },
        'fleet records changed outside this control plane, writing them again',
      );
      for (const listener of this.#listeners) listener(stale);
    }
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
    // The replica keys went with the lease; the next publish writes each again.
    this.#confirmedTerms.clear();
    this.#context.logger.warn({ lease: granted.id, err: error }, 'fleet lease lost');
    for (const listener of this.#listeners) listener(undefined);
  }
}

/** Reads a replica key: a key right under `directory` with no proxy part. */
function parseReplicaKey(
  kv: IKeyValue,
  directory: string,
): { replica: string; raftTerm: number } | undefined {
  const replica = kv.key.toString().slice(directory.length);
  if (replica === '' || replica.includes('/')) return undefined;
  try {
    const parsed = JSON.parse(kv.value.toString()) as { format?: unknown; raftTerm?: unknown };
    if (parsed.format !== REPLICA_KEY_FORMAT || !Number.isSafeInteger(parsed.raftTerm)) {
      return undefined;
    }
    return { replica, raftTerm: parsed.raftTerm as number };
  } catch {
    return undefined;
  }
}

/** Splits a record key into replica and proxy; undefined for a key of another shape. */
function parseKey(kv: IKeyValue, directory: string): Omit<FleetRecord, 'confirmed'> | undefined {
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
