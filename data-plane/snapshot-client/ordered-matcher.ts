/**
 * Pairs the items of a new list with equal items of the previous list, for lists that mostly
 * share their order. The control plane sends routes and upstreams sorted by name, so after one
 * change, insertion or removal the item equal to the next new one is at the cursor or just past
 * it. `match` tries those two places; after a miss, `resync` moves the cursor past the previous
 * item of the same name. Unordered lists give correct results, only fewer matches.
 */
export class OrderedMatcher {
  #cursor = 0;
  #indexByName: Map<string, number> | undefined;
  readonly #length: number;
  readonly #nameAt: (index: number) => string;

  /** `nameAt` returns the name of the previous list's item at an index below `length`. */
  constructor(length: number, nameAt: (index: number) => string) {
    this.#length = length;
    this.#nameAt = nameAt;
  }

  /**
   * Returns the index of the previous item for which `isEqual` holds, trying the cursor and
   * the place after it, or -1. A match moves the cursor past it.
   */
  match(isEqual: (index: number) => boolean): number {
    for (let index = this.#cursor; index < this.#length && index <= this.#cursor + 1; index++) {
      if (isEqual(index)) {
        this.#cursor = index + 1;
        return index;
      }
    }
    return -1;
  }

  /** Moves the cursor past `count` more previous items, which the caller matched on its own. */
  advance(count: number): void {
    this.#cursor = Math.min(this.#cursor + count, this.#length);
  }

  /** Moves the cursor past the previous item named `name`, when there is one. */
  resync(name: string): void {
    if (this.#cursor < this.#length && this.#nameAt(this.#cursor) === name) {
      this.#cursor += 1;
      return;
    }
    // Built on the first miss that the cursor cannot explain, so most snapshots never build it.
    if (this.#indexByName === undefined) {
      this.#indexByName = new Map();
      for (let index = 0; index < this.#length; index++) {
        this.#indexByName.set(this.#nameAt(index), index);
      }
    }
    const index = this.#indexByName.get(name);
    if (index !== undefined) this.#cursor = index + 1;
  }
}
