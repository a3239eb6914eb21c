import { setTimeout as sleep } from 'node:timers/promises';

import { LoomError } from '../common/errors.js';
import type { ProxyStatus, StatusResponse } from '../proto/gen/loom/v1/admin.js';
import type { AdminClient } from './admin-client.js';

/** How often `apply --wait` reads the status, in milliseconds. */
const POLL_MS = 50;

/** How long the control plane may serve another epoch before a wait fails, in milliseconds. */
const EPOCH_GRACE_MS = 10_000;

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
  /** True when every connected proxy applied or nacked the version before the deadline. */
  settled: boolean;
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
  /** Called after every status read with how many proxies applied the version, of how many. */
  onProgress?: (applied: number, total: number) => void;
}

/**
 * Polls the control plane until every connected proxy applied `version` (or
 * a newer one of the same epoch) or nacked it, or until the timeout. It
 * never waits longer than `timeoutMs`: each status call gets the remaining
 * time as its deadline, and a failed call is retried until then.
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
    settled: false,
  };
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
    } else if (status) {
      mismatchSince = undefined;
      last = evaluate(status, options);
      const applied = last.proxies.filter((proxy) => proxy.state === 'applied').length;
      options.onProgress?.(applied, last.proxies.length);
      if (last.settled) return last;
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

function evaluate(status: StatusResponse, options: WaitOptions): WaitResult {
  const committedAtMs = options.committedAtMs || status.versionCommittedAtMs;
  const proxies = status.proxies
    .filter((proxy) => proxy.connected)
    .map((proxy) => outcomeOf(proxy, options, committedAtMs));
  const settled = proxies.every((proxy) => proxy.state !== 'pending');
  return { epoch: options.epoch, version: options.version, proxies, settled };
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
