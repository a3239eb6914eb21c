import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { BinaryWriter } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import {
  encodedSnapshotOf,
  hasSameRouteNames,
  reusedRoutesOf,
  SnapshotDecoder,
} from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import {
  Route as RouteMessage,
  Upstream as UpstreamMessage,
} from '../../proto/gen/loom/v1/config.js';

const upstreams: Upstream[] = [
  { name: 'alpha', targets: [{ url: 'http://127.0.0.1:9', weight: 1 }] },
  { name: 'beta', targets: [{ url: 'http://127.0.0.1:10', weight: 2 }] },
];

function route(index: number, path = `/r${index}/:id`): Route {
  return {
    name: `route-${String(index).padStart(3, '0')}`,
    hosts: [],
    paths: [path],
    methods: index % 2 === 0 ? ['GET'] : [],
    upstream: 'alpha',
  };
}

function encode(version: number, routes: Route[], list = upstreams): Buffer {
  return buildSnapshot('epoch', version, routes, list).encoded;
}

/** Decodes `bytes` with `decoder` and checks the result against the generated decoder. */
function decodeChecked(decoder: SnapshotDecoder, bytes: Buffer) {
  const snapshot = decoder.decode(bytes).snapshot!;
  assert.deepEqual(snapshot, StreamResponse.decode(bytes).snapshot);
  return snapshot;
}

/** Counts the calls of `Buffer.prototype.compare` while `run` runs. */
function countCompares(run: () => void): number {
  const original = Buffer.prototype.compare;
  let calls = 0;
  Buffer.prototype.compare = function (this: Buffer, ...args: Parameters<Buffer['compare']>) {
    calls++;
    return original.apply(this, args);
  };
  try {
    run();
  } finally {
    Buffer.prototype.compare = original;
  }
  return calls;
}

type Entry = { route: Route } | { upstream: Upstream };

/**
 * Encodes a StreamResponse whose Snapshot lists routes and upstreams in the order of `entries`,
 * which the control plane never does: it writes all routes, then all upstreams.
 */
function encodeInterleaved(version: number, entries: Entry[]): Buffer {
  const snapshot = new BinaryWriter();
  snapshot.uint32(8).uint64(version);
  snapshot.uint32(18).string('epoch');
  for (const entry of entries) {
    if ('route' in entry) RouteMessage.encode(entry.route, snapshot.uint32(34).fork()).join();
    else UpstreamMessage.encode(entry.upstream, snapshot.uint32(42).fork()).join();
  }
  const response = new BinaryWriter();
  response.uint32(10).bytes(snapshot.finish());
  return Buffer.from(response.finish());
}

describe('SnapshotDecoder', () => {
  test('knows every snapshot field', () => {
    // The decoder reads the fields below by number. A field added to Snapshot or StreamResponse
    // must be read there too, or proxies would drop it without an error.
    assert.deepEqual(Object.keys(Snapshot.fromPartial({})).sort(), [
      'epoch',
      'hash',
      'routes',
      'upstreams',
      'version',
    ]);
    assert.deepEqual(Object.keys(StreamResponse.fromPartial({})), ['snapshot']);
  });

  test('first snapshot decodes as generated', () => {
    const decoder = new SnapshotDecoder();
    const snapshot = decodeChecked(decoder, encode(1, [route(1), route(2)]));
    assert.equal(snapshot.version, 1);
    assert.equal(snapshot.routes.length, 2);
  });

  test('unchanged routes keep their objects', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 20 }, (_, index) => route(index));
    const first = decodeChecked(decoder, encode(1, base));

    const changed = base.map((item, index) => (index === 7 ? route(7, '/moved/:id') : item));
    const second = decodeChecked(decoder, encode(2, changed));
    for (let index = 0; index < 20; index++) {
      if (index === 7) assert.notEqual(second.routes[index], first.routes[index]);
      else assert.equal(second.routes[index], first.routes[index], `route ${index}`);
    }
    assert.equal(second.upstreams[0], first.upstreams[0]);
    assert.equal(second.upstreams[1], first.upstreams[1]);
  });

  test('insertions and removals realign', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 30 }, (_, index) => route(index * 2));
    const first = decodeChecked(decoder, encode(1, base));

    // One insertion, one removal and two adjacent changes in one snapshot.
    const next = [...base];
    next.splice(3, 0, route(5));
    next.splice(10, 1);
    next[20] = route(40, '/changed/a');
    next[21] = route(42, '/changed/b');
    const second = decodeChecked(decoder, encode(2, next));
    const previousByName = new Map(first.routes.map((item) => [item.name, item]));
    for (const item of second.routes) {
      const unchanged = base.some(
        (original) => original.name === item.name && original.paths[0] === item.paths[0],
      );
      if (unchanged) assert.equal(item, previousByName.get(item.name), item.name);
      else assert.notEqual(item, previousByName.get(item.name), item.name);
    }
  });

  test('many scattered changes keep unchanged objects', () => {
    // Forty changed routes leave more gaps between reused runs than a spliced copy takes, so
    // the decoder fills the list item by item.
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 200 }, (_, index) => route(index));
    const first = decodeChecked(decoder, encode(1, base));

    const changed = base.map((item, index) => (index % 5 === 2 ? route(index, '/x/:id') : item));
    const second = decodeChecked(decoder, encode(2, changed));
    for (let index = 0; index < 200; index++) {
      if (index % 5 === 2) assert.notEqual(second.routes[index], first.routes[index]);
      else assert.equal(second.routes[index], first.routes[index], `route ${index}`);
    }
  });

  test('reused routes listed as runs', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 20 }, (_, index) => route(index));
    const first = decodeChecked(decoder, encode(1, base));
    assert.equal(reusedRoutesOf(first, []), undefined);

    const next = base.filter((_, index) => index !== 4);
    next[10] = route(11, '/changed/:id');
    const second = decodeChecked(decoder, encode(2, next));
    // Routes 0-3 and 5-10 are reused, route 11 is new, routes 12-19 are reused.
    assert.deepEqual(reusedRoutesOf(second, first.routes), [0, 0, 4, 4, 5, 6, 11, 12, 8]);
    assert.equal(reusedRoutesOf(second, second.routes), undefined);
  });

  test('changed upstream decodes anew', () => {
    const decoder = new SnapshotDecoder();
    const first = decodeChecked(decoder, encode(1, [route(1)]));
    const moved = [
      upstreams[0],
      { ...upstreams[1], targets: [{ url: 'http://[::1]:11', weight: 1 }] },
    ];
    const second = decodeChecked(decoder, encode(2, [route(1)], moved));
    assert.equal(second.routes[0], first.routes[0]);
    assert.equal(second.upstreams[0], first.upstreams[0]);
    assert.notEqual(second.upstreams[1], first.upstreams[1]);
  });

  test('reordered routes decode correctly', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 10 }, (_, index) => route(index));
    decodeChecked(decoder, encode(1, base));
    // The control plane sorts by name; any other order must still decode to the same content.
    decodeChecked(decoder, encode(2, [...base].reverse()));
  });

  test('one-route change compares few ranges', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 2_000 }, (_, index) => route(index));
    decoder.decode(encode(1, base));
    const changed = base.map((item, index) => (index === 1_234 ? route(index, '/x/:id') : item));
    const bytes = encode(2, changed);

    // One comparison per route would be 2,000; runs of equal entries compare as one range.
    const compares = countCompares(() => decoder.decode(bytes));
    assert.ok(compares <= 64, `${compares} comparisons`);
    decodeChecked(new SnapshotDecoder(), bytes);
  });

  test('interleaved fields decode correctly', () => {
    const decoder = new SnapshotDecoder();
    const entries: Entry[] = [
      { route: route(1) },
      { route: route(2) },
      { upstream: upstreams[0] },
      { route: route(3) },
      { route: route(4) },
      { upstream: upstreams[1] },
      { route: route(5) },
    ];
    const first = decodeChecked(decoder, encodeInterleaved(1, entries));

    // The same entries in another interleaving, then with one route changed.
    const moved: Entry[] = [entries[0], entries[2], entries[1], ...entries.slice(3)];
    const second = decodeChecked(decoder, encodeInterleaved(2, moved));
    assert.deepEqual(
      second.routes.map((item, index) => item === first.routes[index]),
      [true, true, true, true, true],
    );
    const changed = moved.map((entry) =>
      'route' in entry && entry.route.name === route(4).name ? { route: route(4, '/x') } : entry,
    );
    const third = decodeChecked(decoder, encodeInterleaved(3, changed));
    assert.deepEqual(
      third.routes.map((item, index) => item === second.routes[index]),
      [true, true, true, false, true],
    );
    assert.equal(third.upstreams[0], first.upstreams[0]);
    assert.equal(third.upstreams[1], first.upstreams[1]);
  });

  test('random edits decode as generated', () => {
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('change' as const), at: fc.nat(), path: fc.string() }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('remove' as const), at: fc.nat() }),
    );
    const base = fc.uniqueArray(fc.nat(999), { maxLength: 40 });
    const rounds = fc.array(fc.array(edit, { minLength: 1, maxLength: 4 }), { maxLength: 6 });
    fc.assert(
      fc.property(base, rounds, (names, edits) => {
        const decoder = new SnapshotDecoder();
        let routes = [...names].sort((a, b) => a - b).map((name) => route(name));
        let previous = decodeChecked(decoder, encode(1, routes));
        edits.forEach((round, roundIndex) => {
          const next = [...routes];
          round.forEach((step, stepIndex) => {
            const at = next.length === 0 ? 0 : step.at % next.length;
            if (step.kind === 'change' && next.length > 0) {
              next[at] = { ...next[at], paths: [`/${step.path}`] };
            }
            // Names above 999 are new, so no name appears twice.
            if (step.kind === 'insert')
              next.splice(at, 0, route(1_000 + roundIndex * 10 + stepIndex));
            if (step.kind === 'remove') next.splice(at, 1);
          });
          const snapshot = decodeChecked(decoder, encode(roundIndex + 2, next));
          const names = (list: Route[]) => list.map((item) => item.name);
          if (hasSameRouteNames(snapshot, previous.routes)) {
            assert.deepEqual(names(snapshot.routes), names(previous.routes));
          }
          if (round.every((step) => step.kind === 'change') && next.length > 0) {
            assert.ok(hasSameRouteNames(snapshot, previous.routes), 'changes keep the names');
          }
          // After a single edit, every route that did not change keeps its object.
          if (round.length === 1) {
            const unchanged = new Set(routes.filter((item) => next.includes(item)));
            const before = new Map(previous.routes.map((item, index) => [routes[index], item]));
            snapshot.routes.forEach((item, index) => {
              if (!unchanged.has(next[index])) return;
              assert.equal(item, before.get(next[index]), `${item.name} was decoded again`);
            });
          }
          routes = next;
          previous = snapshot;
        });
      }),
      { numRuns: 300 },
    );
  });

  test('input may change after decode', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 50 }, (_, index) => route(index));
    const input = encode(1, base);
    const first = decodeChecked(decoder, input);
    input.fill(0);
    const second = decodeChecked(decoder, encode(2, base));
    assert.equal(second.routes[10], first.routes[10]);
  });

  test('storage buffers are reused', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 500 }, (_, index) => route(index));
    const messages = Array.from({ length: 8 }, (_, version) => encode(version + 1, base));
    const original = Buffer.allocUnsafe;
    let allocations = 0;
    Buffer.allocUnsafe = (size: number) => {
      allocations++;
      return original(size);
    };
    try {
      for (const message of messages) decoder.decode(message);
    } finally {
      Buffer.allocUnsafe = original;
    }
    assert.equal(allocations, 2);
  });

  test('encoded bytes of the latest snapshots', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 20 }, (_, index) => route(index));
    const first = decodeChecked(decoder, encode(1, base));
    const firstBytes = encodedSnapshotOf(first);
    assert.ok(firstBytes !== undefined);
    assert.deepEqual(Buffer.from(firstBytes), Buffer.from(Snapshot.encode(first).finish()));

    const second = decodeChecked(decoder, encode(2, base.slice(1)));
    assert.deepEqual(
      Buffer.from(encodedSnapshotOf(second)!),
      Buffer.from(Snapshot.encode(second).finish()),
    );
    assert.ok(encodedSnapshotOf(first) !== undefined, 'the first is still in its buffer');

    // The third message is copied into the first one's buffer.
    decodeChecked(decoder, encode(3, base));
    assert.equal(encodedSnapshotOf(first), undefined);
    assert.ok(encodedSnapshotOf(second) !== undefined);
    assert.equal(encodedSnapshotOf(StreamResponse.decode(encode(4, base)).snapshot!), undefined);
  });

  test('same route names known', () => {
    const decoder = new SnapshotDecoder();
    const base = Array.from({ length: 30 }, (_, index) => route(index));
    const first = decodeChecked(decoder, encode(1, base));
    assert.equal(hasSameRouteNames(first, []), false, 'first snapshot');

    const moved = base.map((item, index) => (index === 12 ? route(12, '/moved') : item));
    const second = decodeChecked(decoder, encode(2, moved));
    assert.equal(hasSameRouteNames(second, first.routes), true, 'one path changed');
    assert.equal(hasSameRouteNames(second, [...first.routes]), false, 'another previous list');

    const renamed = moved.map((item, index) => (index === 12 ? { ...item, name: 'x' } : item));
    const third = decodeChecked(decoder, encode(3, renamed));
    assert.equal(hasSameRouteNames(third, second.routes), false, 'one route renamed');

    const fourth = decodeChecked(decoder, encode(4, renamed.slice(1)));
    assert.equal(hasSameRouteNames(fourth, third.routes), false, 'one route removed');

    const fifth = decodeChecked(decoder, encode(5, [route(100), ...renamed.slice(1)]));
    assert.equal(hasSameRouteNames(fifth, fourth.routes), false, 'one route inserted');
  });

  test('malformed message throws', () => {
    const decoder = new SnapshotDecoder();
    const bytes = encode(1, [route(1)]);
    assert.throws(() => decoder.decode(bytes.subarray(0, bytes.length - 3)));
  });
});

describe('sliced snapshot decoding', () => {
  const table = Array.from({ length: 3_000 }, (_, index) => route(index));

  test('matches the whole decode', async () => {
    const sliced = new SnapshotDecoder();
    const whole = new SnapshotDecoder();
    const changed = table.map((item, index) => (index === 1_500 ? route(index, '/moved') : item));
    for (const [version, routes] of [table, changed, changed.slice(7)].entries()) {
      const bytes = encode(version + 1, routes);
      const expected = whole.decode(bytes).snapshot!;
      const actual = (await sliced.decodeSliced(bytes, 0)).snapshot!;
      assert.deepEqual(actual, expected);
      assert.deepEqual(actual, StreamResponse.decode(bytes).snapshot);
    }
  });

  test('reuses unchanged routes', async () => {
    const decoder = new SnapshotDecoder();
    const first = (await decoder.decodeSliced(encode(1, table), 0)).snapshot!;
    const changed = table.map((item, index) => (index === 10 ? route(index, '/moved') : item));
    const second = (await decoder.decodeSliced(encode(2, changed), 0)).snapshot!;
    assert.notEqual(second.routes[10], first.routes[10]);
    assert.equal(second.routes[11], first.routes[11]);
    assert.equal(second.routes.at(-1), first.routes.at(-1));
    assert.equal(hasSameRouteNames(second, first.routes), true);
  });

  test('yields to the event loop', async () => {
    const decoder = new SnapshotDecoder();
    let turns = 0;
    const counter = setInterval(() => turns++, 0);
    try {
      // A slice of 0 ms yields at every pause, after each group of entries.
      await decoder.decodeSliced(encode(1, table), 0);
    } finally {
      clearInterval(counter);
    }
    assert.ok(turns > 1, `the timer ran ${turns} times during the decode`);
  });

  test('second decode during one throws', async () => {
    const decoder = new SnapshotDecoder();
    const running = decoder.decodeSliced(encode(1, table), 0);
    assert.throws(() => decoder.decode(encode(2, table)), { code: 'LOOM_INTERNAL' });
    await assert.rejects(decoder.decodeSliced(encode(2, table), 0), { code: 'LOOM_INTERNAL' });
    assert.equal((await running).snapshot?.version, 1);
    assert.equal(decoder.decode(encode(2, table)).snapshot?.version, 2);
  });

  test('malformed message rejects', async () => {
    const decoder = new SnapshotDecoder();
    const bytes = encode(1, table);
    await assert.rejects(decoder.decodeSliced(bytes.subarray(0, bytes.length - 3), 0));
    const next = encode(2, table);
    const decoded = await decoder.decodeSliced(next, 0);
    assert.deepEqual(decoded.snapshot, StreamResponse.decode(next).snapshot);
  });
});
