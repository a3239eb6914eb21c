import type { sendUnaryData, ServerUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';

import type { CallCredentials, Permission } from '../../common/auth.js';
import { LoomError } from '../../common/errors.js';
import { toServiceError } from '../../common/grpc-errors.js';
import type { Logger } from '../../common/logger.js';
import type {
  ApplyRequest,
  ApplyResponse,
  Change,
  DeleteRequest,
  DeleteResponse,
  GetConfigResponse,
  ProxyStatus,
  StatusRequest,
  StatusResponse,
} from '../../proto/gen/loom/v1/admin.js';
import {
  decodeSharedProxy,
  INVALID_ADDRESS,
  type InvalidAddress,
  mergeFleet,
  sharedStatus,
  type SharedProxy,
} from '../fleet/fleet-records.js';
import type { CommitTimes } from '../snapshot/commit-times.js';
import { ConfigState } from '../snapshot/config-state.js';
import type { SnapshotCache } from '../snapshot/snapshot-cache.js';
import type { ProxyRegistry, VersionRef } from '../stream/proxy-registry.js';
import type { FleetStore, Store } from '../store/store.js';
import { planApply, planDelete, type Plan, type StoredConfig, type UnreadableKey } from './plan.js';
import { findUnreadableKeys, unreadableFields } from './unreadable-keys.js';

/**
 * How long one read of the other replicas' proxy records serves status calls, in milliseconds.
 * `apply --wait` reads the status every 50 ms, so several waits at once share reads.
 */
const FLEET_READ_MAX_AGE_MS = 100;

/** Bad records remembered as logged; past this many, each is logged once more. */
const LOGGED_RECORDS_LIMIT = 1_000;

/** The decoded records of the other replicas, and how many could not be decoded. */
interface SharedRead {
  proxies: SharedProxy[];
  unreadable: number;
}

/**
 * How often an apply without `if_version` plans and commits when writes through other replicas
 * keep changing the store. Writes through this replica queue instead (see `#serialized`).
 */
const MAX_PLAN_ATTEMPTS = 8;
/**
 * Upper bound of the random wait before the next attempt, in milliseconds, times the attempt
 * number. Replicas that lost to each other's commit then retry at different moments instead of
 * meeting again.
 */
const REPLAN_JITTER_MS = 25;

interface AdminDependencies {
  store: Store;
  prefix: string;
  cache: SnapshotCache;
  registry: ProxyRegistry;
  commitTimes: CommitTimes;
  logger: Logger;
  /** This control plane as host:port; empty until it listens. */
  controlPlane: () => string;
  /** The records other replicas share, and this process's replica id among them. */
  fleet?: { store: FleetStore; replica: string };
}

/**
 * The operator API behind loomctl. Every write reads the stored config at one
 * revision, validates the whole result, and commits on the condition that no
 * Loom key changed since that revision, so a concurrent apply can never slip
 * in between validation and write.
 */
export class AdminApi {
  readonly #deps: AdminDependencies;
  readonly #logger: Logger;
  #fleetRead: { startedAtMs: number; shared: Promise<SharedRead> } | undefined;
  /**
   * Newest decoded record of each other replica's proxy, by replica and proxy id. An older
   * copy, as a restore of etcd from a backup brings back, does not replace it. Entries whose
   * record is gone from a read are dropped.
   */
  readonly #newestRecords = new Map<string, SharedProxy>();
  /** Unreadable records already logged, as replica/proxy, so a poll logs each once. */
  readonly #loggedRecords = new Set<string>();
  /** Settles when the last write queued by `#serialized` has finished. */
  #lastWrite: Promise<unknown> = Promise.resolve();

  constructor(deps: AdminDependencies) {
    this.#deps = deps;
    this.#logger = deps.logger.child({ component: 'admin' });
  }

  /** Applies `request`. `cancelled` returns true once the client gave up on the call. */
  async apply(request: ApplyRequest, cancelled = () => false): Promise<ApplyResponse> {
    const epoch = await this.#deps.store.epoch();
    let unreadable: UnreadableKey[] = [];
    const commit = () =>
      this.#commitPlanned(request.ifVersion, request.dryRun, (stored) => {
        unreadable = stored.unreadable ?? [];
        return planApply(this.#deps.prefix, stored, request, request.prune);
      });
    const { plan, revision, committedAtMs } = request.dryRun
      ? await commit()
      : await this.#serialized(commit, cancelled);
    const committed = committedAtMs > 0;
    if (committed) {
      this.#deps.commitTimes.record(epoch, revision, committedAtMs);
      this.#logger.info(
        { epoch, version: revision, changes: plan.changes.length },
        'apply committed',
      );
    }
    return {
      version: revision,
      epoch,
      changes: toChanges(plan, request.includeValues),
      committed,
      committedAtMs,
      ...unreadableFields(unreadable),
    };
  }

  /** Deletes one resource. `cancelled` returns true once the client gave up on the call. */
  async delete(request: DeleteRequest, cancelled = () => false): Promise<DeleteResponse> {
    if (request.kind !== 'route' && request.kind !== 'upstream') {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `unknown kind "${request.kind}"; use route or upstream`,
      );
    }
    const kind = request.kind;
    const epoch = await this.#deps.store.epoch();
    let unreadable: UnreadableKey[] = [];
    const { plan, revision, committedAtMs } = await this.#serialized(
      () =>
        this.#commitPlanned(request.ifVersion, false, (stored) => {
          unreadable = stored.unreadable ?? [];
          return planDelete(this.#deps.prefix, stored, kind, request.name);
        }),
      cancelled,
    );
    this.#deps.commitTimes.record(epoch, revision, committedAtMs);
    this.#logger.info({ version: revision, kind, resourceName: request.name }, 'delete committed');
    return { version: revision, changes: toChanges(plan, false), ...unreadableFields(unreadable) };
  }

  async getConfig(): Promise<GetConfigResponse> {
    const [epoch, stored] = await Promise.all([this.#deps.store.epoch(), this.#readStored()]);
    return {
      version: stored.revision,
      epoch,
      routes: stored.routes,
      upstreams: stored.upstreams,
      ...unreadableFields(stored.unreadable ?? []),
    };
  }

  /**
   * Returns the served version and every known proxy: this control plane's, and those that
   * other replicas on the store share. With `request.version`, it also returns when that
   * version was committed and when each proxy first acked it or a newer version of the same
   * epoch. The ack times of another replica's proxies come from that replica's clock.
   */
  async status(request: StatusRequest): Promise<StatusResponse> {
    const snapshot = this.#deps.cache.current?.snapshot;
    const epoch = snapshot?.epoch ?? '';
    const target = request.version > 0 ? { epoch, version: request.version } : undefined;
    const controlPlane = this.#deps.controlPlane();
    const local = this.#deps.registry.list(target, controlPlane);
    const { proxies, fleetError } = await this.#sharedProxies(target);
    return {
      version: snapshot?.version ?? 0,
      epoch,
      // The registry lists each id once, sorted, so only other replicas' records need a merge.
      proxies: proxies.length === 0 ? local : mergeFleet(local, proxies),
      versionCommittedAtMs: target ? this.#deps.commitTimes.get(epoch, request.version) : 0,
      controlPlane,
      fleetError,
    };
  }

  /** The proxies other replicas share; none, with the reason, when the store cannot be read. */
  async #sharedProxies(
    target: VersionRef | undefined,
  ): Promise<{ proxies: ProxyStatus[]; fleetError: string }> {
    const fleet = this.#deps.fleet;
    if (!fleet) return { proxies: [], fleetError: '' };
    try {
      const { proxies, unreadable } = await this.#readShared(fleet);
      // A record this replica cannot decode hides a proxy, so the list is incomplete.
      const fleetError =
        unreadable === 0
          ? ''
          : `${unreadable} proxy record(s) of other control planes could not be decoded; ` +
            'they may come from a newer Loom version, see the control plane log';
      return { proxies: proxies.map((proxy) => sharedStatus(proxy, target)), fleetError };
    } catch (error) {
      return { proxies: [], fleetError: error instanceof Error ? error.message : String(error) };
    }
  }

  /** Reads and decodes the other replicas' records, or returns a read younger than the limit. */
  #readShared(fleet: { store: FleetStore; replica: string }): Promise<SharedRead> {
    const now = Date.now();
    const previous = this.#fleetRead;
    if (previous && now - previous.startedAtMs < FLEET_READ_MAX_AGE_MS) return previous.shared;

    const shared = fleet.store.read().then((records) => {
      const read: SharedRead = { proxies: [], unreadable: 0 };
      const listed = new Set<string>();
      for (const record of records) {
        if (record.replica === fleet.replica) continue;
        const decoded = decodeSharedProxy(record.value);
        if (decoded && decoded.state.id === record.proxy) {
          const newest = this.#newestRecord(record.replica, record.proxy, decoded);
          listed.add(recordKey(record.replica, record.proxy));
          // An unconfirmed record may belong to a replica that is gone, so it shows no stream.
          const connected = newest.state.connected && record.confirmed;
          read.proxies.push({ ...newest, state: { ...newest.state, connected } });
          for (const invalid of decoded.invalidAddresses ?? []) {
            this.#logInvalidAddress(record.replica, record.proxy, invalid);
          }
        } else {
          read.unreadable += 1;
          this.#logUnreadable(record.replica, record.proxy, record.value);
        }
      }
      for (const key of this.#newestRecords.keys()) {
        if (!listed.has(key)) this.#newestRecords.delete(key);
      }
      return read;
    });
    this.#fleetRead = { startedAtMs: now, shared };
    // A failed read is not reused: the next call reads again.
    shared.catch(() => {
      if (this.#fleetRead?.shared === shared) this.#fleetRead = undefined;
    });
    return shared;
  }

  /**
   * Returns `decoded`, or the record of the same replica and proxy that an earlier read
   * returned when that one is newer. A replica updates a proxy's `lastSeenMs` on each connect,
   * disconnect, ack and nack, so a smaller value marks an older copy, such as the record of a
   * proxy that was still connected when the restored backup was taken. The replica that owns
   * the record writes it again once its watch hears from etcd again, or at its next record check
   * (every 5 s). Until then a control plane that read no newer copy before the restore lists the
   * restored one.
   */
  // NOTE: both values come from the clock of the replica that wrote them, so a step back of
  // that clock keeps the state read before the step until the new values pass it.
  #newestRecord(replica: string, proxy: string, decoded: SharedProxy): SharedProxy {
    const key = recordKey(replica, proxy);
    const known = this.#newestRecords.get(key);
    if (known && isOlderRecord(decoded, known)) {
      if (this.#firstReport(`older:${key}`)) {
        this.#logger.warn(
          {
            replica,
            proxyId: proxy,
            lastSeenMs: decoded.state.lastSeenMs,
            newerLastSeenMs: known.state.lastSeenMs,
          },
          'shared proxy record is older than one read before, as after an etcd restore, so ' +
            'status lists the newer one until its control plane writes it again',
        );
      }
      return known;
    }
    this.#loggedRecords.delete(`older:${key}`);
    this.#newestRecords.set(key, decoded);
    return decoded;
  }

  #logUnreadable(replica: string, proxy: string, value: string): void {
    if (!this.#firstReport(`${replica}/${proxy}`)) return;
    this.#logger.warn(
      { replica, proxyId: proxy, value: value.slice(0, 200) },
      'shared proxy record not decoded',
    );
  }

  #logInvalidAddress(replica: string, proxy: string, invalid: InvalidAddress): void {
    if (!this.#firstReport(`${replica}/${proxy}/${invalid.field}`)) return;
    this.#logger.warn(
      {
        replica,
        proxyId: proxy,
        field: invalid.field,
        address: invalid.stored.slice(0, 200),
        problem: invalid.problem,
      },
      `shared proxy record has an invalid address; status shows it as ${INVALID_ADDRESS}`,
    );
  }

  /** Returns true the first time `key` is reported, so each bad record is logged once. */
  #firstReport(key: string): boolean {
    if (this.#loggedRecords.has(key)) return false;
    if (this.#loggedRecords.size >= LOGGED_RECORDS_LIMIT) this.#loggedRecords.clear();
    this.#loggedRecords.add(key);
    return true;
  }

  /**
   * Runs `write` once every write that this process queued before it has finished, whether it
   * failed or not. Concurrent applies to one control plane then read, plan and commit one after
   * another instead of failing each other's store condition, which only `MAX_PLAN_ATTEMPTS`
   * retries would absorb. Writes through other replicas still meet the condition and retry.
   */
  #serialized<T>(write: () => Promise<T>, cancelled: () => boolean): Promise<T> {
    const result = this.#lastWrite.then(() => {
      // A client that gave up while its write waited must not have it committed later.
      if (cancelled()) {
        throw new LoomError(
          'LOOM_UNAVAILABLE',
          'the call was cancelled or timed out while earlier writes ran; nothing was written',
          { retryable: true },
        );
      }
      return write();
    });
    this.#lastWrite = result.catch(() => undefined);
    return result;
  }

  /**
   * Plans against a fresh read and commits on the condition that nothing
   * changed since that read (or since `ifVersion` when given). `ifVersion` 0
   * requires a read without routes or upstreams, as on a new store. Like a
   * key's mod revision 0 in etcd, it means "none exists now", so a store whose
   * resources were all deleted passes too. Returns `committedAtMs` 0 when
   * nothing was written.
   */
  async #commitPlanned(
    ifVersion: number | undefined,
    dryRun: boolean,
    makePlan: (stored: StoredConfig) => Plan,
  ): Promise<{ plan: Plan; revision: number; committedAtMs: number }> {
    for (let attempt = 1; ; attempt++) {
      const stored = await this.#readStored();
      if (ifVersion !== undefined && ifVersion > stored.revision) {
        throw new LoomError(
          'LOOM_INVALID_ARGUMENT',
          `--if-version ${ifVersion} is ahead of the store, which is at version ${stored.revision}; ` +
            'pass a version that "loomctl get" printed',
        );
      }
      const plan = makePlan(stored);
      if (ifVersion !== undefined && stored.lastModified > ifVersion) {
        // Checked here too, so that an apply that would change nothing still reports the conflict.
        throw await this.#conflict(ifVersion);
      }
      if (dryRun || plan.operations.length === 0) {
        return { plan, revision: stored.revision, committedAtMs: 0 };
      }

      try {
        // Version 0 commits on the read, which held no resource, because the store's own
        // check at revision 0 would also fail on keys that are no part of the configuration.
        const revision = await this.#deps.store.commit(plan.operations, {
          ifRevision: ifVersion || stored.revision,
          prefix: this.#deps.prefix,
        });
        return { plan, revision, committedAtMs: Date.now() };
      } catch (error) {
        const retry =
          error instanceof LoomError &&
          error.code === 'LOOM_VERSION_CONFLICT' &&
          ifVersion === undefined &&
          attempt < MAX_PLAN_ATTEMPTS;
        if (retry) {
          await sleep(Math.random() * REPLAN_JITTER_MS * attempt);
          continue;
        }
        if (error instanceof LoomError && error.code === 'LOOM_VERSION_CONFLICT') {
          throw await this.#conflict(ifVersion ?? stored.revision, error);
        }
        throw error;
      }
    }
  }

  /** Rewords a store conflict for loomctl, naming the expected and the current version. */
  async #conflict(expected: number, error?: LoomError): Promise<LoomError> {
    const current = await this.#deps.store.range(this.#deps.prefix).then(
      (range) => String(range.revision),
      () => 'unknown',
    );
    if (expected === 0) {
      return new LoomError(
        'LOOM_VERSION_CONFLICT',
        'version conflict: --if-version 0 expects a store without routes or upstreams, but ' +
          `the store holds some (it is now at version ${current}); nothing was written. ` +
          'Run "loomctl get" to see them, and pass the version it prints.',
        { cause: error },
      );
    }
    return new LoomError(
      'LOOM_VERSION_CONFLICT',
      `version conflict: expected the configuration at version ${expected}, but it changed ` +
        `since (the store is now at version ${current}); nothing was written. ` +
        'Run "loomctl diff" to see the current differences and apply again.',
      { cause: error },
    );
  }

  /**
   * Reads the stored configuration. `lastModified` is the newest modification
   * revision of a stored resource, unreadable ones included; a delete leaves no
   * key, so it does not count.
   */
  async #readStored(): Promise<
    StoredConfig & { lastModified: number; unreadable: UnreadableKey[] }
  > {
    const range = await this.#deps.store.range(this.#deps.prefix);
    const state = new ConfigState(this.#deps.prefix, this.#logger);
    state.reset(range);
    const lastModified = range.items.reduce((max, item) => Math.max(max, item.modRevision), 0);
    const routes = state.routes();
    const upstreams = state.upstreams();
    return {
      revision: range.revision,
      lastModified,
      routes,
      upstreams,
      unreadable: findUnreadableKeys(this.#deps.prefix, range.items, { routes, upstreams }),
    };
  }
}

/** Returns the key of one replica's record of one proxy in `AdminApi`'s newest records. */
function recordKey(replica: string, proxy: string): string {
  return `${replica}/${proxy}`;
}

/** True when `candidate` is an older write of the record than `known`. */
function isOlderRecord(candidate: SharedProxy, known: SharedProxy): boolean {
  if (candidate.state.lastSeenMs !== known.state.lastSeenMs) {
    return candidate.state.lastSeenMs < known.state.lastSeenMs;
  }
  return candidate.state.connectedAtMs < known.state.connectedAtMs;
}

/** Checks a call's credentials; returns the error to send, or undefined to proceed. */
export type AdminAuthorizer = (
  call: CallCredentials,
  permission: Permission,
) => LoomError | undefined;

/** Converts planned changes into their wire form, with the stored values when asked for. */
function toChanges(plan: Plan, includeValues: boolean): Change[] {
  if (!includeValues) {
    return plan.changes.map(({ kind, name, action }) => ({
      kind,
      name,
      action,
      beforeJson: '',
      afterJson: '',
    }));
  }
  return plan.changes.map((change) => {
    const values = plan.values.get(`${change.kind}/${change.name}`);
    return { ...change, beforeJson: values?.beforeJson ?? '', afterJson: values?.afterJson ?? '' };
  });
}

/**
 * Wraps an AdminApi as the AdminService implementation of a gRPC server.
 * `authorize` runs before every call; an error it returns is sent instead.
 */
export function createAdminService(
  api: AdminApi,
  logger: Logger,
  authorize: AdminAuthorizer = () => undefined,
): UntypedServiceImplementation {
  const unary =
    <Req, Res>(
      permission: Permission,
      handler: (request: Req, cancelled: () => boolean) => Promise<Res> | Res,
    ) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const denied = authorize(call, permission);
      if (denied !== undefined) {
        callback(toServiceError(denied), null);
        return;
      }
      Promise.resolve()
        .then(() => handler(call.request, () => call.cancelled))
        .then(
          (response) => callback(null, response),
          (error: unknown) => {
            if (!(error instanceof LoomError)) logger.error({ err: error }, 'admin call failed');
            callback(toServiceError(error), null);
          },
        );
    };
  return {
    apply: unary('write', (request: ApplyRequest, cancelled) => api.apply(request, cancelled)),
    getConfig: unary('read', () => api.getConfig()),
    delete: unary('write', (request: DeleteRequest, cancelled) => api.delete(request, cancelled)),
    status: unary('read', (request: StatusRequest) => api.status(request)),
  };
}
