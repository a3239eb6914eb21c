import { setTimeout as sleep } from 'node:timers/promises';

import { LoomError } from '../common/errors.js';
import type { ProxyStatus, StatusResponse } from '../proto/gen/loom/v1/admin.js';
import type { AdminClient } from './admin-client.js';

/** How often `apply --wait` reads the status, in milliseconds. */
const POLL_MS = 50;

/** How long the control plane may serve another epoch before a wait fails, in milliseconds. */
const EPOCH_GRACE_MS = 10_000;

/**
 * How long a wait keeps waiting for a proxy that disconnected before applying the version, in
 * milliseconds, counted from the first status read that no longer lists it as connected. A
 * restarted control plane lists no proxy until it reconnects, and a proxy's reconnect backoff
 * is at most 10 s.
 */
const RECONNECT_GRACE_MS = 12_000;

/** Where one proxy stands with the awaited version. */
export type ProxyOutcome =
  | { id: string; state: 'applied'; convergenceMs: number | undefined }
  | { id: string; state: 'nacked'; error: string; nackedVersion: number }
  | { id: string; state: 'pending'; servedVersion: number; servedEpoch: string };

/** Result of waiting for a version. */
export interface WaitResult {
  epoch: string;
  version: number;
  /** One entry per proxy connected at the last status read, sorted by id. */
  proxies: ProxyOutcome[];
  /**
   * One entry per proxy that was connected at an earlier status read of this wait but not at
   * the last one, sorted by id, with its outcome at the last read that listed it. A proxy
   * that reconnects before the wait ends is in `proxies` again.
   */
  disconnected: ProxyOutcome[];
  /** True when every connected proxy applied or nacked the version before the deadline. */
  settled: boolean;
  /**
   * Reason the last status read could not list the proxies of other control-plane replicas;
   * undefined when it could. Such a read settles nothing.
   */
  fleetError?: string;
}

/** Settings of `waitForVersion`. */
export interface WaitOptions {
  epoch: string;
  version: number;
  /** When the version was committed, in ms since the Unix epoch; 0 uses the control plane's record. */
  committedAtMs: number;
  timeoutMs: number;
  /** How long another epoch may be served before the wait fails; default {@link EPOCH_GRACE_MS}. */
  epochGraceMs?: number;
  /**
   * How long a proxy that disconnected before applying the version may take to come back
   * before the wait ends without it; default {@link RECONNECT_GRACE_MS}.
   */
  reconnectGraceMs?: number;
  /** Called after every status read with how many proxies applied the version, of how many. */
  onProgress?: (applied: number, total: number) => void;
}

/**
 * Polls the control plane until every connected proxy applied `version` (or
 * a newer one of the same epoch) or nacked it, or until the timeout. It
 * never waits longer than `timeoutMs`: each status call gets the remaining
 * time as its deadline, and a failed call is retried until then. A proxy
 * that disconnects during the wait before applying the version is waited
 * for {@link RECONNECT_GRACE_MS} more, and then listed in `disconnected`.
 *
 * @throws LoomError `LOOM_VERSION_CONFLICT` when the control plane serves
 *   another epoch (a wiped or restored store) for longer than
 *   {@link EPOCH_GRACE_MS}, because the version then means something else.
 */
export async function waitForVersion(
  client: AdminClient,
  options: WaitOptions,
): Promise<WaitResult> {
  const deadline = Date.now() + options.timeoutMs;
  let last: WaitResult = {
    epoch: options.epoch,
    version: options.version,
    proxies: [],
    disconnected: [],
    settled: false,
  };
  const seen = new Map<string, ProxyOutcome>();
  /** When a status read first missed each disconnected proxy, in ms since the Unix epoch. */
  const missingSince = new Map<string, number>();
  const graceMs = options.reconnectGraceMs ?? RECONNECT_GRACE_MS;
  let mismatchSince: number | undefined;

  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) return last;

    const status = await client.status({ version: options.version }, remaining).catch((error) => {
      if (error instanceof LoomError && error.code === 'LOOM_UNAVAILABLE') return undefined;
      throw error;
    });
    if (status && status.epoch !== '' && status.epoch !== options.epoch) {
      // A control plane that has not yet re-read a restored store still serves the old epoch
      // for up to its watch reconnect backoff, so a mismatch counts only once it persists.
      mismatchSince ??= Date.now();
      const graceMs = options.epochGraceMs ?? EPOCH_GRACE_MS;
      if (Date.now() - mismatchSince >= graceMs) throw epochConflict(options, status.epoch);
    } else if (status?.fleetError) {
      // Proxies of other replicas are missing from this read, so it cannot show convergence.
      last = { ...last, settled: false, fleetError: status.fleetError };
    } else if (status) {
      mismatchSince = undefined;
      last = evaluate(status, options, seen);
      const now = Date.now();
      for (const proxy of last.proxies) missingSince.delete(proxy.id);
      for (const proxy of last.disconnected) {
        if (!missingSince.has(proxy.id)) missingSince.set(proxy.id, now);
      }
      const applied = last.proxies.filter((proxy) => proxy.state === 'applied').length;
      options.onProgress?.(applied, last.proxies.length);
      // A proxy that left without applying the version may be reconnecting.
      const returning = last.disconnected.some(
        (proxy) => proxy.state === 'pending' && now - missingSince.get(proxy.id)! < graceMs,
      );
      if (last.settled && !returning) return last;
    }
    await sleep(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
  }
}

function epochConflict(options: WaitOptions, served: string): LoomError {
  return new LoomError(
    'LOOM_VERSION_CONFLICT',
    `version ${options.version} was committed in epoch ${options.epoch}, but the control ` +
      `plane serves epoch ${served} (the store was wiped or restored); run ` +
      '"loomctl diff" and apply again',
  );
}

/**
 * Evaluates one status read and updates `seen`, which maps each proxy that was connected at
 * some read of this wait to its latest outcome. A proxy that the control plane no longer
 * lists, as after a control-plane restart, keeps its outcome from `seen`.
 */
function evaluate(
  status: StatusResponse,
  options: WaitOptions,
  seen: Map<string, ProxyOutcome>,
): WaitResult {
  const committedAtMs = options.committedAtMs || status.versionCommittedAtMs;
  const listed = new Map(status.proxies.map((proxy) => [proxy.id, proxy]));
  const proxies: ProxyOutcome[] = [];
  for (const proxy of status.proxies) {
    if (!proxy.connected) continue;
    const outcome = outcomeOf(proxy, options, committedAtMs);
    proxies.push(outcome);
    seen.set(proxy.id, outcome);
  }

  const disconnected: ProxyOutcome[] = [];
  for (const [id, previous] of seen) {
    const proxy = listed.get(id);
    if (proxy?.connected) continue;
    const outcome = proxy ? outcomeOf(proxy, options, committedAtMs) : previous;
    seen.set(id, outcome);
    disconnected.push(outcome);
  }
  disconnected.sort(compareIds);

  const settled = proxies.every((proxy) => proxy.state !== 'pending');
  return { epoch: options.epoch, version: options.version, proxies, disconnected, settled };
}

function compareIds(a: ProxyOutcome, b: ProxyOutcome): number {
  if (a.id === b.id) return 0;
  return a.id < b.id ? -1 : 1;
}

function outcomeOf(proxy: ProxyStatus, options: WaitOptions, committedAtMs: number): ProxyOutcome {
  const { epoch, version } = options;
  if (proxy.ackedEpoch === epoch && proxy.ackedVersion >= version) {
    const known = proxy.versionAckedAtMs > 0 && committedAtMs > 0;
    const convergenceMs = known ? Math.max(0, proxy.versionAckedAtMs - committedAtMs) : undefined;
    return { id: proxy.id, state: 'applied', convergenceMs };
  }
  if (proxy.nackedEpoch === epoch && proxy.nackedVersion >= version) {
    return {
      id: proxy.id,
      state: 'nacked',
      error: proxy.nackError,
      nackedVersion: proxy.nackedVersion,
    };
  }
  return {
    id: proxy.id,
    state: 'pending',
    servedVersion: proxy.ackedVersion,
    servedEpoch: proxy.ackedEpoch,
  };
}

/** Returns the nearest-rank percentile `p` (0-100) of `values`, or undefined when empty. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}
