import type { IncomingMessage } from 'node:http';
import {
  isEligible,
  WeightedRoundRobinBalancer,
  type Balancer,
  type UpstreamTarget,
} from './balancer.js';
import type { HashKey } from './hash-key.js';

/** Ring points per unit of weight; 100 keeps the share of each target within a few percent. */
const POINTS_PER_WEIGHT = 100;

/**
 * Consistent hashing on a ring (the ketama scheme): each target owns `100 × weight` points on
 * a 32-bit ring, placed by hashing its URL and the point number, and a request goes to the
 * owner of the first point at or after the hash of its key. Adding a target moves only the
 * keys that land on its new points, about `1/(n+1)` of them for equal weights, and every moved
 * key moves to the new target. Removing a target moves only its own keys.
 *
 * When the owner is unavailable the walk continues clockwise to the next available target, so
 * the keys of an unhealthy target spread over the others and return when it recovers. A
 * request without a key (missing header or cookie) goes round-robin.
 */
export class HashBalancer implements Balancer {
  readonly upstream: string;
  readonly targets: readonly UpstreamTarget[];
  readonly #key: HashKey;
  readonly #points: Uint32Array;
  /** Index into `targets` of the owner of each point. */
  readonly #owners: Uint16Array;
  readonly #fallback: WeightedRoundRobinBalancer;

  constructor(upstream: string, targets: readonly UpstreamTarget[], key: HashKey) {
    this.upstream = upstream;
    this.targets = targets.filter((target) => target.weight > 0);
    this.#key = key;
    this.#fallback = new WeightedRoundRobinBalancer(upstream, this.targets);

    const ring: { point: number; owner: number }[] = [];
    this.targets.forEach((target, owner) => {
      for (let i = 0; i < POINTS_PER_WEIGHT * target.weight; i++) {
        ring.push({ point: hashString(`${target.url}#${i}`), owner });
      }
    });
    // Ties between points are broken by owner index so the ring does not depend on input order
    // beyond the targets' own order, which the normalised configuration fixes.
    ring.sort((a, b) => a.point - b.point || a.owner - b.owner);
    this.#points = Uint32Array.from(ring, (entry) => entry.point);
    this.#owners = Uint16Array.from(ring, (entry) => entry.owner);
  }

  pick(req?: IncomingMessage, exclude?: UpstreamTarget): UpstreamTarget | undefined {
    const key = req === undefined ? undefined : this.#key(req);
    if (key === undefined || this.targets.length < 2) {
      return this.#fallback.pick(req, exclude);
    }
    return this.pickByKey(key, exclude);
  }

  /** Returns the target that owns `key`, skipping unavailable targets and `exclude`. */
  pickByKey(key: string, exclude?: UpstreamTarget): UpstreamTarget | undefined {
    const points = this.#points;
    const start = lowerBound(points, hashString(key));
    const targets = this.targets;
    let firstOther: UpstreamTarget | undefined;
    for (let step = 0; step < points.length; step++) {
      const target = targets[this.#owners[(start + step) % points.length]];
      if (isEligible(target, exclude)) {
        return target;
      }
      firstOther ??= target === exclude ? undefined : target;
    }
    // Panic mode: nothing is available, so the owner on the ring takes the request anyway.
    return firstOther ?? targets[this.#owners[start % points.length]];
  }
}

/** Returns the first index whose point is at least `value`; `points.length` when none is. */
function lowerBound(points: Uint32Array, value: number): number {
  let low = 0;
  let high = points.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (points[middle] < value) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

/** 32-bit FNV-1a over UTF-16 code units, finished with the murmur3 mixer for spread. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}
