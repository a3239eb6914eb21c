import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

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

  test('malformed message throws', () => {
    const decoder = new SnapshotDecoder();
    const bytes = encode(1, [route(1)]);
    assert.throws(() => decoder.decode(bytes.subarray(0, bytes.length - 3)));
  });
});
