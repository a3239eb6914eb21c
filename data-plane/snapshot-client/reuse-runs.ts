/**
 * Runs of items that a decoded list reuses from the previous list, in the order of the new
 * list, as flat triplets: start in the new list, start in the previous list, length. The other
 * indexes of the new list contain newly decoded items.
 */
export type ReuseRuns = readonly number[];

/** Maximum number of gaps between runs for which `gapsOf` returns them. */
const MAX_GAPS = 16;

/**
 * Returns the gaps between the runs as flat quadruplets, in order: start and end in the new
 * list, start and end in the previous list. Returns undefined when a run starts in the previous
 * list before the end of the run before it, or when there are more than `MAX_GAPS` gaps or
 * `maxInserted` new items. Replacing each gap's previous range with its new range, from the
 * last gap to the first, turns a copy of the previous list into the new one.
 */
export function gapsOf(
  runs: ReuseRuns,
  length: number,
  previousLength: number,
  maxInserted: number,
): number[] | undefined {
  const gaps: number[] = [];
  let inserted = 0;
  let position = 0;
  let previousPosition = 0;
  for (let run = 0; run <= runs.length; run += 3) {
    const last = run === runs.length;
    const start = last ? length : runs[run];
    const previousStart = last ? previousLength : runs[run + 1];
    if (previousStart < previousPosition) return undefined;
    if (start > position || previousStart > previousPosition) {
      inserted += start - position;
      if (gaps.length >= 4 * MAX_GAPS || inserted > maxInserted) return undefined;
      gaps.push(position, start, previousPosition, previousStart);
    }
    if (last) break;
    position = start + runs[run + 2];
    previousPosition = previousStart + runs[run + 2];
  }
  return gaps;
}

/**
 * Returns a copy of `previous` with each gap's previous range replaced by `inserts[g]`, the
 * items of gap `g` of `gaps` (see `gapsOf`). The copy and the splices are native array
 * operations, so a list that differs from the previous one in a few places costs no
 * JavaScript per item.
 */
export function spliceGaps<T>(
  previous: readonly T[],
  gaps: readonly number[],
  inserts: readonly (readonly T[])[],
): T[] {
  const items = previous.slice();
  for (let gap = gaps.length / 4 - 1; gap >= 0; gap--) {
    const previousStart = gaps[4 * gap + 2];
    const previousEnd = gaps[4 * gap + 3];
    items.splice(previousStart, previousEnd - previousStart, ...inserts[gap]);
  }
  return items;
}

/** Maximum number of deferred splices in a row. The next `SplicedList.splice` makes the array. */
const MAX_SPLICE_DEPTH = 8;

/**
 * An immutable list that is an array, or another list with some gaps replaced (see `gapsOf`)
 * whose array is made on first use. A change of a few items then costs no copy of the list
 * until a reader needs the whole array, or until `MAX_SPLICE_DEPTH` splices are in a row.
 */
export class SplicedList<T> {
  readonly length: number;
  #items: readonly T[] | undefined;
  #base: SplicedList<T> | undefined;
  #gaps: readonly number[] = [];
  #inserts: readonly (readonly T[])[] = [];
  /** Splices between this list and the nearest one that has its array. */
  #depth: number;

  private constructor(length: number, depth: number) {
    this.length = length;
    this.#depth = depth;
  }

  /** Returns a list of the items of `items`, which must not change after. */
  static of<T>(items: readonly T[]): SplicedList<T> {
    const list = new SplicedList<T>(items.length, 0);
    list.#items = items;
    return list;
  }

  /** Returns this list with each gap's previous range replaced by `inserts[g]` (see `gapsOf`). */
  splice(
    gaps: readonly number[],
    inserts: readonly (readonly T[])[],
    length: number,
  ): SplicedList<T> {
    if (this.#depth >= MAX_SPLICE_DEPTH) {
      return SplicedList.of(spliceGaps(this.items, gaps, inserts));
    }
    const list = new SplicedList<T>(length, this.#depth + 1);
    list.#base = this;
    list.#gaps = gaps;
    list.#inserts = inserts;
    return list;
  }

  /** The items as an array, made on first use. */
  get items(): readonly T[] {
    if (this.#items === undefined) {
      this.#items = spliceGaps(this.#base!.items, this.#gaps, this.#inserts);
      this.#base = undefined;
      this.#gaps = [];
      this.#inserts = [];
      this.#depth = 0;
    }
    return this.#items;
  }

  /** Returns the item at `index`, which is below `length`, without making the array. */
  at(index: number): T {
    if (this.#items !== undefined) return this.#items[index];
    const base = this.#base!;
    const gaps = this.#gaps;
    for (let gap = 0; gap < gaps.length; gap += 4) {
      const start = gaps[gap];
      // The items between two gaps are the base's, shifted by the difference of their starts.
      if (index < start) return base.at(index + gaps[gap + 2] - start);
      if (index < gaps[gap + 1]) return this.#inserts[gap / 4][index - start];
    }
    return base.at(index + base.length - this.length);
  }
}
