import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import type { PublishedSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import type { SnapshotCache } from '../../control-plane/snapshot/snapshot-cache.js';
import {
  AcceptedSnapshot,
  PENDING_BYTES_LIMIT,
  PENDING_SNAPSHOT_LIMIT,
  PENDING_SNAPSHOT_MAX,
} from '../../control-plane/stream/accepted-snapshot.js';
import { chooseFallback, type ProxyMarks } from '../../control-plane/stream/fallback.js';

const snapshot = (epoch: string, version: number) => buildSnapshot(epoch, version, [], []);

/** Returns a stand-in for the cache, of which only `current` and `subscribe` are read. */
function fakeCache(): { cache: SnapshotCache; publish(next: PublishedSnapshot): void } {
  const listeners = new Set<(published: PublishedSnapshot) => void>();
  let current: PublishedSnapshot | undefined;
  const cache = {
    get current() {
      return current;
    },
    subscribe(listener: (published: PublishedSnapshot) => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  } as unknown as SnapshotCache;
  return {
    cache,
    publish(next) {
      current = next;
      for (const listener of listeners) listener(next);
    },
  };
}

describe('chooseFallback', () => {
  const accepted = snapshot('e', 5);
  const cases: { name: string; marks: ProxyMarks; expected: boolean }[] = [
    {
      name: 'empty proxy after a nack',
      marks: {
        serving: { epoch: '', version: 0 },
        sent: { epoch: 'e', version: 7 },
        nacked: { epoch: 'e', version: 7 },
      },
      expected: true,
    },
    {
      name: 'proxy holding an older version',
      marks: {
        serving: { epoch: 'e', version: 3 },
        sent: { epoch: 'e', version: 7 },
        nacked: { epoch: 'e', version: 7 },
      },
      expected: true,
    },
    {
      name: 'proxy holding it already',
      marks: {
        serving: { epoch: 'e', version: 5 },
        sent: undefined,
        nacked: { epoch: 'e', version: 7 },
      },
      expected: false,
    },
    {
      name: 'proxy holding a newer version',
      marks: {
        serving: { epoch: 'e', version: 6 },
        sent: undefined,
        nacked: { epoch: 'e', version: 7 },
      },
      expected: false,
    },
    {
      name: 'no nack',
      marks: {
        serving: { epoch: '', version: 0 },
        sent: { epoch: 'e', version: 7 },
        nacked: undefined,
      },
      expected: false,
    },
    {
      name: 'accepted version was nacked',
      marks: {
        serving: { epoch: '', version: 0 },
        sent: { epoch: 'e', version: 5 },
        nacked: { epoch: 'e', version: 5 },
      },
      expected: false,
    },
    {
      name: 'already sent on this stream',
      marks: {
        serving: { epoch: '', version: 0 },
        sent: { epoch: 'e', version: 5 },
        nacked: { epoch: 'e', version: 7 },
      },
      expected: false,
    },
    {
      name: 'newer version in flight',
      marks: {
        serving: { epoch: '', version: 0 },
        sent: { epoch: 'e', version: 8 },
        nacked: { epoch: 'e', version: 7 },
      },
      expected: false,
    },
    {
      name: 'nack in another epoch',
      marks: {
        serving: { epoch: '', version: 0 },
        sent: { epoch: 'f', version: 2 },
        nacked: { epoch: 'f', version: 2 },
      },
      expected: true,
    },
  ];
  for (const { name, marks, expected } of cases) {
    test(name, () => {
      assert.equal(chooseFallback(marks, accepted), expected ? accepted : undefined);
    });
  }

  test('nothing accepted yet', () => {
    const marks: ProxyMarks = {
      serving: { epoch: '', version: 0 },
      sent: { epoch: 'e', version: 7 },
      nacked: { epoch: 'e', version: 7 },
    };
    assert.equal(chooseFallback(marks, undefined), undefined);
  });
});

/** Returns the encoded accepted snapshot, which is what a proxy gets as a fallback. */
function acceptedBytes(accepted: AcceptedSnapshot): Buffer | undefined {
  return accepted.current?.encoded;
}

describe('AcceptedSnapshot', () => {
  test('ack makes a snapshot accepted', () => {
    const { cache, publish } = fakeCache();
    const accepted = new AcceptedSnapshot(cache);
    const [first, second] = [snapshot('e', 1), snapshot('e', 2)];
    publish(first);
    publish(second);
    const changes: number[] = [];
    accepted.subscribe((next) => changes.push(next.snapshot.version));

    assert.equal(accepted.current, undefined);
    accepted.noteAck('e', 1);
    assert.equal(acceptedBytes(accepted), first.encoded);
    accepted.noteAck('e', 2);
    assert.equal(acceptedBytes(accepted), second.encoded);
    assert.deepEqual(changes, [1, 2]);
  });

  test('older and unknown acks ignored', () => {
    const { cache, publish } = fakeCache();
    const accepted = new AcceptedSnapshot(cache);
    const [first, second] = [snapshot('e', 1), snapshot('e', 2)];
    publish(first);
    publish(second);
    accepted.noteAck('e', 2);
    accepted.noteAck('e', 1);
    accepted.noteAck('other', 2);
    assert.equal(acceptedBytes(accepted), second.encoded);
  });

  test('pending snapshots are bounded in number', () => {
    const { cache, publish } = fakeCache();
    const accepted = new AcceptedSnapshot(cache);
    const published: PublishedSnapshot[] = [];
    for (let version = 1; version <= PENDING_SNAPSHOT_MAX + 1; version++) {
      published.push(snapshot('e', version));
      publish(published[version - 1]);
    }
    accepted.noteAck('e', 1);
    assert.equal(accepted.current, undefined);
    accepted.noteAck('e', 2);
    assert.equal(acceptedBytes(accepted), published[1].encoded);
  });

  test('late ack after burst counts', () => {
    const { cache, publish } = fakeCache();
    const accepted = new AcceptedSnapshot(cache);
    const published: PublishedSnapshot[] = [];
    for (let version = 1; version <= PENDING_SNAPSHOT_LIMIT + 2; version++) {
      published.push(snapshot('e', version));
      publish(published[version - 1]);
    }
    accepted.noteAck('e', 1);
    assert.equal(acceptedBytes(accepted), published[0].encoded);
  });

  test('pending snapshots are bounded in bytes', () => {
    const { cache, publish } = fakeCache();
    const accepted = new AcceptedSnapshot(cache);
    const published: PublishedSnapshot[] = [];
    // Five of these take more than the byte limit, so only the newest four stay.
    const large = (version: number): PublishedSnapshot => ({
      ...snapshot('e', version),
      encoded: Buffer.allocUnsafe(PENDING_BYTES_LIMIT / 4 + 1),
    });
    for (let version = 1; version <= PENDING_SNAPSHOT_LIMIT + 2; version++) {
      published.push(large(version));
      publish(published[version - 1]);
    }
    accepted.noteAck('e', 2);
    assert.equal(accepted.current, undefined);
    accepted.noteAck('e', 3);
    assert.equal(acceptedBytes(accepted), published[2].encoded);
  });

  test('current snapshot at creation counts', () => {
    const { cache, publish } = fakeCache();
    const first = snapshot('e', 1);
    publish(first);
    const accepted = new AcceptedSnapshot(cache);
    accepted.noteAck('e', 1);
    assert.equal(acceptedBytes(accepted), first.encoded);
  });
});
