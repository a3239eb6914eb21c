import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Etcd3 } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import { EmbeddedStore } from '../../control-plane/store/embedded-store.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import type { AcceptedVersion } from '../../control-plane/store/store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { embeddedStoreFixture, etcdStoreFixture, type StoreFixture } from './store-fixtures.js';
import { memoryLogger } from './watch-recorder.js';

function content(text: string): { bytes: Uint8Array; hash: string } {
  const bytes = Buffer.from(text);
  return { bytes, hash: createHash('sha256').update(bytes).digest('hex') };
}

function accepted(epoch: string, version: number, text: string): AcceptedVersion {
  return { epoch, version, hash: content(text).hash };
}

function defineAcceptedVersionTests(
  name: string,
  createFixture: () => Promise<StoreFixture>,
): void {
  describe(`${name} accepted version`, () => {
    let fixture: StoreFixture;

    before(async () => {
      fixture = await createFixture();
    });
    after(async () => {
      await fixture?.close();
    });

    it('nothing recorded at first', async (t) => {
      const { store } = await fixture.open(t);
      assert.equal(await store.acceptedVersion(), undefined);
    });

    it('record survives reopen', async (t) => {
      const opened = await fixture.open(t);
      const epoch = await opened.store.epoch();
      const version = await opened.store.commit([
        { type: 'put', key: `${opened.root}a`, value: '1' },
      ]);
      const record = accepted(epoch, version, 'one');

      assert.equal(await opened.store.recordAccepted(record, content('one').bytes), true);
      assert.deepEqual(await opened.store.acceptedVersion(), record);
      const reopened = await opened.reopen();
      assert.deepEqual(await reopened.acceptedVersion(), record);
    });

    it('record moves only forward', async (t) => {
      const { store, root } = await fixture.open(t);
      const epoch = await store.epoch();
      const first = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      const second = await store.commit([{ type: 'put', key: `${root}a`, value: '2' }]);
      const newer = accepted(epoch, second, 'two');

      assert.equal(await store.recordAccepted(newer, content('two').bytes), true);
      assert.equal(await store.recordAccepted(newer, content('two').bytes), false);
      const older = accepted(epoch, first, 'one');
      assert.equal(await store.recordAccepted(older, content('one').bytes), false);
      assert.deepEqual(await store.acceptedVersion(), newer);
    });

    it('other epoch not recorded', async (t) => {
      const { store, root } = await fixture.open(t);
      await store.epoch();
      const version = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);

      const foreign = accepted('not-this-epoch', version, 'one');
      assert.equal(await store.recordAccepted(foreign, content('one').bytes), false);
      assert.equal(await store.acceptedVersion(), undefined);
    });

    it('renewed epoch replaces the record', async (t) => {
      const { store, root } = await fixture.open(t);
      const stale = await store.epoch();
      const first = await store.commit([{ type: 'put', key: `${root}a`, value: '1' }]);
      await store.recordAccepted(accepted(stale, first, 'one'), content('one').bytes);

      const epoch = await store.renewEpoch(stale);
      assert.equal((await store.acceptedVersion())?.epoch, stale);
      const second = await store.commit([{ type: 'put', key: `${root}a`, value: '2' }]);
      // A lower version of the new epoch still replaces the old epoch's record.
      const renewed = accepted(epoch, Math.min(first, second), 'two');
      assert.equal(await store.recordAccepted(renewed, content('two').bytes), true);
      assert.deepEqual(await store.acceptedVersion(), renewed);
    });

    it('concurrent records keep the newest', async (t) => {
      const opened = await fixture.open(t);
      const { store, root } = opened;
      const epoch = await store.epoch();
      const records: AcceptedVersion[] = [];
      for (let index = 0; index < 6; index++) {
        const version = await store.commit([
          { type: 'put', key: `${root}a`, value: String(index) },
        ]);
        records.push(accepted(epoch, version, `content ${index}`));
      }
      // Each etcd writer is another client, as each control plane has its own.
      const writers = records.map(() => (opened.openAnother ? opened.openAnother() : store));
      const others = writers.filter((writer) => writer !== store);
      t.after(() => Promise.all(others.map((writer) => writer.close())));

      const results = await Promise.all(
        records.map((record, index) =>
          writers[index].recordAccepted(record, content(`content ${index}`).bytes),
        ),
      );

      assert.ok(results.some(Boolean));
      assert.deepEqual(await store.acceptedVersion(), records.at(-1));
    });
  });
}

defineAcceptedVersionTests('EtcdStore', () => etcdStoreFixture());
defineAcceptedVersionTests('EmbeddedStore', () => embeddedStoreFixture());

describe('EtcdStore accepted content', () => {
  let etcd: EtcdProcess;
  let admin: Etcd3;
  let store: EtcdStore;
  const root = '/loom/';

  before(async () => {
    etcd = await startEtcd();
    admin = new Etcd3({ hosts: etcd.endpoint });
    store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: root, rangePageSize: 2 });
  });
  after(async () => {
    await store?.close();
    admin?.close();
    await etcd?.stop();
  });

  it('keys read at the accepted revision', async () => {
    const epoch = await store.epoch();
    await store.commit([
      { type: 'put', key: `${root}routes/a`, value: '1' },
      { type: 'put', key: `${root}routes/b`, value: '2' },
      { type: 'put', key: `${root}routes/c`, value: '3' },
    ]);
    const version = await store.commit([{ type: 'delete', key: `${root}routes/b` }]);
    const then = await store.range(root);
    await store.recordAccepted(accepted(epoch, version, 'x'), content('x').bytes);
    await store.commit([{ type: 'put', key: `${root}routes/d`, value: '4' }]);

    const read = await store.readAcceptedContent(root, accepted(epoch, version, 'x'));

    assert.equal(read.kind, 'history');
    assert.equal(read.kind === 'history' && read.range.revision, version);
    assert.deepEqual(read.kind === 'history' && read.range.items, then.items);
  });

  it('range skips record revisions', async () => {
    const epoch = await store.epoch();
    const first = await store.commit([{ type: 'put', key: `${root}routes/e`, value: '5' }]);
    await store.recordAccepted(accepted(epoch, first, 'e'), content('e').bytes);
    const second = await store.commit([{ type: 'put', key: `${root}routes/e`, value: '6' }]);
    await store.recordAccepted(accepted(epoch, second, 'e6'), content('e6').bytes);

    const range = await store.range(root);

    assert.equal(range.revision, second);
    assert.ok(range.items.every((item) => !item.key.includes('__meta')));
    // The record key is not compared, so a commit conditional on that revision succeeds.
    const written = await store.commit([{ type: 'put', key: `${root}routes/e`, value: '7' }], {
      ifRevision: range.revision,
      prefix: root,
    });
    assert.equal(written, second + 2);
  });

  it('range stops at a foreign write', async () => {
    const epoch = await store.epoch();
    const version = await store.commit([{ type: 'put', key: `${root}routes/k`, value: '1' }]);
    const foreign = await admin.put('/elsewhere/key').value('x').exec();
    const foreignRevision = Number(foreign.header.revision);
    await store.recordAccepted(accepted(epoch, version, 'k'), content('k').bytes);

    const range = await store.range(root);

    assert.ok(foreignRevision > version);
    assert.equal(range.revision, foreignRevision);
  });

  it('record keeps conditional commits', async () => {
    const epoch = await store.epoch();
    const read = await store.commit([{ type: 'put', key: `${root}routes/f`, value: '6' }]);
    assert.equal(await store.recordAccepted(accepted(epoch, read, 'f'), content('f').bytes), true);

    const written = await store.commit([{ type: 'put', key: `${root}routes/f`, value: '7' }], {
      ifRevision: read,
      prefix: root,
    });

    assert.ok(written > read + 1);
  });

  it('compacted revision reported', async () => {
    const epoch = await store.epoch();
    const version = await store.commit([{ type: 'put', key: `${root}routes/g`, value: '8' }]);
    const latest = await store.commit([{ type: 'put', key: `${root}routes/g`, value: '9' }]);
    await admin.kv.compact({ revision: latest, physical: true });

    const read = await store.readAcceptedContent(root, accepted(epoch, version, 'g'));

    assert.equal(read.kind, 'compacted');
    const storeRevision = read.kind === 'compacted' ? read.storeRevision : 0;
    assert.ok(storeRevision >= latest, `store revision ${storeRevision} below ${latest}`);
  });

  it('future revision reported missing', async () => {
    const epoch = await store.epoch();
    const { revision } = await store.range(root);

    const read = await store.readAcceptedContent(root, accepted(epoch, revision + 100, 'h'));

    assert.deepEqual(read, { kind: 'missing' });
  });
});

describe('EmbeddedStore accepted content', () => {
  let parent: string;

  before(async () => {
    parent = await mkdtemp(join(tmpdir(), 'loom-accepted-content-'));
  });
  after(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it('content kept across reopen', async () => {
    const dataDir = join(parent, 'kept');
    const store = await EmbeddedStore.open({ dataDir });
    const epoch = await store.epoch();
    const version = await store.commit([{ type: 'put', key: '/loom/routes/a', value: '1' }]);
    const record = accepted(epoch, version, 'routes');
    await store.recordAccepted(record, content('routes').bytes);
    await store.close();

    const reopened = await EmbeddedStore.open({ dataDir });
    try {
      const read = await reopened.readAcceptedContent('/loom/', record);
      assert.equal(read.kind, 'recorded');
      assert.deepEqual(
        read.kind === 'recorded' && Buffer.from(read.bytes),
        Buffer.from(content('routes').bytes),
      );
    } finally {
      await reopened.close();
    }
  });

  it('older version reported missing', async () => {
    const store = await EmbeddedStore.open({ dataDir: join(parent, 'older') });
    try {
      const epoch = await store.epoch();
      const first = await store.commit([{ type: 'put', key: '/loom/routes/a', value: '1' }]);
      const second = await store.commit([{ type: 'put', key: '/loom/routes/a', value: '2' }]);
      await store.recordAccepted(accepted(epoch, first, 'one'), content('one').bytes);
      await store.recordAccepted(accepted(epoch, second, 'two'), content('two').bytes);

      const read = await store.readAcceptedContent('/loom/', accepted(epoch, first, 'one'));

      assert.deepEqual(read, { kind: 'missing' });
    } finally {
      await store.close();
    }
  });

  it('content must match its hash', async () => {
    const store = await EmbeddedStore.open({ dataDir: join(parent, 'mismatch') });
    try {
      const epoch = await store.epoch();
      const version = await store.commit([{ type: 'put', key: '/loom/routes/a', value: '1' }]);

      await assert.rejects(
        store.recordAccepted(accepted(epoch, version, 'one'), content('other').bytes),
        (error) => error instanceof LoomError && error.code === 'LOOM_INVALID_ARGUMENT',
      );
      assert.equal(await store.acceptedVersion(), undefined);
    } finally {
      await store.close();
    }
  });

  it('damaged file skipped on open', async () => {
    const dataDir = join(parent, 'damaged');
    const store = await EmbeddedStore.open({ dataDir });
    const epoch = await store.epoch();
    const version = await store.commit([{ type: 'put', key: '/loom/routes/a', value: '1' }]);
    await store.recordAccepted(accepted(epoch, version, 'one'), content('one').bytes);
    await store.close();
    const file = join(dataDir, 'accepted.json');
    await writeFile(file, (await readFile(file, 'utf8')).replace('"version"', '"versiom"'));

    const { logger, lines } = memoryLogger();
    const reopened = await EmbeddedStore.open({ dataDir, logger });
    try {
      assert.equal(await reopened.acceptedVersion(), undefined);
      const skipped = lines.filter((line) => line.msg === 'accepted snapshot file skipped');
      assert.equal(skipped.length, 1, JSON.stringify(lines));
      assert.equal(skipped[0].level, 40);
      const message = (skipped[0].err as { message: string }).message;
      assert.match(message, /accepted\.json is corrupt: checksum or format mismatch; /);
      assert.match(message, /ignores it and replaces it when it records the next accepted version/);
      assert.doesNotMatch(message, /move .* aside|apply the configuration files again/);
      const later = await reopened.commit([{ type: 'put', key: '/loom/routes/a', value: '2' }]);
      const record = accepted(epoch, later, 'two');
      assert.equal(await reopened.recordAccepted(record, content('two').bytes), true);
      assert.deepEqual(await reopened.acceptedVersion(), record);
    } finally {
      await reopened.close();
    }
  });
});
