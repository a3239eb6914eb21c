import type { IncomingMessage } from 'node:http';
import type { Pool } from 'undici';
import type { TargetState } from './target-state.js';

/** How the proxy opens connections of its own to a target, outside the pool (upgrades, 100-continue). */
export interface TargetConnectOptions {
  readonly hostname: string;
  readonly port: number;
  readonly secure: boolean;
  /** CA certificates in PEM; undefined uses the system roots. */
  readonly ca: string | undefined;
  /**
   * SNI and certificate name: `tls.serverName`, else the target's host name; undefined for an
   * IP address, where undici falls back to the request's Host header.
   */
  readonly servername: string | undefined;
  readonly rejectUnauthorized: boolean;
}

/** One target of an upstream, resolved for sending requests. */
export interface UpstreamTarget {
  /** Target URL as configured. */
  readonly url: string;
  /** Name of the upstream the target belongs to. */
  readonly upstream: string;
  /** Scheme, host and port as `URL.origin` spells them. */
  readonly origin: string;
  /**
   * Path of the target URL, trailing slashes reduced to one; empty when the URL has no path.
   * `joinPath` joins it with the request path.
   */
  readonly basePath: string;
  /** Relative share of requests; 0 means the target is never picked. */
  readonly weight: number;
  /** Keep-alive connection pool, shared by every target with the same origin and TLS settings. */
  readonly pool: Pool;
  /** Health and load of the target; kept across snapshots. */
  readonly state: TargetState;
  readonly connect: TargetConnectOptions;
}

/** Chooses the target for each request sent to one upstream. */
export interface Balancer {
  /** Name of the upstream the targets belong to. */
  readonly upstream: string;
  /** Targets in rotation, in configuration order, without those of weight 0. */
  readonly targets: readonly UpstreamTarget[];
  /**
   * Returns the target for the next request, or undefined when no target has a weight above 0.
   * `tried` lists the targets that earlier attempts of the same request went to, undefined on
   * the first attempt. The order of preference is: available targets not tried yet, then
   * unavailable ones not tried yet, then available tried ones, then any target. `req` gives
   * the hash key.
   */
  pick(req?: IncomingMessage, tried?: TriedTargets): UpstreamTarget | undefined;
}

/** Targets that earlier attempts of one request went to, in attempt order. */
export type TriedTargets = readonly UpstreamTarget[];

/** Tells whether an earlier attempt of the request went to `target`. */
export function wasTried(target: UpstreamTarget, tried: TriedTargets | undefined): boolean {
  return tried !== undefined && tried.includes(target);
}

/**
 * Smooth weighted round-robin, the algorithm of nginx. In every cycle of `sum(weights)` picks,
 * each target is picked exactly `weight` times. Picks of a heavy target are spread out instead
 * of bunched, so weights 5, 1, 1 give a a b a c a a. Ties go to the earlier target, and
 * targets with weight 0 are never picked. Unavailable targets drop out of the cycle while they
 * are unavailable; when none is available, all targets take part (panic mode). A balancer built
 * for a new snapshot continues the cycle of the one it replaces.
 */
export class WeightedRoundRobinBalancer implements Balancer {
  readonly upstream: string;
  readonly targets: readonly UpstreamTarget[];
  readonly #weights: Float64Array;
  readonly #current: Float64Array;

  /** `previous` is the balancer of the same upstream in the snapshot that this one replaces. */
  constructor(
    upstream: string,
    targets: readonly UpstreamTarget[],
    previous?: WeightedRoundRobinBalancer,
  ) {
    const inRotation = targets.filter((target) => target.weight > 0);

    this.upstream = upstream;
    this.targets = inRotation;
    this.#weights = Float64Array.from(inRotation, (target) => target.weight);
    this.#current = new Float64Array(inRotation.length);
    if (previous !== undefined) this.#continueCycle(previous);
  }

  /**
   * Copies the current weights of `previous` by target URL. Without it every snapshot, even
   * one that changes another upstream, would restart the cycle at the first target, which
   * then gets every request when snapshots arrive faster than requests. Added targets start
   * at 0, and all values shift by the same amount so that they sum to 0 as in any cycle.
   */
  #continueCycle(previous: WeightedRoundRobinBalancer): void {
    const previousCurrent = new Map<string, number>();
    previous.targets.forEach((target, i) => previousCurrent.set(target.url, previous.#current[i]));

    const current = this.#current;
    let sum = 0;
    this.targets.forEach((target, i) => {
      current[i] = previousCurrent.get(target.url) ?? 0;
      sum += current[i];
    });
    const shift = sum / current.length;
    for (let i = 0; i < current.length; i++) {
      current[i] -= shift;
    }
  }

  pick(_req?: IncomingMessage, tried?: TriedTargets): UpstreamTarget | undefined {
    const count = this.targets.length;
    if (count < 2) {
      return this.targets[0];
    }

    let best = this.#pickAmong(tried, true) ?? this.#pickAmong(tried, false);
    if (best === undefined && tried !== undefined) {
      best = this.#pickAmong(undefined, true) ?? this.#pickAmong(undefined, false);
    }
    return best === undefined ? undefined : this.targets[best];
  }

  /** Picks among the targets not in `tried`, and only available ones when `onlyAvailable`. */
  #pickAmong(tried: TriedTargets | undefined, onlyAvailable: boolean): number | undefined {
    const targets = this.targets;
    const weights = this.#weights;
    const current = this.#current;
    let best = -1;
    let total = 0;
    for (let i = 0; i < targets.length; i++) {
      const target = targets[i];
      if ((onlyAvailable && !target.state.available) || wasTried(target, tried)) {
        continue;
      }
      current[i] += weights[i];
      total += weights[i];
      if (best === -1 || current[i] > current[best]) {
        best = i;
      }
    }
    if (best === -1) {
      return undefined;
    }
    current[best] -= total;
    return best;
  }
}
