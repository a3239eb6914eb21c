import type { Pool } from 'undici';

/** One target of an upstream, resolved for sending requests. */
export interface UpstreamTarget {
  /** Target URL as configured. */
  readonly url: string;
  /** Scheme, host and port as `URL.origin` spells them; targets with the same origin share a pool. */
  readonly origin: string;
  /**
   * Path of the target URL without trailing slashes; empty when the URL has no path. The
   * proxy prepends it to the request path, so `/v1` and `/users/1` become `/v1/users/1`.
   */
  readonly basePath: string;
  /** Relative share of requests; 0 means the target is never picked. */
  readonly weight: number;
  /** Keep-alive connection pool for `origin`, shared with every other target of that origin. */
  readonly pool: Pool;
}

/** Chooses the target for each request sent to one upstream. */
export interface Balancer {
  /** Name of the upstream the targets belong to. */
  readonly upstream: string;
  /** Returns the target for the next request, or undefined when no target has a weight above 0. */
  pick(): UpstreamTarget | undefined;
}

/**
 * Smooth weighted round-robin, the algorithm of nginx. In every cycle of `sum(weights)` picks,
 * each target is picked exactly `weight` times. Picks of a heavy target are spread out instead
 * of bunched, so weights 5, 1, 1 give a a b a c a a. Ties go to the earlier target, and
 * targets with weight 0 are never picked.
 */
export class WeightedRoundRobinBalancer implements Balancer {
  readonly upstream: string;
  /** Targets in rotation, in configuration order, without those of weight 0. */
  readonly targets: readonly UpstreamTarget[];
  readonly #weights: Float64Array;
  readonly #current: Float64Array;
  readonly #totalWeight: number;

  constructor(upstream: string, targets: readonly UpstreamTarget[]) {
    const inRotation = targets.filter((target) => target.weight > 0);

    this.upstream = upstream;
    this.targets = inRotation;
    this.#weights = Float64Array.from(inRotation, (target) => target.weight);
    this.#current = new Float64Array(inRotation.length);
    this.#totalWeight = inRotation.reduce((sum, target) => sum + target.weight, 0);
  }

  pick(): UpstreamTarget | undefined {
    const count = this.targets.length;
    if (count < 2) {
      return this.targets[0];
    }

    const weights = this.#weights;
    const current = this.#current;
    let best = 0;
    for (let i = 0; i < count; i++) {
      current[i] += weights[i];
      if (current[i] > current[best]) {
        best = i;
      }
    }
    current[best] -= this.#totalWeight;
    return this.targets[best];
  }
}
