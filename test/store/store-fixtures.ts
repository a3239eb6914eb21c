import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

import { EmbeddedStore } from '../../control-plane/store/embedded-store.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import type { Store } from '../../control-plane/store/store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';

/** A store opened empty for one test. */
export interface OpenedStore {
  store: Store;
  /** The prefix the test writes under. */
  root: string;
  /** Closes `store` and opens the same data again. */
  reopen(): Promise<Store>;
  /** Opens a second client of the same data, as another control plane would; etcd only. */
  openAnother?(): Store;
}

/** One store implementation, opened empty for each test. */
export interface StoreFixture {
  open(t: TestContext): Promise<OpenedStore>;
  close(): Promise<void>;
}

/** Starts an etcd server; each test gets its own prefix in it. */
export async function etcdStoreFixture(): Promise<StoreFixture & { etcd: EtcdProcess }> {
  const etcd = await startEtcd();
  let next = 0;
  return {
    etcd,
    async open(t) {
      const root = `/loom-test-${++next}/`;
      const create = () => new EtcdStore({ endpoints: [etcd.endpoint], prefix: root });
      let store: Store = create();
      t.after(() => store.close());
      return {
        store,
        root,
        async reopen() {
          await store.close();
          store = create();
          return store;
        },
        openAnother: create,
      };
    },
    async close() {
      await etcd.stop();
    },
  };
}

/** Gives each test an embedded store in its own data directory. */
export async function embeddedStoreFixture(historyLimit?: number): Promise<StoreFixture> {
  const parent = await mkdtemp(join(tmpdir(), 'loom-embedded-'));
  let next = 0;
  return {
    async open(t) {
      const dataDir = join(parent, `store-${++next}`);
      const open = () => EmbeddedStore.open({ dataDir, historyLimit });
      let store: Store = await open();
      t.after(() => store.close());
      return {
        store,
        root: '/loom/',
        async reopen() {
          await store.close();
          store = await open();
          return store;
        },
      };
    },
    async close() {
      await rm(parent, { recursive: true, force: true });
    },
  };
}
