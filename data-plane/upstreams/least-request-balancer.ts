import type { IncomingMessage } from 'node:http';
import { wasTried, type Balancer, type TriedTargets, type UpstreamTarget } from './balancer.js';

/**
 * Least request with the power of two choices: draws two different targets at random and sends
 * the request to the one with fewer requests in flight per unit of weight. It avoids the herd
 * that always picking the global minimum causes when many requests start at once, and costs
 * two random numbers per pick. The first draw is weighted and wins ties, so targets with equal
 * loads, idle ones included, share requests in proportion to their weights. Unavailable
 * targets are skipped unless no target is available (panic mode), and a retry avoids the
 * targets that the request already went to while an untried one exists.
 */
export class LeastRequestBalancer implements Balancer {
  readonly upstream: string;
  readonly targets: readonly UpstreamTarget[];
  /** Sum of the weights of `targets[0]` to `targets[i]` at index `i`, for weighted draws. */
  readonly #cumulativeWeights: Float64Array;

  constructor(upstream: string, targets: readonly UpstreamTarget[]) {
    this.upstream = upstream;
    this.targets = targets.filter((target) => target.weight > 0);
    this.#cumulativeWeights = new Float64Array(this.targets.length);
    let sum = 0;
    this.targets.forEach((target, i) => {
      sum += target.weight;
      this.#cumulativeWeights[i] = sum;
    });
  }

  pick(_req?: IncomingMessage, tried?: TriedTargets): UpstreamTarget | undefined {
    const targets = this.targets;
    if (targets.length < 2) {
      return targets[0];
    }

    // Widens the candidates step by step: untried and available, untried, then (only for a
    // retry after every target was tried) available, then all.
    let first = this.#drawWeighted(tried, true);
    let onlyAvailable = true;
    let among = tried;
    if (first === -1) {
      onlyAvailable = false;
      first = this.#drawWeighted(among, onlyAvailable);
    }
    if (first === -1 && tried !== undefined) {
      among = undefined;
      onlyAvailable = true;
      first = this.#drawWeighted(among, onlyAvailable);
      if (first === -1) {
        onlyAvailable = false;
        first = this.#drawWeighted(among, onlyAvailable);
      }
    }
    const second = this.#draw(first, among, onlyAvailable);

    if (second === -1) {
      return targets[first];
    }
    return load(targets[second]) < load(targets[first]) ? targets[second] : targets[first];
  }

  /**
   * Draws a random index with a probability in proportion to its target's weight, among the
   * targets not in `tried` that are available when `onlyAvailable`; -1 when none is.
   */
  #drawWeighted(tried: TriedTargets | undefined, onlyAvailable: boolean): number {
    const targets = this.targets;
    const cumulative = this.#cumulativeWeights;
    const drawn = upperBound(cumulative, Math.random() * cumulative[cumulative.length - 1]);
    if (isCandidate(targets[drawn], tried, onlyAvailable)) {
      return drawn;
    }

    // The drawn target is excluded, so draw again among the candidates only.
    let total = 0;
    for (const target of targets) {
      if (isCandidate(target, tried, onlyAvailable)) total += target.weight;
    }
    let remaining = Math.random() * total;
    let last = -1;
    for (let i = 0; i < targets.length; i++) {
      if (!isCandidate(targets[i], tried, onlyAvailable)) continue;
      last = i;
      remaining -= targets[i].weight;
      if (remaining < 0) return i;
    }
    // Rounding can leave `remaining` at 0 after the last candidate.
    return last;
  }

  /**
   * Draws a random index other than `skip` whose target is not in `tried`, and is available
   * when `onlyAvailable`; -1 when none is.
   */
  #draw(skip: number, tried: TriedTargets | undefined, onlyAvailable: boolean): number {
    const targets = this.targets;
    const count = targets.length;
    const start = Math.floor(Math.random() * count);
    for (let step = 0; step < count; step++) {
      const index = (start + step) % count;
      const target = targets[index];
      if (index !== skip && isCandidate(target, tried, onlyAvailable)) {
        return index;
      }
    }
    return -1;
  }
}

function isCandidate(
  target: UpstreamTarget,
  tried: TriedTargets | undefined,
  onlyAvailable: boolean,
): boolean {
  return (!onlyAvailable || target.state.available) && !wasTried(target, tried);
}

/** Returns the first index whose value is above `value`; the last index when none is. */
function upperBound(values: Float64Array, value: number): number {
  let low = 0;
  let high = values.length - 1;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (values[middle] <= value) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

/**
 * Requests in flight per unit of weight. Idle targets tie at 0, and the weighted first draw
 * then decides.
 */
function load(target: UpstreamTarget): number {
  return target.state.active / target.weight;
}
