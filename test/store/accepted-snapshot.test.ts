import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';

import { Etcd3 } from 'etcd3';

import {
  buildSnapshot,
  type PublishedSnapshot,
} from '../../control-plane/snapshot/build-snapshot.js';
import { SnapshotCache } from '../../control-plane/snapshot/snapshot-cache.js';
import { EmbeddedStore } from '../../control-plane/store/embedded-store.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import type { Store } from '../../control-plane/store/store.js';
import { AcceptedSnapshot } from '../../control-plane/stream/accepted-snapshot.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger, waitFor } from './watch-recorder.js';

const PREFIX = '/loom/';

function route(name: string, path: string): { key: string; value: string } {
  return {
    key: `${PREFIX}routes/${name}`,
    value: JSON.stringify({ name, paths: [path], upstream: 'users' }),
  };
}

const USERS = {
  key: `${PREFIX}upstreams/users`,
  value: JSON.stringify({ name: 'users', targets: [{ url: 'http://127.0.0.1:9', weight: 1 }] }),
};

async function put(store: Store, items: { key: string; value: string }[]): Promise<number> {
  return store.commit(items.map((item) => ({ type: 'put', ...item })));
}

/** Starts one control plane's cache and accepted snapshot on `store`; both stop after the test. */
async function startReplica(t: TestContext, store: Store) {
  const { logger, lines } = memoryLogger();
  const cache = new SnapshotCache({ store, prefix: PREFIX, logger });
  await cache.start();
  t.after(() => cache.stop());
  const accepted = new AcceptedSnapshot(cache, { store, prefix: PREFIX, logger });
  await accepted.settled();
  return { cache, accepted, lines };
}

async function waitForVersion(cache: SnapshotCache, version: number): Promise<PublishedSnapshot> {
  await waitFor(`the cache to publish version ${version}`, () => {
    return (cache.current?.snapshot.version ?? 0) >= version;
  });
  return cache.current!;
}

describe('AcceptedSnapshot on etcd', () => {
  let etcd: EtcdProcess;
  let admin: Etcd3;
  const stores: EtcdStore[] = [];

  before(async () => {
    etcd = await startEtcd();
    admin = new Etcd3({ hosts: etcd.endpoint });
  });
  after(async () => {
    for (const store of stores) await store.close();
    admin?.close();
    await etcd?.stop();
  });

  function openStore(): EtcdStore {
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: PREFIX });
    stores.push(store);
    return store;
  }

  async function headRevision(): Promise<number> {
    const response = await admin.kv.range({ key: Buffer.from(PREFIX), count_only: true });
    return Number(response.header.revision);
  }

  it('acks recorded once per version', async (t) => {
    const writer = openStore();
    await writer.epoch();
    await put(writer, [USERS, route('a', '/a')]);
    const first = await startReplica(t, openStore());
    const second = await startReplica(t, openStore());
    const published = first.cache.current!;
    const { epoch, version } = published.snapshot;
    await waitForVersion(second.cache, version);
    const before = await headRevision();

    for (let ack = 0; ack < 50; ack++) {
      first.accepted.noteAck(epoch, version);
      second.accepted.noteAck(epoch, version);
    }
    await Promise.all([first.accepted.settled(), second.accepted.settled()]);

    assert.equal(await headRevision(), before + 1);
    assert.deepEqual(await writer.acceptedVersion(), {
      epoch,
      version,
      hash: published.snapshot.hash,
    });
  });

  it('replica without acks loads the record', async (t) => {
    const writer = openStore();
    const version = await put(writer, [route('b', '/b')]);
    const acking = await startReplica(t, openStore());
    const idle = await startReplica(t, openStore());
    await waitForVersion(acking.cache, version);
    await waitForVersion(idle.cache, version);

    acking.accepted.noteAck(acking.cache.current!.snapshot.epoch, version);
    await acking.accepted.settled();
    // The idle replica may hold an older test's accepted version, but not this one.
    assert.notEqual(idle.accepted.current?.snapshot.version, version);
    await idle.accepted.refresh();

    assert.equal(idle.accepted.current?.encoded, idle.cache.current?.encoded);
    const loaded = idle.lines.findLast((line) => line.msg === 'accepted snapshot loaded');
    assert.equal(loaded?.source, 'published');
  });

  it('rebuilt snapshot is byte-identical', async (t) => {
    const writer = openStore();
    const version = await put(writer, [route('c', '/c'), route('d', '/d/:id')]);
    const original = await startReplica(t, openStore());
    const accepted = await waitForVersion(original.cache, version);
    original.accepted.noteAck(accepted.snapshot.epoch, version);
    await original.accepted.settled();
    await writer.commit([{ type: 'delete', key: route('c', '').key }]);
    await put(writer, [route('e', '/e')]);

    const restarted = await startReplica(t, openStore());

    const rebuilt = restarted.accepted.current;
    assert.ok(rebuilt, JSON.stringify(restarted.lines.slice(-5)));
    assert.notEqual(restarted.cache.current?.snapshot.hash, accepted.snapshot.hash);
    assert.ok(accepted.snapshot.routes.length >= 2);
    assert.equal(rebuilt.snapshot.hash, accepted.snapshot.hash);
    assert.ok(rebuilt.encoded.equals(accepted.encoded));
    const loaded = restarted.lines.find((line) => line.msg === 'accepted snapshot loaded');
    assert.equal(loaded?.source, 'store');
  });

  it('compacted record logged once', async (t) => {
    const writer = openStore();
    const version = await put(writer, [route('f', '/f')]);
    const original = await startReplica(t, openStore());
    await waitForVersion(original.cache, version);
    original.accepted.noteAck(original.cache.current!.snapshot.epoch, version);
    await original.accepted.settled();
    const latest = await put(writer, [route('f', '/f/other')]);
    await admin.kv.compact({ revision: latest, physical: true });

    const restarted = await startReplica(t, openStore());
    await restarted.accepted.refresh();
    await restarted.accepted.refresh();

    assert.equal(restarted.accepted.current, undefined);
    const lines = restarted.lines.filter((line) => line.msg === 'accepted snapshot not rebuilt');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].reason, 'compacted');
    assert.equal(lines[0].version, version);
  });

  it('start publishes the acked version', async (t) => {
    const writer = openStore();
    const version = await put(writer, [route('g', '/g')]);
    const original = await startReplica(t, openStore());
    await waitForVersion(original.cache, version);
    original.accepted.noteAck(original.cache.current!.snapshot.epoch, version);
    await original.accepted.settled();
    assert.ok((await headRevision()) > version);

    const restarted = await startReplica(t, openStore());

    assert.equal(restarted.cache.current?.snapshot.version, version);
    assert.equal(restarted.accepted.current?.encoded, restarted.cache.current?.encoded);
  });
});

describe('AcceptedSnapshot on the embedded store', () => {
  let parent: string;

  before(async () => {
    parent = await mkdtemp(join(tmpdir(), 'loom-accepted-snapshot-'));
  });
  after(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it('reopened store restores it byte-identical', async (t) => {
    const dataDir = join(parent, 'reopen');
    const store = await EmbeddedStore.open({ dataDir });
    const version = await put(store, [USERS, route('a', '/a'), route('b', '/b/:id')]);
    const cache = new SnapshotCache({ store, prefix: PREFIX, logger: memoryLogger().logger });
    await cache.start();
    const accepted = new AcceptedSnapshot(cache, { store, prefix: PREFIX });
    const original = cache.current!;
    accepted.noteAck(original.snapshot.epoch, version);
    await accepted.settled();
    await put(store, [route('c', '/c')]);
    await cache.stop();
    await store.close();

    const reopened = await EmbeddedStore.open({ dataDir });
    t.after(() => reopened.close());
    const restarted = await startReplica(t, reopened);

    const rebuilt = restarted.accepted.current;
    assert.ok(rebuilt, JSON.stringify(restarted.lines.slice(-5)));
    assert.notEqual(restarted.cache.current?.snapshot.hash, original.snapshot.hash);
    assert.equal(rebuilt.snapshot.version, version);
    assert.ok(rebuilt.encoded.equals(original.encoded));
  });

  it('renewed epoch hides the old one', async (t) => {
    const store = await EmbeddedStore.open({ dataDir: join(parent, 'renew') });
    t.after(() => store.close());
    const version = await put(store, [route('a', '/a')]);
    const replica = await startReplica(t, store);
    const stale = replica.cache.current!.snapshot.epoch;
    replica.accepted.noteAck(stale, version);
    await replica.accepted.settled();
    assert.ok(replica.accepted.current);

    await store.renewEpoch(stale);
    const restarted = await startReplica(t, store);

    assert.notEqual(restarted.cache.current?.snapshot.epoch, stale);
    assert.equal(restarted.accepted.current, undefined);
  });
});

describe('AcceptedSnapshot epochs', () => {
  it('snapshot of another epoch not current', () => {
    const listeners: ((published: PublishedSnapshot) => void)[] = [];
    let current: PublishedSnapshot | undefined;
    const cache = {
      get current() {
        return current;
      },
      subscribe(listener: (published: PublishedSnapshot) => void) {
        listeners.push(listener);
        return () => undefined;
      },
    } as unknown as SnapshotCache;
    const publish = (next: PublishedSnapshot) => {
      current = next;
      for (const listener of listeners) listener(next);
    };
    const accepted = new AcceptedSnapshot(cache);
    publish(buildSnapshot('old', 3, [], []));
    accepted.noteAck('old', 3);
    assert.equal(accepted.current?.snapshot.epoch, 'old');

    publish(buildSnapshot('new', 1, [], []));

    assert.equal(accepted.current, undefined);
  });
});
