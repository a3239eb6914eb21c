import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';

import { Etcd3 } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import type { Store } from '../../control-plane/store/store.js';
import { embeddedStoreFixture, etcdStoreFixture, type OpenedStore } from './store-fixtures.js';
import { recordWatch, waitFor } from './watch-recorder.js';

/** One store implementation, as the shared suite uses it. */
interface ConformanceFixture {
  /** Opens an empty store; the test writes only under `root`. */
  open(t: TestContext): Promise<OpenedStore>;
  /** Makes every revision up to `revision` unavailable to new watches. */
  compact(store: Store, root: string, revision: number): Promise<void>;
  close(): Promise<void>;
}

/** Embedded stores keep this many batches, so `compact` writes one more. */
const EMBEDDED_HISTORY = 8;

function assertLoomError(error: unknown, code: LoomError['code'], retryable?: boolean): boolean {
  assert.ok(error instanceof LoomError, `expected a LoomError, got ${String(error)}`);
  assert.equal(error.code, code);
  if (retryable !== undefined) {
    assert.equal(error.retryable, retryable);
  }
  return true;
}

function defineStoreConformance(
  name: string,
  createFixture: () => Promise<ConformanceFixture>,
): void {
  describe(`${name} conformance`, () => {
    let fixture: ConformanceFixture;

    before(async () => {
      fixture = await createFixture();
    });
    after(async () => {
      await fixture?.close();
    });

    it('range reads keys at one revision', async (t) => {
      const { store, root } = await fixture.open(t);
      const first = await store.commit([
        { type: 'put', key: `${root}b`, value: '2' },
        { type: 'put', key: `${root}a`, value: '1' },
      ]);
      const second = await store.commit([{ type: 'put', key: `${root}c/d`, value: '3' }]);

      const all = await store.range(root);
      const nested = await store.range(`${root}c/`);

      assert.equal(all.revision, second);
      assert.deepEqual(all.items, [
        { key: `${root}a`, value: '1', modRevision: first },
        { key: `${root}b`, value: '2', modRevision: first },
        { key: `${root}c/d`, value: '3', modRevision: second },
      ]);
      assert.deepEqual(
        nested.items.map((item) => item.key),
        [`${root}c/d`],
      );
    });

    it('revisions grow by one per commit', async (t) => {
      const { store, root } = await fixture.open(t);
      const revisions: number[] = [];
      for (let index = 0; index < 4; index++) {
        revisions.push(await store.commit([{ type: 'put', key: `${root}k${index}`, value: 'v' }]));
      }

      for (let index = 1; index < revisions.length; index++) {
        assert.equal(revisions[index], revisions[index - 1] + 1);
      }
      assert.equal((await store.range(root)).revision, revisions.at(-1));
    });

    it('multi-key commit is one watch batch', async (t) => {
      const { store, root } = await fixture.open(t);
      await store.commit([{ type: 'put', key: `${root}old`, value: 'x' }]);
      const { revision } = await store.range(root);
      const recorder = recordWatch(store, root, revision + 1);
      t.after(() => recorder.watch.cancel());

      const committed = await store.commit([
        { type: 'put', key: `${root}one`, value: '1' },
        { type: 'put', key: `${root}two`, value: '2' },
        { type: 'delete', key: `${root}old` },
      ]);
      await recorder.waitFor('one batch', () => recorder.batches.length >= 1);

      assert.equal(recorder.batches.length, 1);
      assert.deepEqual(recorder.batches[0], {
        revision: committed,
        events: [
          { type: 'put', key: `${root}one`, value: '1', modRevision: committed },
          { type: 'put', key: `${root}two`, value: '2', modRevision: committed },
          { type: 'delete', key: `${root}old`, value: '', modRevision: committed },
        ],
      });
    });

    it('watch from a past revision replays', async (t) => {
      const { store, root } = await fixture.open(t);
      const first = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      const second = await store.commit([{ type: 'put', key: `${root}a`, value: '2' }]);
      const third = await store.commit([{ type: 'put', key: `${root}b`, value: '3' }]);

      const recorder = recordWatch(store, root, second);
      t.after(() => recorder.watch.cancel());
      await recorder.waitFor('two replayed batches', () => recorder.batches.length >= 2);
      const live = await store.commit([{ type: 'put', key: `${root}c`, value: '4' }]);
      await recorder.waitFor('the live batch', () => recorder.batches.length >= 3);

      assert.ok(first < second);
      assert.deepEqual(
        recorder.batches.map((batch) => batch.revision),
        [second, third, live],
      );
      assert.equal(recorder.batches[0].events[0].value, '2');
      assert.deepEqual(recorder.errors, []);
    });

    it('watch sees only its prefix', async (t) => {
      const { store, root } = await fixture.open(t);
      const { revision } = await store.range(root);
      const recorder = recordWatch(store, `${root}in/`, revision + 1);
      t.after(() => recorder.watch.cancel());

      await store.commit([{ type: 'put', key: `${root}out/x`, value: '1' }]);
      const mixed = await store.commit([
        { type: 'put', key: `${root}out/y`, value: '2' },
        { type: 'put', key: `${root}in/z`, value: '3' },
      ]);
      await recorder.waitFor('one batch', () => recorder.batches.length >= 1);

      assert.deepEqual(recorder.batches, [
        {
          revision: mixed,
          events: [{ type: 'put', key: `${root}in/z`, value: '3', modRevision: mixed }],
        },
      ]);
    });

    it('delete events and range after delete', async (t) => {
      const { store, root } = await fixture.open(t);
      const created = await store.commit([{ type: 'put', key: `${root}gone`, value: 'v' }]);
      const recorder = recordWatch(store, root, created + 1);
      t.after(() => recorder.watch.cancel());

      const deleted = await store.commit([{ type: 'delete', key: `${root}gone` }]);
      await recorder.waitFor('the delete batch', () => recorder.batches.length >= 1);

      assert.deepEqual(recorder.batches[0].events, [
        { type: 'delete', key: `${root}gone`, value: '', modRevision: deleted },
      ]);
      assert.deepEqual((await store.range(root)).items, []);
    });

    it('deleting a missing key still takes a revision', async (t) => {
      const { store, root } = await fixture.open(t);
      const before = await store.commit([{ type: 'put', key: `${root}x`, value: '1' }]);
      const recorder = recordWatch(store, root, before + 1);
      t.after(() => recorder.watch.cancel());

      const noop = await store.commit([{ type: 'delete', key: `${root}never` }]);
      const after = await store.commit([{ type: 'put', key: `${root}y`, value: '2' }]);
      await recorder.waitFor('the put batch', () => recorder.batches.length >= 1);

      assert.equal(noop, before + 1);
      assert.equal(after, noop + 1);
      assert.deepEqual(
        recorder.batches.map((batch) => batch.revision),
        [after],
      );
    });

    it('ifRevision conflicts after a write', async (t) => {
      const { store, root } = await fixture.open(t);
      await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      const read = (await store.range(root)).revision;
      const newer = await store.commit([{ type: 'put', key: `${root}a`, value: '2' }]);

      await assert.rejects(
        store.commit([{ type: 'put', key: `${root}a`, value: '3' }], {
          ifRevision: read,
          prefix: root,
        }),
        (error: unknown) => {
          assertLoomError(error, 'LOOM_VERSION_CONFLICT', false);
          assert.match((error as Error).message, new RegExp(`revision ${newer}\\b`));
          assert.match((error as Error).message, new RegExp(`revision ${read}\\b`));
          return true;
        },
      );
      assert.equal((await store.range(root)).items[0].value, '2');
    });

    it('ifRevision succeeds when nothing changed', async (t) => {
      const { store, root } = await fixture.open(t);
      const read = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);

      const written = await store.commit([{ type: 'put', key: `${root}a`, value: '2' }], {
        ifRevision: read,
        prefix: root,
      });
      const unscoped = await store.commit([{ type: 'put', key: `${root}a`, value: '3' }], {
        ifRevision: written,
      });

      assert.equal(written, read + 1);
      assert.equal(unscoped, written + 1);
    });

    it('ifRevision sees deletes', async (t) => {
      const { store, root } = await fixture.open(t);
      const read = await store.commit([{ type: 'put', key: `${root}dir/a`, value: '1' }]);
      await store.commit([{ type: 'delete', key: `${root}dir/a` }]);

      await assert.rejects(
        store.commit([{ type: 'put', key: `${root}dir/b`, value: '2' }], {
          ifRevision: read,
          prefix: `${root}dir/`,
        }),
        (error) => assertLoomError(error, 'LOOM_VERSION_CONFLICT'),
      );
    });

    it('ifRevision ignores other prefixes', async (t) => {
      const { store, root } = await fixture.open(t);
      const read = await store.commit([{ type: 'put', key: `${root}mine/a`, value: '1' }]);
      await store.commit([{ type: 'put', key: `${root}other/b`, value: '2' }]);

      const written = await store.commit([{ type: 'put', key: `${root}mine/a`, value: '3' }], {
        ifRevision: read,
        prefix: `${root}mine/`,
      });

      assert.equal(written, read + 2);
      await assert.rejects(
        store.commit([{ type: 'put', key: `${root}mine/a`, value: '4' }], {
          ifRevision: read,
          prefix: root,
        }),
        (error) => assertLoomError(error, 'LOOM_VERSION_CONFLICT'),
      );
    });

    it('concurrent conditional commits: one wins', async (t) => {
      const { store, root } = await fixture.open(t);
      const read = await store.commit([{ type: 'put', key: `${root}n`, value: '0' }]);

      const results = await Promise.allSettled(
        [1, 2, 3, 4, 5].map((value) =>
          store.commit([{ type: 'put', key: `${root}n`, value: String(value) }], {
            ifRevision: read,
            prefix: root,
          }),
        ),
      );

      const won = results.filter((result) => result.status === 'fulfilled');
      const lost = results.filter((result) => result.status === 'rejected');
      assert.equal(won.length, 1);
      assert.equal(lost.length, 4);
      for (const result of lost) {
        assertLoomError((result as PromiseRejectedResult).reason, 'LOOM_VERSION_CONFLICT');
      }
    });

    it('commit rejects invalid requests', async (t) => {
      const { store, root } = await fixture.open(t);
      const invalid = [
        store.commit([]),
        store.commit([
          { type: 'put', key: `${root}twice`, value: '1' },
          { type: 'delete', key: `${root}twice` },
        ]),
        store.commit([{ type: 'put', key: `${root}__meta/x`, value: '1' }]),
        store.commit([{ type: 'put', key: `${root}a`, value: '1' }], {
          ifRevision: 1,
          prefix: `${root}no-slash`,
        }),
        store.commit([{ type: 'put', key: `${root}a`, value: '1' }], { ifRevision: -1 }),
      ];

      for (const commit of invalid) {
        await assert.rejects(commit, (error) => assertLoomError(error, 'LOOM_INVALID_ARGUMENT'));
      }
      assert.deepEqual((await store.range(root)).items, []);
    });

    it('meta keys stay hidden', async (t) => {
      const { store, root } = await fixture.open(t);
      await store.epoch();
      const read = await store.commit([{ type: 'put', key: `${root}dir/a`, value: '1' }]);
      const recorder = recordWatch(store, root, read);
      t.after(() => recorder.watch.cancel());
      await store.commit([{ type: 'delete', key: `${root}dir/a` }]);
      await recorder.waitFor('two batches', () => recorder.batches.length >= 2);

      const keys = [
        ...(await store.range(root)).items.map((item) => item.key),
        ...recorder.batches.flatMap((batch) => batch.events.map((event) => event.key)),
      ];
      assert.deepEqual(keys, [`${root}dir/a`, `${root}dir/a`]);
    });

    it('epoch is stable across reopen', async (t) => {
      const opened = await fixture.open(t);
      await opened.store.commit([{ type: 'put', key: `${opened.root}a`, value: '1' }]);
      const before = await opened.store.epoch();
      const again = await opened.store.epoch();

      const reopened = await opened.reopen();
      const after = await reopened.epoch();

      assert.match(before, /\S{8,}/);
      assert.equal(again, before);
      assert.equal(after, before);
      assert.equal((await reopened.range(opened.root)).items.length, 1);
    });

    it('renewed epoch replaces a stale one once', async (t) => {
      const opened = await fixture.open(t);
      await opened.store.commit([{ type: 'put', key: `${opened.root}a`, value: '1' }]);
      const stale = await opened.store.epoch();

      const renewed = await opened.store.renewEpoch(stale);
      const again = await opened.store.renewEpoch(stale);
      const current = await opened.store.epoch();
      const reopened = await opened.reopen();

      assert.notEqual(renewed, stale);
      assert.equal(again, renewed);
      assert.equal(current, renewed);
      assert.equal(await reopened.epoch(), renewed);
      assert.equal((await reopened.range(opened.root)).items.length, 1);
    });

    it('watch handlers run asynchronously', async (t) => {
      const { store, root } = await fixture.open(t);
      const read = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      let delivered = 0;
      const watch = store.watch(root, read, {
        onBatch: () => delivered++,
        onError: () => undefined,
      });
      t.after(() => watch.cancel());

      assert.equal(delivered, 0);
      const pending = store.commit([{ type: 'put', key: `${root}b`, value: '2' }]);
      assert.equal(delivered, 0);
      await pending;
      await waitFor('two batches', () => delivered >= 2);
    });

    it('canceled watch gets no more batches', async (t) => {
      const { store, root } = await fixture.open(t);
      const read = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      const recorder = recordWatch(store, root, read);
      await recorder.waitFor('the first batch', () => recorder.batches.length >= 1);

      await recorder.watch.cancel();
      await store.commit([{ type: 'put', key: `${root}b`, value: '2' }]);
      const marker = recordWatch(store, root, read);
      t.after(() => marker.watch.cancel());
      await marker.waitFor('a second watch to see both', () => marker.batches.length >= 2);

      assert.equal(recorder.batches.length, 1);
      assert.deepEqual(recorder.errors, []);
    });

    it('watch from a compacted revision fails retryably', async (t) => {
      const { store, root } = await fixture.open(t);
      const early = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      const later = await store.commit([{ type: 'put', key: `${root}a`, value: '2' }]);
      await fixture.compact(store, root, later);

      const recorder = recordWatch(store, root, early);
      t.after(() => recorder.watch.cancel());
      await recorder.waitFor('an error', () => recorder.errors.length >= 1);
      await store.commit([{ type: 'put', key: `${root}a`, value: '3' }]);
      // Give a wrongly resumed watch time to deliver the commit above.
      await new Promise((resolve) => setTimeout(resolve, 200));

      assert.equal(recorder.errors.length, 1);
      assertLoomError(recorder.errors[0], 'LOOM_STORE_UNAVAILABLE', true);
      assert.match(recorder.errors[0].message, new RegExp(`revision ${early}\\b`));
      assert.deepEqual(recorder.batches, []);
    });
  });
}

defineStoreConformance('EtcdStore', async () => {
  const fixture = await etcdStoreFixture();
  const admin = new Etcd3({ hosts: fixture.etcd.endpoint });
  return {
    open: (t) => fixture.open(t),
    async compact(_store, _root, revision) {
      await admin.kv.compact({ revision, physical: true });
    },
    async close() {
      admin.close();
      await fixture.close();
    },
  };
});

defineStoreConformance('EmbeddedStore', async () => {
  const fixture = await embeddedStoreFixture(EMBEDDED_HISTORY);
  return {
    open: (t) => fixture.open(t),
    async compact(store, root) {
      // The embedded store drops the oldest batches once its history is full.
      for (let index = 0; index <= EMBEDDED_HISTORY; index++) {
        await store.commit([{ type: 'put', key: `${root}filler/${index}`, value: '' }]);
      }
    },
    close: () => fixture.close(),
  };
});
