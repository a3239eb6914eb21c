import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';

import { Etcd3 } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { recordWatch } from './watch-recorder.js';

/** Time a watch gets to deliver a change it must not report, in milliseconds. */
const QUIET_MS = 300;

describe('EtcdStore generation key under a watch', () => {
  let etcd: EtcdProcess;
  let client: Etcd3;
  let next = 0;

  before(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
  });
  after(async () => {
    client?.close();
    await etcd?.stop();
  });

  function openStore(t: TestContext, root = `/loom-generation-${++next}/`) {
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: root });
    t.after(() => store.close());
    return { store, root };
  }

  function assertEpochChangeError(error: Error | undefined, change: RegExp): void {
    assert.ok(error instanceof LoomError, String(error));
    assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
    assert.equal(error.retryable, true);
    assert.match(error.message, change);
  }

  it('prefix delete fails the watch', async (t) => {
    const { store, root } = openStore(t);
    await store.epoch();
    const start = await store.commit([{ type: 'put', key: `${root}routes/a`, value: '1' }]);
    const recorder = recordWatch(store, root, start + 1);
    t.after(() => recorder.watch.cancel());

    await client.delete().prefix(root);
    await recorder.waitFor('a watch error', () => recorder.errors.length >= 1);

    assertEpochChangeError(recorder.errors[0], /was deleted at revision/);
    // The delete of routes/a shares the failing revision, so it is not delivered.
    assert.deepEqual(recorder.batches, []);
  });

  it('renewed epoch fails the watch', async (t) => {
    const { store, root } = openStore(t);
    const stale = await store.epoch();
    const start = await store.commit([{ type: 'put', key: `${root}routes/a`, value: '1' }]);
    const recorder = recordWatch(store, root, start + 1);
    t.after(() => recorder.watch.cancel());

    const renewed = await store.renewEpoch(stale);
    await recorder.waitFor('a watch error', () => recorder.errors.length >= 1);

    assert.notEqual(renewed, stale);
    assertEpochChangeError(recorder.errors[0], /was replaced at revision/);
  });

  it('created generation and route deletes pass', async (t) => {
    const { store, root } = openStore(t);
    const start = await store.commit([{ type: 'put', key: `${root}routes/a`, value: '1' }]);
    const recorder = recordWatch(store, root, start + 1);
    t.after(() => recorder.watch.cancel());

    // The first epoch() call creates the key that a wipe would delete.
    await store.epoch();
    await client.delete().prefix(`${root}routes/`);
    await recorder.waitFor('the route delete', () => recorder.batches.length >= 1);
    await sleep(QUIET_MS);

    assert.deepEqual(recorder.errors, []);
    assert.equal(recorder.batches.length, 1);
    assert.deepEqual(
      recorder.batches[0].events.map((event) => [event.type, event.key]),
      [['delete', `${root}routes/a`]],
    );
  });

  it('concurrent epoch calls agree after a delete', async (t) => {
    const root = `/loom-generation-${++next}/`;
    const stores = [openStore(t, root).store, openStore(t, root).store, openStore(t, root).store];
    const before = await stores[0].epoch();
    await client.delete().prefix(root);

    const epochs = await Promise.all(stores.map((store) => store.epoch()));

    assert.notEqual(epochs[0], before);
    assert.deepEqual(new Set(epochs), new Set([epochs[0]]));
    assert.equal((await stores[1].range(root)).epoch, epochs[0]);
  });
});
