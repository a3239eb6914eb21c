import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';

import { LoomError } from '../../common/errors.js';
import {
  EmbeddedStore,
  type EmbeddedStoreOptions,
} from '../../control-plane/store/embedded-store.js';
import { encodeRecord } from '../../control-plane/store/embedded-files.js';
import { memoryLogger, recordWatch } from './watch-recorder.js';

describe('EmbeddedStore', () => {
  let parent: string;
  let next = 0;

  before(async () => {
    parent = await mkdtemp(join(tmpdir(), 'loom-embedded-only-'));
  });
  after(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  function newDataDir(): string {
    return join(parent, `store-${++next}`);
  }

  /** Opens a store that the test closes at its end, unless it was closed before. */
  async function open(t: TestContext, options: EmbeddedStoreOptions): Promise<EmbeddedStore> {
    const store = await EmbeddedStore.open(options);
    t.after(() => store.close());
    return store;
  }

  /** Commits `count` keys to a new store, closes it and damages the log line of revision 2. */
  async function damageSecondLogLine(
    t: TestContext,
    count: number,
  ): Promise<{ dataDir: string; logFile: string; content: string; damaged: string }> {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, count);
    await first.close();
    const logFile = join(dataDir, 'log.jsonl');
    const content = await readFile(logFile, 'utf8');
    const damaged = content.replace('"v1"', '"vX"');
    await writeFile(logFile, damaged);
    return { dataDir, logFile, content, damaged };
  }

  async function writeSome(store: EmbeddedStore, count: number): Promise<number> {
    let revision = 0;
    for (let index = 0; index < count; index++) {
      revision = await store.commit([{ type: 'put', key: `/loom/k${index}`, value: `v${index}` }]);
    }
    return revision;
  }

  it('reopen keeps revisions, keys and epoch', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    const revision = await writeSome(first, 3);
    const epoch = await first.epoch();
    const before = await first.range('/loom/');
    await first.close();

    const second = await open(t, { dataDir });

    assert.equal(revision, 3);
    assert.equal(await second.epoch(), epoch);
    assert.deepEqual(await second.range('/loom/'), before);
    assert.equal(await second.commit([{ type: 'put', key: '/loom/new', value: 'x' }]), 4);
  });

  it('watch after reopen replays the log', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, 3);
    await first.close();
    const second = await open(t, { dataDir });

    const recorder = recordWatch(second, '/loom/', 2);
    t.after(() => recorder.watch.cancel());
    await recorder.waitFor('two batches', () => recorder.batches.length >= 2);

    assert.deepEqual(recorder.batches, [
      { revision: 2, events: [{ type: 'put', key: '/loom/k1', value: 'v1', modRevision: 2 }] },
      { revision: 3, events: [{ type: 'put', key: '/loom/k2', value: 'v2', modRevision: 3 }] },
    ]);
  });

  it('reopen after log compaction', async (t) => {
    const dataDir = newDataDir();
    const { logger, lines } = memoryLogger();
    const first = await open(t, { dataDir, compactAfter: 3, logger });
    await writeSome(first, 7);
    await first.commit([{ type: 'delete', key: '/loom/k0' }]);
    const before = await first.range('/loom/');
    await first.close();

    const logLines = (await readFile(join(dataDir, 'log.jsonl'), 'utf8')).split('\n');
    const second = await open(t, { dataDir, compactAfter: 3 });

    assert.ok(lines.some((line) => line.msg === 'log compacted'));
    assert.ok((await stat(join(dataDir, 'state.json'))).size > 0);
    assert.ok(logLines.length <= 3, `log still has ${logLines.length} lines`);
    assert.deepEqual(await second.range('/loom/'), before);
    assert.equal(before.revision, 8);
  });

  it('log compacts at its byte limit', async (t) => {
    const dataDir = newDataDir();
    const { logger, lines } = memoryLogger();
    const first = await open(t, { dataDir, compactAfterBytes: 20_000, logger });
    const value = 'x'.repeat(5_000);
    for (let index = 0; index < 10; index++) {
      await first.commit([{ type: 'put', key: `/loom/big${index}`, value: `${index}${value}` }]);
    }
    const before = await first.range('/loom/');
    await first.close();

    const compactions = lines.filter((line) => line.msg === 'log compacted');
    assert.equal(compactions.length, 2);
    const logSize = (await stat(join(dataDir, 'log.jsonl'))).size;
    assert.ok(logSize < 20_000, `log has ${logSize} bytes`);
    const second = await open(t, { dataDir });
    assert.deepEqual(await second.range('/loom/'), before);
    assert.equal(before.revision, 10);
    assert.equal(before.items.length, 10);
  });

  it('history drops batches over its byte limit', async (t) => {
    const store = await open(t, { dataDir: newDataDir(), historyBytes: 12_000 });
    const value = 'x'.repeat(5_000);
    for (let index = 0; index < 5; index++) {
      await store.commit([{ type: 'put', key: `/loom/big${index}`, value }]);
    }

    const old = recordWatch(store, '/loom/', 3);
    await old.waitFor('the error of a watch from revision 3', () => old.errors.length > 0);
    const error = old.errors[0];
    assert.ok(error instanceof LoomError);
    assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
    assert.match(error.message, /watch history, which starts at 4/);

    const recent = recordWatch(store, '/loom/', 4);
    await recent.waitFor('revisions 4 and 5', () => recent.batches.length === 2);
    assert.deepEqual(
      recent.batches.map((batch) => batch.revision),
      [4, 5],
    );
    assert.deepEqual(recent.errors, []);
    await recent.watch.cancel();
  });

  it('history keeps newest batch over limit', async (t) => {
    const store = await open(t, { dataDir: newDataDir(), historyBytes: 1_000 });
    await store.commit([{ type: 'put', key: '/loom/big', value: 'x'.repeat(5_000) }]);

    const watch = recordWatch(store, '/loom/', 1);
    await watch.waitFor('revision 1', () => watch.batches.length === 1);
    assert.equal(watch.batches[0].revision, 1);
    assert.deepEqual(watch.errors, []);
    await watch.watch.cancel();
  });

  it('watch from before the state file fails', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir, compactAfter: 2 });
    await writeSome(first, 4);
    await first.close();
    const second = await open(t, { dataDir });

    const error = await new Promise<Error>((resolve) => {
      second.watch('/loom/', 1, { onBatch: () => undefined, onError: resolve });
    });

    assert.ok(error instanceof LoomError);
    assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
    assert.equal(error.retryable, true);
  });

  it('torn last log line is dropped', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, 2);
    await first.close();
    const logFile = join(dataDir, 'log.jsonl');
    await appendFile(logFile, '3f2a {"revision":3,"operations":[{"type":"pu');

    const { logger, lines } = memoryLogger();
    const second = await open(t, { dataDir, logger });
    const revision = await second.commit([{ type: 'put', key: '/loom/after', value: 'x' }]);
    await second.close();
    const third = await open(t, { dataDir });

    const warning = lines.find((line) => line.msg === 'torn log line dropped');
    assert.ok(warning, 'expected a warning');
    assert.equal(warning.line, 3);
    assert.equal(warning.file, logFile);
    assert.equal(revision, 3);
    assert.equal((await third.range('/loom/')).revision, 3);
    assert.deepEqual(
      (await third.range('/loom/')).items.map((item) => item.key),
      ['/loom/after', '/loom/k0', '/loom/k1'],
    );
  });

  it('last log line with NUL bytes is dropped', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, 2);
    await first.close();
    const logFile = join(dataDir, 'log.jsonl');
    // A crash can leave the blocks of an unsynced append unwritten, which read back as zeros.
    await appendFile(logFile, `3f2a {"revision":3,${'\0'.repeat(40)}}\n`);

    const { logger, lines } = memoryLogger();
    const second = await open(t, { dataDir, logger });

    assert.ok(lines.some((line) => line.msg === 'torn log line dropped'));
    assert.equal((await second.range('/loom/')).revision, 2);
  });

  it('damaged complete last log line fails open', async (t) => {
    const { dataDir, logFile, damaged } = await damageSecondLogLine(t, 2);

    await assert.rejects(EmbeddedStore.open({ dataDir }), (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_STORE_CORRUPT');
      assert.match(error.message, new RegExp(`${logFile} line 2 is corrupt`));
      return true;
    });
    assert.equal(await readFile(logFile, 'utf8'), damaged);
  });

  it('corrupt middle log line fails open', async (t) => {
    const { dataDir, logFile, content } = await damageSecondLogLine(t, 3);

    await assert.rejects(EmbeddedStore.open({ dataDir }), (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_STORE_CORRUPT');
      assert.match(error.message, new RegExp(`${logFile} line 2 `));
      assert.ok(
        error.message.endsWith(
          `; move ${dataDir} aside, start the control plane again and apply the configuration ` +
            'files again with "loomctl apply --prune -f FILE..."; proxies keep serving their ' +
            'tables meanwhile',
        ),
        error.message,
      );
      return true;
    });
    // The failed open released the lock, so a repaired directory opens.
    await writeFile(logFile, content);
    await open(t, { dataDir });
  });

  it('corrupt state file fails open', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir, compactAfter: 1 });
    await writeSome(first, 2);
    await first.close();
    const stateFile = join(dataDir, 'state.json');
    await writeFile(stateFile, (await readFile(stateFile, 'utf8')).replace('/loom/', '/lomo/'));

    await assert.rejects(
      EmbeddedStore.open({ dataDir }),
      (error) =>
        error instanceof LoomError &&
        error.code === 'LOOM_STORE_CORRUPT' &&
        error.message.includes(stateFile),
    );
  });

  it('missing identity file with data fails open', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, 1);
    await first.close();
    await rm(join(dataDir, 'identity.json'));

    await assert.rejects(
      EmbeddedStore.open({ dataDir }),
      (error) => error instanceof LoomError && error.code === 'LOOM_STORE_CORRUPT',
    );
  });

  it('missing log file with identity fails open', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, 2);
    await first.close();
    const logFile = join(dataDir, 'log.jsonl');
    await rm(logFile);

    await assert.rejects(EmbeddedStore.open({ dataDir }), (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_STORE_CORRUPT');
      assert.ok(
        error.message.startsWith(
          `${logFile} is missing but ${join(dataDir, 'identity.json')} exists, so the commits ` +
            `in the log are lost; restore the file, or move ${dataDir} aside`,
        ),
        error.message,
      );
      return true;
    });
  });

  it('blank epoch in identity file fails open', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });
    await writeSome(first, 1);
    await first.close();
    const identity = join(dataDir, 'identity.json');
    await writeFile(identity, encodeRecord({ format: 1, epoch: '  ' }));

    await assert.rejects(
      EmbeddedStore.open({ dataDir }),
      (error) =>
        error instanceof LoomError &&
        error.code === 'LOOM_STORE_CORRUPT' &&
        error.message.includes(identity),
    );
  });

  it('lock prevents a second open', async (t) => {
    const dataDir = newDataDir();
    const first = await open(t, { dataDir });

    await assert.rejects(EmbeddedStore.open({ dataDir }), (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
      assert.ok(error.message.includes(dataDir), error.message);
      assert.ok(error.message.includes(`process ${process.pid}`), error.message);
      assert.match(error.message, /choose another directory with --data-dir\. If that process/);
      assert.ok(error.message.endsWith(`kept its lock file: remove ${join(dataDir, 'LOCK')}`));
      return true;
    });
    await first.close();
    await open(t, { dataDir });
  });

  it('stale lock is taken over', async (t) => {
    const dataDir = newDataDir();
    await open(t, { dataDir }).then((store) => store.close());
    const deadPid = await pidOfExitedProcess();
    await writeFile(join(dataDir, 'LOCK'), `${deadPid}\n`);

    const { logger, lines } = memoryLogger();
    const store = await open(t, { dataDir, logger });

    assert.match(
      await readFile(join(dataDir, 'LOCK'), 'utf8'),
      new RegExp(`^${process.pid}( \\d+)?\n$`),
    );
    assert.ok(lines.some((line) => line.msg === 'stale data directory lock taken over'));
    await store.close();
    await assert.rejects(stat(join(dataDir, 'LOCK')), { code: 'ENOENT' });
  });

  it('lock with own pid from an earlier process is taken over', async (t) => {
    const dataDir = newDataDir();
    await open(t, { dataDir }).then((store) => store.close());
    // A process restarted in a container gets the pid of the one that was killed.
    await writeFile(join(dataDir, 'LOCK'), `${process.pid} 1\n`);

    const { logger, lines } = memoryLogger();
    const store = await open(t, { dataDir, logger });

    assert.ok(lines.some((line) => line.msg === 'stale data directory lock taken over'));
    await assert.rejects(EmbeddedStore.open({ dataDir }), { code: 'LOOM_STORE_UNAVAILABLE' });
    await store.close();
  });

  it('lock of a reused pid is taken over', async (t) => {
    const startTime = processStartTime(process.pid);
    if (startTime === undefined) {
      t.skip('no /proc/PID/stat to read start times from');
      return;
    }
    const dataDir = newDataDir();
    await open(t, { dataDir }).then((store) => store.close());
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], {
      stdio: 'ignore',
    });
    t.after(() => other.kill('SIGKILL'));
    assert.ok(other.pid !== undefined);
    const otherStart = processStartTime(other.pid);
    assert.ok(otherStart !== undefined);

    // The lock names the running process with its own start time: it holds the directory.
    await writeFile(join(dataDir, 'LOCK'), `${other.pid} ${otherStart}\n`);
    await assert.rejects(EmbeddedStore.open({ dataDir }), (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
      assert.ok(error.message.includes(`in use by process ${other.pid} `), error.message);
      return true;
    });

    // The same pid with another start time was a process that ended before this one started.
    await writeFile(join(dataDir, 'LOCK'), `${other.pid} ${Number(otherStart) + 1}\n`);
    const { logger, lines } = memoryLogger();
    await open(t, { dataDir, logger });
    const warning = lines.find((line) => line.msg === 'stale data directory lock taken over');
    assert.ok(warning, 'expected a warning');
    assert.equal(warning.pid, other.pid);
  });

  it('commits run one at a time in call order', async (t) => {
    const store = await open(t, { dataDir: newDataDir() });

    const revisions = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        store.commit([{ type: 'put', key: '/loom/counter', value: String(index) }]),
      ),
    );

    assert.deepEqual(
      revisions,
      Array.from({ length: 20 }, (_, index) => index + 1),
    );
    assert.equal((await store.range('/loom/')).items[0].value, '19');
  });

  it('closed store rejects calls', async (t) => {
    const store = await open(t, { dataDir: newDataDir() });
    await store.close();

    await assert.rejects(
      store.commit([{ type: 'put', key: '/loom/a', value: '1' }]),
      (error) => error instanceof LoomError && error.code === 'LOOM_STORE_UNAVAILABLE',
    );
  });
});

/** Returns the pid of a child process that has already exited. */
/** Returns field 22 of `/proc/PID/stat`, the start time of the process, or undefined. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

async function pidOfExitedProcess(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  assert.ok(child.pid !== undefined);
  return child.pid;
}
