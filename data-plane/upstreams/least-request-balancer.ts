import type { IncomingMessage } from 'node:http';
import { wasTried, type Balancer, type TriedTargets, type UpstreamTarget } from './balancer.js';

/**
 * Least request with the power of two choices: draws two different targets at random and sends
 * the request to the one with fewer requests in flight per unit of weight. It avoids the herd
 * that always picking the global minimum causes when many requests start at once, and costs
 * two random numbers per pick. Unavailable targets are skipped unless no target is available
 * (panic mode), and a retry avoids the targets that the request already went to while an
 * untried one exists.
 */
export class LeastRequestBalancer implements Balancer {
  readonly upstream: string;
  readonly targets: readonly UpstreamTarget[];

  constructor(upstream: string, targets: readonly UpstreamTarget[]) {
    this.upstream = upstream;
    this.targets = targets.filter((target) => target.weight > 0);
  }

  pick(_req?: IncomingMessage, tried?: TriedTargets): UpstreamTarget | undefined {
    const targets = this.targets;
    if (targets.length < 2) {
      return targets[0];
    }

    // Widens the candidates step by step: untried and available, untried, then (only for a
    // retry after every target was tried) available, then all.
    let first = this.#draw(-1, tried, true);
    let onlyAvailable = true;
    let among = tried;
    if (first === -1) {
      onlyAvailable = false;
      first = this.#draw(-1, among, onlyAvailable);
    }
    if (first === -1 && tried !== undefined) {
      among = undefined;
      onlyAvailable = true;
      first = this.#draw(-1, among, onlyAvailable);
      if (first === -1) {
        onlyAvailable = false;
        first = this.#draw(-1, among, onlyAvailable);
      }
    }
    const second = this.#draw(first, among, onlyAvailable);

    if (second === -1) {
      return targets[first];
    }
    return load(targets[second]) < load(targets[first]) ? targets[second] : targets[first];
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
      if (
        index !== skip &&
        (!onlyAvailable || target.state.available) &&
        !wasTried(target, tried)
      ) {
        return index;
      }
    }
    return -1;
  }
}

function load(target: UpstreamTarget): number {
  return (target.state.active + 1) / target.weight;
}
