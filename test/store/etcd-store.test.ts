import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it, type TestContext } from 'node:test';

import { Etcd3 } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger, recordWatch } from './watch-recorder.js';

describe('EtcdStore', () => {
  let etcd: EtcdProcess;
  let next = 0;

  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  function openStore(t: TestContext, options: { requestTimeoutMs?: number } = {}) {
    const root = `/loom-etcd-${++next}/`;
    const { logger, lines } = memoryLogger();
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: root, logger, ...options });
    t.after(() => store.close());
    return { store, root, lines };
  }

  it('constructor rejects a prefix without a slash', () => {
    assert.throws(
      () => new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/loom' }),
      (error) => error instanceof LoomError && error.code === 'LOOM_INVALID_ARGUMENT',
    );
  });

  it('commit rejects keys outside the prefix', async (t) => {
    const { store } = openStore(t);

    await assert.rejects(
      store.commit([{ type: 'put', key: '/elsewhere/a', value: '1' }]),
      (error) => error instanceof LoomError && error.code === 'LOOM_INVALID_ARGUMENT',
    );
  });

  it('ifRevision sees puts by other clients', async (t) => {
    const { store, root } = openStore(t);
    const read = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
    const other = new Etcd3({ hosts: etcd.endpoint });
    t.after(() => other.close());
    await other.put(`${root}b`).value('written by another tool');

    await assert.rejects(
      store.commit([{ type: 'put', key: `${root}a`, value: '2' }], { ifRevision: read }),
      (error) => error instanceof LoomError && error.code === 'LOOM_VERSION_CONFLICT',
    );
  });

  it('unreachable etcd fails retryably, then recovers', async (t) => {
    const { store, root, lines } = openStore(t, { requestTimeoutMs: 1000 });
    await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);

    await etcd.kill();
    try {
      await assert.rejects(store.range(root), (error: unknown) => {
        assert.ok(error instanceof LoomError);
        assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
        assert.equal(error.retryable, true);
        assert.match(error.message, new RegExp(`etcd at ${etcd.endpoint} is unreachable`));
        assert.doesNotMatch(error.message, /Resolution note/);
        assert.doesNotMatch(error.message, /Error: /);
        return true;
      });
    } finally {
      await etcd.restart();
    }

    assert.equal((await store.range(root)).items.length, 1);
    const messages = lines.map((line) => line.msg);
    assert.ok(messages.includes('etcd unreachable'), messages.join(', '));
    assert.equal(messages.at(-1), 'etcd connected');
  });

  it('watch resumes after a restart without gaps', async (t) => {
    const { store, root } = openStore(t);
    const start = await store.commit([{ type: 'put', key: `${root}a`, value: '0' }]);
    const recorder = recordWatch(store, root, start);
    t.after(() => recorder.watch.cancel());
    await recorder.waitFor('the first batch', () => recorder.batches.length >= 1);

    await etcd.kill();
    await etcd.restart();
    // These commits land before the watch stream is back, so it must resume from them.
    const revisions: number[] = [start];
    for (let index = 1; index <= 3; index++) {
      revisions.push(await store.commit([{ type: 'put', key: `${root}a`, value: String(index) }]));
    }
    await recorder.waitFor('every batch', () => recorder.batches.length >= 4, 10_000);

    assert.deepEqual(
      recorder.batches.map((batch) => batch.revision),
      revisions,
    );
    assert.deepEqual(recorder.errors, []);
  });

  it('watch fails when etcd is wiped', async (t) => {
    const { store, root } = openStore(t);
    let revision = 0;
    for (let index = 0; index < 5; index++) {
      revision = await store.commit([{ type: 'put', key: `${root}a`, value: String(index) }]);
    }
    const recorder = recordWatch(store, root, revision);
    t.after(() => recorder.watch.cancel());
    await recorder.waitFor('the first batch', () => recorder.batches.length >= 1);

    await etcd.kill();
    await rm(etcd.dataDir, { recursive: true, force: true });
    await etcd.restart();
    await recorder.waitFor('a watch error', () => recorder.errors.length >= 1, 10_000);

    const [error] = recorder.errors;
    assert.ok(error instanceof LoomError);
    assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
    assert.equal(error.retryable, true);
    assert.match(error.message, /wiped or restored/);
  });

  it('wiped etcd yields a new epoch', async (t) => {
    const { store, root } = openStore(t);
    await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
    const before = await store.epoch();

    await etcd.kill();
    await rm(etcd.dataDir, { recursive: true, force: true });
    await etcd.restart();
    const after = await store.epoch();

    assert.notEqual(after, before);
    assert.equal(await store.epoch(), after);
    assert.deepEqual((await store.range(root)).items, []);
  });

  it('generation write leaves the read revision alone', async (t) => {
    const { store, root } = openStore(t);
    await store.commit([{ type: 'put', key: `${root}routes/a`, value: '1' }]);
    // A replica that read before the generation key existed, then created it.
    const early = await store.range(root);
    assert.equal(early.epoch, undefined);
    const epoch = await store.epoch();

    // A replica that reads after the generation write serves the same version.
    const other = new EtcdStore({ endpoints: [etcd.endpoint], prefix: root });
    t.after(() => other.close());
    const late = await other.range(root);
    assert.equal(late.epoch, epoch);
    assert.equal(late.revision, early.revision);
  });
});
