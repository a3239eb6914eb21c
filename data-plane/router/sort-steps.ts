/** Items sorted natively per run, and items merged between two yields. */
const RUN_LENGTH = 2048;
const MERGE_STEP = 4096;

/**
 * Returns a sorted copy of `items`, yielding between chunks of work so that a
 * caller can spread a large sort over several turns of the event loop. Input
 * that is already sorted costs one pass. Otherwise runs of a few thousand
 * items are sorted natively and merged pairwise. The sort is stable.
 */
export function* sortSteps<T>(
  items: readonly T[],
  compare: (a: T, b: T) => number,
): Generator<void, T[], void> {
  if (isSorted(items, compare)) return [...items];

  let runs: T[][] = [];
  for (let start = 0; start < items.length; start += RUN_LENGTH) {
    runs.push(items.slice(start, start + RUN_LENGTH).sort(compare));
    yield;
  }
  while (runs.length > 1) {
    const merged: T[][] = [];
    for (let i = 0; i + 1 < runs.length; i += 2) {
      merged.push(yield* mergeSteps(runs[i], runs[i + 1], compare));
    }
    if (runs.length % 2 === 1) merged.push(runs[runs.length - 1]);
    runs = merged;
  }
  return runs[0];
}

function* mergeSteps<T>(
  left: T[],
  right: T[],
  compare: (a: T, b: T) => number,
): Generator<void, T[], void> {
  const merged: T[] = [];
  let i = 0;
  let j = 0;
  while (i < left.length && j < right.length) {
    // Taking from the left on ties keeps the sort stable.
    merged.push(compare(right[j], left[i]) < 0 ? right[j++] : left[i++]);
    if (merged.length % MERGE_STEP === 0) yield;
  }
  while (i < left.length) merged.push(left[i++]);
  while (j < right.length) merged.push(right[j++]);
  return merged;
}

function isSorted<T>(items: readonly T[], compare: (a: T, b: T) => number): boolean {
  for (let i = 1; i < items.length; i++) {
    if (compare(items[i - 1], items[i]) > 0) return false;
  }
  return true;
}
