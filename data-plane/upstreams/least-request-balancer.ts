import type { IncomingMessage } from 'node:http';
import { isEligible, type Balancer, type UpstreamTarget } from './balancer.js';

/**
 * Least request with the power of two choices: draws two different targets at random and sends
 * the request to the one with fewer requests in flight per unit of weight. It avoids the herd
 * that always picking the global minimum causes when many requests start at once, and costs
 * two random numbers per pick. Unavailable targets are skipped unless no target is available
 * (panic mode), and a retry avoids the target it moves away from when another exists.
 */
export class LeastRequestBalancer implements Balancer {
  readonly upstream: string;
  readonly targets: readonly UpstreamTarget[];

  constructor(upstream: string, targets: readonly UpstreamTarget[]) {
    this.upstream = upstream;
    this.targets = targets.filter((target) => target.weight > 0);
  }

  pick(_req?: IncomingMessage, exclude?: UpstreamTarget): UpstreamTarget | undefined {
    const targets = this.targets;
    if (targets.length < 2) {
      return targets[0];
    }

    let first = this.#draw(-1, (target) => isEligible(target, exclude));
    let second: number;
    if (first === -1) {
      first = this.#draw(-1, (target) => target !== exclude);
      if (first === -1) {
        first = this.#draw(-1, () => true);
      }
      second = this.#draw(first, (target) => target !== exclude);
    } else {
      second = this.#draw(first, (target) => isEligible(target, exclude));
    }

    if (second === -1) {
      return targets[first];
    }
    return load(targets[second]) < load(targets[first]) ? targets[second] : targets[first];
  }

  /** Draws a random index other than `skip` whose target passes `accept`; -1 when none does. */
  #draw(skip: number, accept: (target: UpstreamTarget) => boolean): number {
    const targets = this.targets;
    const count = targets.length;
    const start = Math.floor(Math.random() * count);
    for (let step = 0; step < count; step++) {
      const index = (start + step) % count;
      if (index !== skip && accept(targets[index])) {
        return index;
      }
    }
    return -1;
  }
}

function load(target: UpstreamTarget): number {
  return (target.state.active + 1) / target.weight;
}
