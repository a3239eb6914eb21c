import { proxyAddressProblem } from '../../common/address.js';
import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';
import {
  byId,
  clipText,
  firstAckAt,
  MAX_NACK_ERROR_LENGTH,
  type AckRecord,
  type ProxyState,
  type VersionRef,
} from '../stream/proxy-registry.js';

/**
 * Acks a shared record carries, newest last. `apply --wait` reads the ack of the version it
 * waits for, which is among the last few, so the record stays small.
 */
export const SHARED_ACKS = 16;

/** Format version of a shared record's JSON. */
const RECORD_FORMAT = 1;

/** The record one control plane shares of one of its proxies. */
export interface SharedProxy {
  /** The control plane the proxy streams from, as host:port. */
  controlPlane: string;
  state: ProxyState;
  acks: AckRecord[];
  /** The stored addresses that a decoded record shows as `INVALID_ADDRESS`; absent when none. */
  invalidAddresses?: InvalidAddress[];
}

/** A stored address of a shared record that is not host:port. */
export interface InvalidAddress {
  /** The record field: the proxy's traffic address or the control plane it streams from. */
  field: 'address' | 'controlPlane';
  stored: string;
  /** The problem with `stored`, as `proxyAddressProblem` returns it. */
  problem: string;
}

/**
 * Address that a decoded record shows in place of a stored address that is not host:port.
 * Control planes that predate the hello's address check stored any address a proxy sent, and
 * another writer of the store may put any value in `controlPlane`. Such a record still
 * describes a live proxy, so `status` lists it and `apply --wait` waits for it, and this marker
 * keeps the unchecked value out of the status columns and scripts that dial it.
 */
export const INVALID_ADDRESS = '(invalid address)';

/**
 * Maximum length in characters of the address in a shared record. Longer ones are cut and end
 * in "...", as the registry cuts nack errors. The proxy id has at most 253 characters, so a
 * record stays within a few KiB.
 */
export const MAX_SHARED_TEXT = MAX_NACK_ERROR_LENGTH;

/** Encodes a proxy's state and recent acks as the JSON value of its shared record. */
export function encodeSharedProxy(shared: SharedProxy): string {
  const { address, nackError } = shared.state;
  return JSON.stringify({
    format: RECORD_FORMAT,
    controlPlane: shared.controlPlane,
    state: { ...shared.state, address: clipText(address), nackError: clipText(nackError) },
    acks: shared.acks.slice(-SHARED_ACKS),
  });
}

const STRING_FIELDS = ['id', 'address', 'ackedEpoch', 'nackedEpoch', 'nackError', 'fallbackEpoch'];
const NUMBER_FIELDS = [
  'ackedVersion',
  'nackedVersion',
  'connectedAtMs',
  'lastSeenMs',
  'snapshotsSent',
  'fallbackVersion',
];

/**
 * Decodes a shared record. Returns undefined when the value is not a record of this
 * format, such as one written by a newer control plane or by hand. A proxy address or control
 * plane that is not host:port is replaced with `INVALID_ADDRESS`, and `invalidAddresses` keeps
 * the stored value for the log.
 */
export function decodeSharedProxy(value: string): SharedProxy | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (!isObject(parsed) || parsed.format !== RECORD_FORMAT) return undefined;
  const { controlPlane, state, acks } = parsed;
  if (typeof controlPlane !== 'string' || !isObject(state) || !Array.isArray(acks)) {
    return undefined;
  }
  if (typeof state.connected !== 'boolean') return undefined;
  if (!STRING_FIELDS.every((field) => typeof state[field] === 'string')) return undefined;
  if (!NUMBER_FIELDS.every((field) => Number.isFinite(state[field]))) return undefined;
  if (!acks.every(isAck)) return undefined;
  // Replicas older than the instance id write none.
  const instanceId = typeof state.instanceId === 'string' ? state.instanceId : '';
  const decoded = { ...state, instanceId } as unknown as ProxyState;
  const invalidAddresses: InvalidAddress[] = [];
  const shared: SharedProxy = {
    controlPlane: checkAddress('controlPlane', controlPlane, invalidAddresses),
    state: { ...decoded, address: checkAddress('address', decoded.address, invalidAddresses) },
    acks,
  };
  if (invalidAddresses.length > 0) shared.invalidAddresses = invalidAddresses;
  return shared;
}

/**
 * Returns `stored` when it is host:port. Otherwise adds it to `invalid` and returns
 * `INVALID_ADDRESS`.
 */
function checkAddress(
  field: InvalidAddress['field'],
  stored: string,
  invalid: InvalidAddress[],
): string {
  const problem = proxyAddressProblem(stored);
  if (problem === undefined) return stored;
  invalid.push({ field, stored, problem });
  return INVALID_ADDRESS;
}

/** Returns the status of a shared proxy, with its first ack of `convergence` when given. */
export function sharedStatus(shared: SharedProxy, convergence?: VersionRef): ProxyStatus {
  return {
    ...shared.state,
    controlPlane: shared.controlPlane,
    versionAckedAtMs: convergence ? firstAckAt(shared.acks, convergence) : 0,
  };
}

/**
 * Merges the proxy lists of several control planes into one entry per proxy, sorted by id.
 * A proxy that moved between control planes is in several lists. The entry of a connected
 * stream wins over that of a closed one, then the later connection, then the later sign of
 * life. Two connected streams of different proxy processes under one id (started at once
 * through two replicas, before either saw the other's record) both stay, so that `status`
 * shows the duplicate and `apply --wait` waits for both.
 */
export function mergeFleet(...lists: ProxyStatus[][]): ProxyStatus[] {
  const merged = new Map<string, ProxyStatus[]>();
  for (const list of lists) {
    for (const status of list) {
      const entries = merged.get(status.id) ?? [];
      const index = entries.findIndex((known) => !areDistinctStreams(known, status));
      if (index === -1) entries.push(status);
      else if (isNewer(status, entries[index])) entries[index] = status;
      merged.set(status.id, entries);
    }
  }
  return [...merged.values()].flat().sort(byId);
}

/** True for two connected entries of different proxy processes. */
function areDistinctStreams(a: ProxyStatus, b: ProxyStatus): boolean {
  if (!a.connected || !b.connected) return false;
  return a.instanceId !== '' && b.instanceId !== '' && a.instanceId !== b.instanceId;
}

function isNewer(candidate: ProxyStatus, known: ProxyStatus): boolean {
  if (candidate.connected !== known.connected) return candidate.connected;
  if (candidate.connectedAtMs !== known.connectedAtMs) {
    return candidate.connectedAtMs > known.connectedAtMs;
  }
  return candidate.lastSeenMs > known.lastSeenMs;
}

function isAck(value: unknown): value is AckRecord {
  return (
    isObject(value) &&
    typeof value.epoch === 'string' &&
    Number.isFinite(value.version) &&
    Number.isFinite(value.atMs)
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
