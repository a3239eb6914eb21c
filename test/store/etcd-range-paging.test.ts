import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';

import { Etcd3 } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger } from './watch-recorder.js';

const KEYS = 400;
const PAGE_SIZE = 7;

describe('EtcdStore range paging', () => {
  let etcd: EtcdProcess;
  let next = 0;

  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  function openStore(t: TestContext) {
    const root = `/loom-paging-${++next}/`;
    const { logger, lines } = memoryLogger();
    const store = new EtcdStore({
      endpoints: [etcd.endpoint],
      prefix: root,
      logger,
      rangePageSize: PAGE_SIZE,
    });
    t.after(() => store.close());
    return { store, root, lines };
  }

  /** Writes `count` keys `routes/k000`... in batches, each under etcd's 128-operation limit. */
  async function fill(store: EtcdStore, root: string, count: number): Promise<number> {
    let revision = 0;
    for (let first = 0; first < count; first += 100) {
      const batch = Array.from({ length: Math.min(100, count - first) }, (_, offset) => ({
        type: 'put' as const,
        key: `${root}routes/k${String(first + offset).padStart(3, '0')}`,
        value: 'v0',
      }));
      revision = await store.commit(batch);
    }
    return revision;
  }

  it('page size must be positive', () => {
    for (const rangePageSize of [0, -1, 1.5]) {
      assert.throws(
        () => new EtcdStore({ endpoints: [etcd.endpoint], rangePageSize }),
        (error) => error instanceof LoomError && error.code === 'LOOM_INVALID_ARGUMENT',
      );
    }
  });

  it('range returns every key in pages', async (t) => {
    const { store, root, lines } = openStore(t);
    const written = await fill(store, root, KEYS);

    const result = await store.range(`${root}routes/`);

    assert.equal(result.revision, written);
    assert.equal(result.items.length, KEYS);
    const keys = result.items.map((item) => item.key);
    assert.deepEqual(keys, [...keys].sort());
    assert.equal(new Set(keys).size, KEYS);
    const paged = lines.find((line) => line.msg === 'range read in pages');
    assert.ok(paged, 'a debug line reports the paged read');
    assert.equal(paged.pages, Math.ceil(KEYS / PAGE_SIZE));
  });

  it('range pages share one revision', async (t) => {
    const { store, root } = openStore(t);
    await fill(store, root, KEYS);
    const writer = new Etcd3({ hosts: etcd.endpoint });
    t.after(() => writer.close());

    // Writes to the first and the last key race the paged read. Whatever the
    // interleaving, each value must be the one written at or before the
    // revision the read reports.
    const firstKey = `${root}routes/k000`;
    const lastKey = `${root}routes/k${String(KEYS - 1).padStart(3, '0')}`;
    const writes: { revision: number; value: string }[] = [];
    let writing = true;
    const writerLoop = (async () => {
      for (let round = 1; writing && round <= 200; round++) {
        const value = `v${round}`;
        const put = (key: string) => ({
          request_put: { key: Buffer.from(key), value: Buffer.from(value) },
        });
        const response = await writer.kv.txn({ success: [put(firstKey), put(lastKey)] });
        writes.push({ revision: Number(response.header.revision), value });
      }
    })();
    const results = [];
    for (let read = 0; read < 5; read++) results.push(await store.range(`${root}routes/`));
    writing = false;
    await writerLoop;

    for (const result of results) {
      const expected =
        writes.filter((write) => write.revision <= result.revision).at(-1)?.value ?? 'v0';
      const first = result.items.find((item) => item.key === firstKey);
      const last = result.items.find((item) => item.key === lastKey);
      assert.equal(first?.value, expected, `first key at revision ${result.revision}`);
      assert.equal(last?.value, expected, `last key at revision ${result.revision}`);
      for (const item of result.items) assert.ok(item.modRevision <= result.revision);
    }
  });

  it('compaction between pages fails retryably', async (t) => {
    const { store, root } = openStore(t);
    await fill(store, root, KEYS);
    const admin = new Etcd3({ hosts: etcd.endpoint });
    t.after(() => admin.close());

    // The write and the compaction usually land while the read is between two
    // pages. A read that finishes first is repeated, up to 20 times.
    let failure: unknown;
    for (let attempt = 0; attempt < 20 && failure === undefined; attempt++) {
      const reading = store.range(`${root}routes/`).then(
        () => undefined,
        (error: unknown) => error,
      );
      await new Promise((resolve) => setTimeout(resolve, 5));
      const put = await admin.put(`${root}routes/k000`).value(`c${attempt}`).exec();
      await admin.kv.compact({ revision: put.header.revision, physical: true });
      failure = await reading;
    }

    assert.ok(failure instanceof LoomError, 'a read overlapped a compaction');
    assert.equal(failure.code, 'LOOM_STORE_UNAVAILABLE');
    assert.equal(failure.retryable, true);
    assert.match(failure.message, /compacted revision \d+ while a range was read in pages/);
  });
});
