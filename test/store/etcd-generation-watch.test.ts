import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';

import { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';

import { LoomError } from '../../common/errors.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger, recordWatch } from './watch-recorder.js';

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

  function openStore(t: TestContext, root = `/loom-generation-${++next}/`, logger?: Logger) {
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: root, logger });
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

  for (const [name, blank] of [
    ['empty', ''],
    ['whitespace', ' \n\t'],
  ]) {
    it(`${name} generation gets one new epoch`, async (t) => {
      const root = `/loom-generation-${++next}/`;
      const logs = [memoryLogger(), memoryLogger(), memoryLogger()];
      const stores = logs.map((log) => openStore(t, root, log.logger).store);
      const before = await stores[0].epoch();
      const key = `${root}__meta/generation`;
      await client.put(key).value(blank);
      const start = await stores[0].commit([{ type: 'put', key: `${root}routes/a`, value: '1' }]);
      assert.equal((await stores[0].range(root)).epoch, undefined);
      const recorder = recordWatch(stores[0], root, start + 1);
      t.after(() => recorder.watch.cancel());

      const epochs = await Promise.all(stores.map((store) => store.epoch()));

      assert.notEqual(epochs[0], before);
      assert.deepEqual(new Set(epochs), new Set([epochs[0]]));
      const generation = await client.get(key).string();
      assert.match(generation ?? '', /^[0-9a-f-]{36}$/);
      assert.ok(epochs[0].endsWith(`-${generation}`), `${epochs[0]} for ${generation}`);
      assert.equal((await stores[1].range(root)).epoch, epochs[0]);
      assert.equal(await stores[2].epoch(), epochs[0]);

      const replaced = logs.flatMap((log) =>
        log.lines.filter((line) => line.msg.startsWith('etcd generation replaced')),
      );
      assert.equal(replaced.length, 1);
      assert.equal(replaced[0].key, key);
      assert.equal(replaced[0].stored, blank);
      assert.equal(replaced[0].generation, generation);

      // A watch that started while the value was blank fails, so its reader reads again.
      await recorder.waitFor('a watch error', () => recorder.errors.length >= 1);
      assertEpochChangeError(recorder.errors[0], /was replaced at revision/);
    });
  }

  it('blank generation records no accepted version', async (t) => {
    const { store, root } = openStore(t);
    const epoch = await store.epoch();
    await client.put(`${root}__meta/generation`).value('');
    // The epoch that an empty generation would format to.
    const blankEpoch = epoch.slice(0, epoch.indexOf('-') + 1);
    const accepted = { epoch: blankEpoch, version: 1, hash: 'a'.repeat(64) };

    assert.equal(await store.recordAccepted(accepted, new Uint8Array()), false);
    assert.equal(await store.acceptedVersion(), undefined);
  });
});
