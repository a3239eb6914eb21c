import type { IncomingMessage } from 'node:http';
import {
  wasTried,
  WeightedRoundRobinBalancer,
  type TriedTargets,
  type Balancer,
  type UpstreamTarget,
} from './balancer.js';
import type { HashKey } from './hash-key.js';

/**
 * Ring points per unit of weight. With 100, the share of keys of equal-weight targets ranges
 * from 0.83 to 1.29 times the fair share for 2 to 20 targets (test "spreads keys within
 * measured bounds").
 */
// NOTE: more points would even the shares out, but would lower the weight sum up to which
// adding or removing a target moves only its own keys, and would remap keys once on upgrade.
const POINTS_PER_WEIGHT = 100;

/**
 * Largest number of ring points of one upstream. At 100 points per unit of weight, ten targets
 * of the maximum weight 10000 need ten million points, whose build blocked the event loop for
 * 30 s and took 1.6 GB of memory (Node.js 20, 2 cores). Above this size every target gets
 * points in proportion to its weight, and at least one.
 */
export const MAX_RING_POINTS = 1 << 20;

/**
 * Largest number of targets of one hash upstream. The ring packs a point and its owner index
 * into one float64 (`point × MAX_HASH_TARGETS + owner`) so that it sorts as a typed array, and
 * a point is below 2^32, so owners below 2^21 keep the product exact.
 */
export const MAX_HASH_TARGETS = 2 ** 21;

/**
 * Consistent hashing on a ring (the ketama scheme): each target owns `100 × weight` points on
 * a 32-bit ring, placed by hashing its URL and the point number, and a request goes to the
 * owner of the first point at or after the hash of its key. Adding a target moves only the
 * keys that land on its new points, about `1/(n+1)` of them for equal weights, and every moved
 * key moves to the new target. Removing a target moves only its own keys. Both hold only while
 * the weights sum to at most 10485 (`MAX_RING_POINTS / 100`) before and after. Above it,
 * every target has fewer points, and an added or removed target changes the point count of
 * the others, so some keys also move between the targets that stay.
 *
 * When the owner is unavailable the walk continues clockwise to the next available target, so
 * the keys of an unhealthy target spread over the others and return when it recovers. A retry
 * walks on past the targets the request already went to. A request without a key (missing
 * header or cookie) goes round-robin.
 */
export class HashBalancer implements Balancer {
  readonly upstream: string;
  readonly targets: readonly UpstreamTarget[];
  readonly #key: HashKey;
  readonly #points: Uint32Array;
  /** Index into `targets` of the owner of each point. */
  readonly #owners: Uint32Array;
  readonly #fallback: WeightedRoundRobinBalancer;
  /** Number of the last walk that visited each target, so a walk looks at each target once. */
  readonly #visitedIn: Uint32Array;
  #walks = 0;

  /** `previous` is the balancer of the same upstream in the snapshot that this one replaces. */
  constructor(
    upstream: string,
    targets: readonly UpstreamTarget[],
    key: HashKey,
    previous?: HashBalancer,
  ) {
    this.upstream = upstream;
    this.targets = targets.filter((target) => target.weight > 0);
    this.#key = key;
    this.#fallback = new WeightedRoundRobinBalancer(
      upstream,
      this.targets,
      previous === undefined ? undefined : previous.#fallback,
    );

    const totalWeight = this.targets.reduce((sum, target) => sum + target.weight, 0);
    const pointsPerWeight = Math.min(POINTS_PER_WEIGHT, MAX_RING_POINTS / totalWeight);
    const counts = this.targets.map((target) =>
      Math.max(1, Math.round(target.weight * pointsPerWeight)),
    );
    // Sorting the packed values breaks ties between equal points by owner index, so the ring
    // depends on nothing but the targets' order, which the normalised configuration fixes.
    const ring = new Float64Array(counts.reduce((sum, count) => sum + count, 0));
    let size = 0;
    this.targets.forEach((target, owner) => {
      for (let i = 0; i < counts[owner]; i++) {
        ring[size++] = hashString(`${target.url}#${i}`) * MAX_HASH_TARGETS + owner;
      }
    });
    ring.sort();
    this.#visitedIn = new Uint32Array(this.targets.length);
    this.#points = new Uint32Array(size);
    this.#owners = new Uint32Array(size);
    for (let i = 0; i < size; i++) {
      const owner = ring[i] % MAX_HASH_TARGETS;
      this.#owners[i] = owner;
      this.#points[i] = (ring[i] - owner) / MAX_HASH_TARGETS;
    }
  }

  /** Number of points on the ring. */
  get ringSize(): number {
    return this.#points.length;
  }

  pick(req?: IncomingMessage, tried?: TriedTargets): UpstreamTarget | undefined {
    const key = req === undefined ? undefined : this.#key(req);
    if (key === undefined || this.targets.length < 2) {
      return this.#fallback.pick(req, tried);
    }
    return this.pickByKey(key, tried);
  }

  /**
   * Returns the target that owns `key`: the first available target not in `tried` on the walk
   * from the key's point, else the first one not in `tried`, else the first available one.
   */
  pickByKey(key: string, tried?: TriedTargets): UpstreamTarget | undefined {
    const points = this.#points;
    const start = lowerBound(points, hashString(key));
    const targets = this.targets;
    const visitedIn = this.#visitedIn;
    const walk = this.#startWalk();
    let visited = 0;
    let firstUntried: UpstreamTarget | undefined;
    let firstAvailable: UpstreamTarget | undefined;
    // The walk ends once it has seen every target, because only the first point of each target
    // can change the result. Walking the whole ring when no target was available took 7 ms per
    // pick for 10 targets of weight 10000 (a million points; Node.js 20, 2 shared cores).
    for (let step = 0; step < points.length && visited < targets.length; step++) {
      const owner = this.#owners[(start + step) % points.length];
      if (visitedIn[owner] === walk) {
        continue;
      }
      visitedIn[owner] = walk;
      visited++;
      const target = targets[owner];
      const untried = !wasTried(target, tried);
      if (target.state.available) {
        if (untried) {
          return target;
        }
        firstAvailable ??= target;
      } else if (untried) {
        firstUntried ??= target;
      }
    }
    // Panic mode when nothing is available and nothing was tried: the owner on the ring takes
    // the request anyway.
    return firstUntried ?? firstAvailable ?? targets[this.#owners[start % points.length]];
  }

  /** Returns the number of a new walk, which no entry of `#visitedIn` contains yet. */
  #startWalk(): number {
    if (this.#walks === 0xffffffff) {
      this.#visitedIn.fill(0);
      this.#walks = 0;
    }
    return ++this.#walks;
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
