import type { BinaryReader } from '@bufbuild/protobuf/wire';

import { OrderedMatcher } from './ordered-matcher.js';
import { gapsOf, spliceGaps, type ReuseRuns } from './reuse-runs.js';

/**
 * Decoded items of one repeated field, with where each item's bytes lie in the message: the
 * entry from its tag to the end of its value is `bytes[tagStarts[i], ends[i])`.
 */
export interface DecodedList<T> {
  items: T[];
  tagStarts: Int32Array;
  ends: Int32Array;
  /**
   * For each item, the index of the last item of the run of entries that follow it without a
   * gap: `runEnds[i] >= j` means the entries of items i to j are one contiguous byte range.
   * Undefined when all entries are one run, as the control plane encodes them.
   */
  runEnds: Int32Array | undefined;
  /**
   * Whether the names are those of the previous list, in the same order, as far as the decoder
   * can tell without comparing every name: false also when it cannot tell.
   */
  sameNames: boolean;
  /** The items reused from the previous list; empty without one. */
  reused: ReuseRuns;
}

/**
 * Decodes the entries of one repeated message field of a Snapshot for `SnapshotDecoder`, reusing
 * the previous objects of entries whose bytes are unchanged.
 */
export class ListDecoder<T extends { name: string }> {
  /** Items decoded so far; `finish` assembles the list from them and `#reused`. */
  readonly #decoded: T[] = [];
  readonly #reused: number[] = [];
  #count = 0;
  #tagStarts: Int32Array;
  #ends: Int32Array;
  readonly #reader: BinaryReader;
  readonly #bytes: Buffer;
  /** End of the Snapshot message in `bytes`; no entry of this list lies past it. */
  readonly #limit: number;
  readonly #decodeItem: (reader: BinaryReader, length: number) => T;
  readonly #previousBytes: Buffer | undefined;
  readonly #previous: DecodedList<T> | undefined;
  readonly #matcher: OrderedMatcher;
  #tagStart = 0;
  #end = 0;
  /** Whether every entry so far starts where the one before it ends. */
  #contiguous = true;
  /** Whether each item so far has the name of the previous item at its index; see `sameNames`. */
  #sameNames: boolean;
  readonly #isEqual = (index: number): boolean => {
    const previous = this.#previous!;
    const start = previous.tagStarts[index];
    const end = previous.ends[index];
    return (
      end - start === this.#end - this.#tagStart &&
      this.#previousBytes!.compare(this.#bytes, this.#tagStart, this.#end, start, end) === 0
    );
  };

  constructor(
    reader: BinaryReader,
    bytes: Buffer,
    limit: number,
    decodeItem: (reader: BinaryReader, length: number) => T,
    previousBytes: Buffer | undefined,
    previous: DecodedList<T> | undefined,
    spare?: DecodedList<T>,
  ) {
    this.#reader = reader;
    this.#bytes = bytes;
    this.#limit = limit;
    this.#decodeItem = decodeItem;
    this.#previousBytes = previousBytes;
    this.#previous = previous;
    const items = previous?.items ?? [];
    this.#sameNames = previous !== undefined;
    this.#matcher = new OrderedMatcher(items.length, (index) => items[index].name);
    // Sized for the previous count plus a few insertions; `#push` grows them when needed.
    const capacity = items.length + 16;
    this.#tagStarts = storageFor(capacity, spare?.tagStarts);
    this.#ends = storageFor(capacity, spare?.ends);
  }

  /**
   * Decodes the entry whose tag starts at `tagStart` and whose value of `length` bytes starts at
   * the reader's position, or reuses an equal previous one. After a reuse, it also reuses the
   * longest run of previous entries that follow the reused one with equal bytes, and moves the
   * reader past them.
   */
  next(tagStart: number, length: number): void {
    this.#tagStart = tagStart;
    this.#end = this.#reader.pos + length;
    const index = this.#previous === undefined ? -1 : this.#matcher.match(this.#isEqual);
    const count = this.#count;
    if (index < 0) {
      const item = this.#decodeItem(this.#reader, length);
      this.#matcher.resync(item.name);
      this.#sameNames &&= this.#previous?.items[count]?.name === item.name;
      this.#decoded.push(item);
      this.#push(tagStart, this.#end);
      return;
    }
    // A reused item keeps its name, so the names stay the same when its index does. This also
    // covers the run that `#pushRun` adds after it, whose indexes move by the same amount.
    this.#sameNames &&= index === count;
    this.#noteReuse(count, index, 1);
    this.#push(tagStart, this.#end);
    this.#reader.pos = this.#end;
    const last = this.#matchRun(index, this.#end);
    if (last > index) this.#pushRun(index + 1, last, this.#end - this.#previous!.ends[index]);
  }

  /** Returns the decoded list; the decoder must not be used after. */
  finish(): DecodedList<T> {
    const count = this.#count;
    const items = this.#assemble();
    const tagStarts = this.#tagStarts.subarray(0, count);
    const ends = this.#ends.subarray(0, count);
    const sameNames = this.#sameNames && count === this.#previous!.items.length;
    if (this.#contiguous) {
      return { items, tagStarts, ends, runEnds: undefined, sameNames, reused: this.#reused };
    }

    const runEnds = new Int32Array(count);
    for (let index = count - 1; index >= 0; index--) {
      const joined = index + 1 < count && tagStarts[index + 1] === ends[index];
      runEnds[index] = joined ? runEnds[index + 1] : index;
    }
    return { items, tagStarts, ends, runEnds, sameNames, reused: this.#reused };
  }

  /**
   * Returns the decoded list: a spliced copy of the previous list when it differs in a few
   * places, else one filled item by item.
   */
  #assemble(): T[] {
    const previous = this.#previous?.items ?? [];
    const reused = this.#reused;
    const decoded = this.#decoded;
    if (reused.length === 0) return decoded;
    const gaps = gapsOf(reused, this.#count, previous.length, MAX_SPLICED_ITEMS);
    if (gaps !== undefined) {
      const inserts: T[][] = [];
      let next = 0;
      for (let gap = 0; gap < gaps.length; gap += 4) {
        const length = gaps[gap + 1] - gaps[gap];
        inserts.push(decoded.slice(next, next + length));
        next += length;
      }
      return spliceGaps(previous, gaps, inserts);
    }

    const items = new Array<T>(this.#count);
    let next = 0;
    let position = 0;
    for (let run = 0; run <= reused.length; run += 3) {
      const start = run === reused.length ? this.#count : reused[run];
      while (position < start) items[position++] = decoded[next++];
      if (run === reused.length) break;
      copyRun(items, start, previous, reused[run + 1], reused[run + 2]);
      position = start + reused[run + 2];
    }
    return items;
  }

  /**
   * Returns the index of the last previous entry of the longest run after `index` whose bytes
   * equal the bytes that follow `position` in this message, or `index` when the next differs.
   * It compares ranges of doubling length and halves the length after a mismatch, so a run of
   * n equal entries takes about 2 log2(n) comparisons, each of which stops at its first
   * differing byte.
   */
  #matchRun(index: number, position: number): number {
    const previous = this.#previous!;
    const previousBytes = this.#previousBytes!;
    const runEnd = previous.runEnds?.[index] ?? previous.items.length - 1;
    let last = index;
    let step = 1;
    while (last < runEnd) {
      const candidate = Math.min(last + step, runEnd);
      const from = previous.ends[last];
      const to = previous.ends[candidate];
      const newFrom = position + (from - previous.ends[index]);
      const newTo = newFrom + (to - from);
      const equal =
        newTo <= this.#limit && previousBytes.compare(this.#bytes, newFrom, newTo, from, to) === 0;
      if (equal) {
        last = candidate;
        step *= 2;
      } else if (step > 1) {
        step = Math.floor(step / 2);
      } else {
        break;
      }
    }
    return last;
  }

  /**
   * Reuses the previous items `first` to `last`, whose entries lie `shift` bytes further in
   * this message, and moves the reader past them.
   */
  #pushRun(first: number, last: number, shift: number): void {
    const previous = this.#previous!;
    const count = this.#count;
    const runLength = last - first + 1;
    while (count + runLength > this.#tagStarts.length) {
      this.#tagStarts = grow(this.#tagStarts);
      this.#ends = grow(this.#ends);
    }
    this.#noteJoin(count, previous.tagStarts[first] + shift);
    this.#tagStarts.set(previous.tagStarts.subarray(first, last + 1), count);
    this.#ends.set(previous.ends.subarray(first, last + 1), count);
    if (shift !== 0) {
      addToRange(this.#tagStarts, count, runLength, shift);
      addToRange(this.#ends, count, runLength, shift);
    }
    this.#noteReuse(count, first, runLength);
    this.#count = count + runLength;
    this.#matcher.advance(runLength);
    this.#reader.pos = previous.ends[last] + shift;
  }

  /** Notes that the items from `start` on are the `length` previous items from `previousStart` on. */
  #noteReuse(start: number, previousStart: number, length: number): void {
    const reused = this.#reused;
    const last = reused.length - 3;
    if (
      last >= 0 &&
      reused[last] + reused[last + 2] === start &&
      reused[last + 1] + reused[last + 2] === previousStart
    ) {
      reused[last + 2] += length;
      return;
    }
    reused.push(start, previousStart, length);
  }

  /** Stores where the entry of the next item lies and counts the item. */
  #push(tagStart: number, end: number): void {
    const count = this.#count;
    if (count === this.#tagStarts.length) {
      this.#tagStarts = grow(this.#tagStarts);
      this.#ends = grow(this.#ends);
    }
    this.#noteJoin(count, tagStart);
    this.#count = count + 1;
    this.#tagStarts[count] = tagStart;
    this.#ends[count] = end;
  }

  /** Notes whether the entry about to be stored at `count` starts where the one before ends. */
  #noteJoin(count: number, tagStart: number): void {
    if (count > 0 && this.#ends[count - 1] !== tagStart) this.#contiguous = false;
  }
}

/**
 * Maximum number of new items that `#assemble` splices into a copy of the previous list. Each gap's items
 * are spread into one `splice` call, so this also bounds the arguments of a call.
 */
const MAX_SPLICED_ITEMS = 1024;

/** Copies `length` items from `source[sourceStart]` on into `target[targetStart]` on. */
function copyRun<T>(
  target: T[],
  targetStart: number,
  source: readonly T[],
  sourceStart: number,
  length: number,
): void {
  for (let offset = 0; offset < length; offset++) {
    target[targetStart + offset] = source[sourceStart + offset];
  }
}

/** Adds `amount` to the `length` values of `array` from `start` on. */
function addToRange(array: Int32Array, start: number, length: number, amount: number): void {
  for (let index = start; index < start + length; index++) array[index] += amount;
}

/**
 * Returns the whole array that `view` is a view of, when it has room for `capacity` values and
 * not far more, or else a new array of `capacity` values. The values of a reused array are
 * stale, but `ListDecoder` writes each one before it reads it.
 */
function storageFor(capacity: number, view: Int32Array | undefined): Int32Array {
  if (view !== undefined) {
    const whole = new Int32Array(view.buffer);
    if (whole.length >= capacity && whole.length <= 2 * capacity + 1024) return whole;
  }
  return new Int32Array(capacity);
}

/** Returns a copy of `array` with twice its length. */
function grow(array: Int32Array): Int32Array {
  const grown = new Int32Array(array.length * 2);
  grown.set(array);
  return grown;
}
