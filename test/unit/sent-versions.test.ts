import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  DISCONNECTED_SENT_VERSION_LIMIT,
  ProxyRegistry,
  SENT_VERSION_LIMIT,
} from '../../control-plane/stream/proxy-registry.js';
import { testStream } from '../helpers/proxy-stream.js';

describe('versions sent to a proxy', () => {
  test('hello version counts as sent', () => {
    const registry = new ProxyRegistry();
    registry.connect('p1', testStream('10.0.0.1:8080'), 'e', 7);

    assert.equal(registry.wasSent('p1', 'e', 7), true);
    assert.equal(registry.wasSent('p1', 'e', 8), false);
    assert.equal(registry.wasSent('p1', 'other', 7), false);
    assert.equal(registry.wasSent('p2', 'e', 7), false);
  });

  test('empty hello counts nothing', () => {
    const registry = new ProxyRegistry();
    registry.connect('p1', testStream('10.0.0.1:8080'), '', 0);

    assert.equal(registry.wasSent('p1', '', 0), false);
  });

  test('oldest sends are forgotten', () => {
    const registry = new ProxyRegistry();
    registry.connect('p1', testStream('10.0.0.1:8080'), '', 0);
    const last = SENT_VERSION_LIMIT + 5;
    for (let version = 1; version <= last; version++) registry.sent('p1', 'e', version);

    assert.equal(registry.wasSent('p1', 'e', 5), false);
    assert.equal(registry.wasSent('p1', 'e', 6), true);
    assert.equal(registry.wasSent('p1', 'e', last), true);
    assert.equal(registry.entry('p1')?.state.snapshotsSent, last);
  });

  test('disconnect keeps the newest sends', () => {
    const registry = new ProxyRegistry();
    const stream = testStream('10.0.0.1:8080');
    registry.connect('p1', stream, '', 0);
    for (let version = 1; version <= 20; version++) registry.sent('p1', 'e', version);
    registry.disconnect('p1', stream);

    const oldestKept = 20 - DISCONNECTED_SENT_VERSION_LIMIT + 1;
    assert.equal(registry.wasSent('p1', 'e', oldestKept - 1), false);
    assert.equal(registry.wasSent('p1', 'e', oldestKept), true);
    assert.equal(registry.wasSent('p1', 'e', 20), true);

    // The next stream of the id may ack what the previous one was sent.
    registry.connect('p1', testStream('10.0.0.1:8080'), 'e', 3);
    assert.equal(registry.wasSent('p1', 'e', 20), true);
    assert.equal(registry.wasSent('p1', 'e', 3), true);
  });

  test('sent versions stay out of entries', () => {
    const registry = new ProxyRegistry();
    registry.connect('p1', testStream('10.0.0.1:8080'), 'e', 7);
    registry.sent('p1', 'e', 8);

    const entry = registry.entry('p1');
    assert.ok(entry !== undefined);
    assert.equal('sentVersions' in entry.state, false);
    assert.equal('sentVersions' in registry.list()[0], false);
  });
});
