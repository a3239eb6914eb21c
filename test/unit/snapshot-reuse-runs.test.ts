import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { gapsOf, spliceGaps, SplicedList } from '../../data-plane/snapshot-client/reuse-runs.js';

describe('gapsOf', () => {
  test('one replaced item', () => {
    // New list: previous 0-4, a new item, previous 6-9.
    assert.deepEqual(gapsOf([0, 0, 5, 6, 6, 4], 10, 10, 64), [5, 6, 5, 6]);
  });

  test('insertion and removal', () => {
    // New list: a new item, previous 0-2, then previous 5-9 (3 and 4 removed).
    assert.deepEqual(gapsOf([1, 0, 3, 4, 5, 5], 9, 10, 64), [0, 1, 0, 0, 4, 4, 3, 5]);
  });

  test('no runs', () => {
    assert.deepEqual(gapsOf([], 2, 3, 64), [0, 2, 0, 3]);
  });

  test('unchanged list has no gaps', () => {
    assert.deepEqual(gapsOf([0, 0, 10], 10, 10, 64), []);
  });

  test('removed tail', () => {
    assert.deepEqual(gapsOf([0, 0, 8], 8, 10, 64), [8, 8, 8, 10]);
  });

  test('out-of-order runs', () => {
    assert.equal(gapsOf([0, 5, 2, 2, 0, 2], 4, 10, 64), undefined);
  });

  test('run reusing an item twice', () => {
    assert.equal(gapsOf([0, 0, 3, 3, 2, 2], 5, 10, 64), undefined);
  });

  test('too many new items', () => {
    assert.equal(gapsOf([0, 0, 2, 7, 2, 3], 10, 5, 4), undefined);
    assert.deepEqual(gapsOf([0, 0, 2, 7, 2, 3], 10, 5, 5), [2, 7, 2, 2]);
  });

  test('too many gaps', () => {
    const runs: number[] = [];
    for (let run = 0; run < 20; run++) runs.push(2 * run, 2 * run, 1);
    assert.equal(gapsOf(runs, 40, 40, 64), undefined);
  });
});

describe('spliceGaps', () => {
  test('rebuilds the new list', () => {
    const previous = ['a', 'b', 'c', 'd', 'e'];
    // New list: x, a, b, y, z, e (c and d replaced by y and z).
    const gaps = gapsOf([1, 0, 2, 5, 4, 1], 6, 5, 64);
    assert.ok(gaps !== undefined);
    const items = spliceGaps(previous, gaps, [['x'], ['y', 'z']]);
    assert.deepEqual(items, ['x', 'a', 'b', 'y', 'z', 'e']);
  });

  test('leaves the previous list as it was', () => {
    const previous = ['a', 'b', 'c'];
    spliceGaps(previous, [1, 2, 1, 2], [['x']]);
    assert.deepEqual(previous, ['a', 'b', 'c']);
  });
});

describe('SplicedList', () => {
  test('chain of splices matches arrays', () => {
    let expected = Array.from({ length: 50 }, (_, index) => `item-${index}`);
    let list = SplicedList.of(expected);
    // Each round replaces item 3r mod 40 and inserts one item at 7r mod 40, so twenty rounds
    // cross the depth at which a splice makes its array at once.
    for (let round = 1; round <= 20; round++) {
      const replaced = (3 * round) % 40;
      const inserted = (7 * round) % 40;
      const next = [...expected];
      next[replaced] = `replaced-${round}`;
      next.splice(inserted, 0, `inserted-${round}`);
      const edits = [replaced, inserted].sort((a, b) => a - b);
      const gaps: number[] = [];
      const inserts: string[][] = [];
      if (edits[0] === edits[1]) {
        // The inserted item comes before the replaced one, both at the same index.
        gaps.push(edits[0], edits[0] + 2, edits[0], edits[0] + 1);
        inserts.push(next.slice(edits[0], edits[0] + 2));
      } else if (replaced < inserted) {
        gaps.push(replaced, replaced + 1, replaced, replaced + 1);
        gaps.push(inserted, inserted + 1, inserted, inserted);
        inserts.push([next[replaced]], [next[inserted]]);
      } else {
        gaps.push(inserted, inserted + 1, inserted, inserted);
        gaps.push(replaced + 1, replaced + 2, replaced, replaced + 1);
        inserts.push([next[inserted]], [next[replaced + 1]]);
      }
      list = list.splice(gaps, inserts, next.length);
      expected = next;
      assert.equal(list.length, expected.length, `length after round ${round}`);
      for (let index = 0; index < expected.length; index++) {
        assert.equal(list.at(index), expected[index], `item ${index} after round ${round}`);
      }
    }
    assert.deepEqual(list.items, expected);
  });

  test('array made once', () => {
    const base = SplicedList.of(['a', 'b', 'c']);
    const spliced = base.splice([1, 2, 1, 2], [['x']], 3);
    assert.equal(spliced.items, spliced.items);
    assert.deepEqual(spliced.items, ['a', 'x', 'c']);
    assert.deepEqual(base.items, ['a', 'b', 'c']);
  });
});
