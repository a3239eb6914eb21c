import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

const ACQUIRE_ATTEMPTS = 3;

/**
 * Exclusive use of a data directory by one process, through a `LOCK` file that
 * contains the owner's pid. A lock whose pid no longer runs is stale and is
 * taken over.
 *
 * NOTE: the pid check only works on one host, and the takeover of a stale
 * lock is not atomic: two processes that take over the same stale lock at the
 * same moment can both succeed.
 */
export class DataDirLock {
  readonly path: string;

  private constructor(path: string) {
    this.path = path;
  }

  /**
   * Takes the lock of `dataDir`.
   *
   * @throws LoomError `LOOM_STORE_UNAVAILABLE` naming the directory and the pid
   *   when a running process holds the lock, this one included.
   */
  static async acquire(dataDir: string, logger: Logger): Promise<DataDirLock> {
    const path = join(dataDir, 'LOCK');
    for (let attempt = 1; attempt <= ACQUIRE_ATTEMPTS; attempt++) {
      if (await tryCreate(path)) {
        return new DataDirLock(path);
      }

      const owner = await readOwner(path);
      if (owner === null) {
        continue;
      }
      if (owner !== undefined && isRunning(owner)) {
        throw new LoomError(
          'LOOM_STORE_UNAVAILABLE',
          `data directory ${dataDir} is in use by process ${owner} (lock file ${path}); ` +
            'stop that process or choose another directory with --data-dir. If that process ' +
            `uses another directory, this one is a copy that kept its lock file: remove ${path}`,
        );
      }
      logger.warn({ file: path, pid: owner ?? null }, 'stale data directory lock taken over');
      await unlink(path).catch(ignoreMissing);
    }
    throw new LoomError(
      'LOOM_STORE_UNAVAILABLE',
      `could not take the lock file ${path} after ${ACQUIRE_ATTEMPTS} attempts ` +
        'because another process is taking it too; try again',
    );
  }

  /** Removes the lock file if this process still owns it. */
  async release(): Promise<void> {
    if ((await readOwner(this.path)) === process.pid) {
      await unlink(this.path).catch(ignoreMissing);
    }
  }
}

/**
 * Returns the pid of the running process that holds the lock of `dataDir`, or undefined when
 * no lock file exists or its process has ended. A launcher such as the local fleet script
 * calls it before it starts a control plane, to explain a busy directory in its own terms.
 */
export async function runningLockOwner(dataDir: string): Promise<number | undefined> {
  const owner = await readOwner(join(dataDir, 'LOCK'));
  return typeof owner === 'number' && isRunning(owner) ? owner : undefined;
}

/**
 * Creates the lock file with this process's pid. A hard link of a complete
 * temporary file appears atomically, so no reader sees an empty lock file.
 */
async function tryCreate(path: string): Promise<boolean> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, `${process.pid}\n`);
  try {
    await link(temporary, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      return false;
    }
    throw error;
  } finally {
    await unlink(temporary).catch(ignoreMissing);
  }
}

/**
 * Returns the pid in the lock file, undefined when the file contains no pid,
 * and null when the file is gone.
 */
async function readOwner(path: string): Promise<number | undefined | null> {
  let content: string;
  try {
    content = await readFile(path, 'utf8');
  } catch (error) {
    ignoreMissing(error);
    return null;
  }
  const pid = Number.parseInt(content, 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ignoreMissing(error: unknown): void {
  if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
    throw error;
  }
}
