import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

const ACQUIRE_ATTEMPTS = 3;

/** Lock files of this process. A lock file with this process's pid that is not here is stale. */
const heldLocks = new Set<string>();

/** The content of a lock file: the owner's pid and, on Linux, its start time. */
interface LockOwner {
  pid: number;
  /** Field 22 of `/proc/PID/stat`: clock ticks from boot to the start of the process. */
  startTime?: string;
}

/**
 * Exclusive use of a data directory by one process, through a `LOCK` file that
 * contains the owner's pid and, on Linux, its start time. A lock is stale, and
 * is taken over, in three cases. Its pid no longer runs. Its pid now belongs
 * to a process that started at another time. Or its pid is this process's own,
 * but this process did not take it. The last two follow a killed owner whose
 * pid was reused, as when a control plane that runs as pid 1 in a container is
 * restarted.
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
        heldLocks.add(path);
        return new DataDirLock(path);
      }

      const owner = await readOwner(path);
      if (owner === null) {
        continue;
      }
      if (owner !== undefined && holdsLock(owner, path)) {
        throw new LoomError(
          'LOOM_STORE_UNAVAILABLE',
          `data directory ${dataDir} is in use by process ${owner.pid} (lock file ${path}); ` +
            'stop that process or choose another directory with --data-dir. If that process ' +
            `uses another directory, this one is a copy that kept its lock file: remove ${path}`,
        );
      }
      logger.warn(
        { file: path, pid: owner?.pid ?? null, startTime: owner?.startTime ?? null },
        'stale data directory lock taken over',
      );
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
    heldLocks.delete(this.path);
    if ((await readOwner(this.path))?.pid === process.pid) {
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
  const path = join(dataDir, 'LOCK');
  const owner = await readOwner(path);
  return owner && holdsLock(owner, path) ? owner.pid : undefined;
}

/**
 * Creates the lock file with this process's pid and start time. A hard link of a complete
 * temporary file appears atomically, so no reader sees an empty lock file.
 */
async function tryCreate(path: string): Promise<boolean> {
  const temporary = `${path}.${process.pid}.tmp`;
  const startTime = processStartTime(process.pid);
  await writeFile(temporary, `${process.pid}${startTime === undefined ? '' : ` ${startTime}`}\n`);
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
 * Returns the owner in the lock file, undefined when the file contains no pid,
 * and null when the file is gone. A lock file written before start times were
 * recorded contains the pid alone.
 */
async function readOwner(path: string): Promise<LockOwner | undefined | null> {
  let content: string;
  try {
    content = await readFile(path, 'utf8');
  } catch (error) {
    ignoreMissing(error);
    return null;
  }
  const [pidText = '', startTime] = content.trim().split(/\s+/);
  const pid = Number(pidText);
  if (!/^\d+$/.test(pidText) || !Number.isSafeInteger(pid) || pid < 1) return undefined;
  return /^\d+$/.test(startTime ?? '') ? { pid, startTime } : { pid };
}

/** Returns whether the process named in the lock file at `path` still runs and holds it. */
function holdsLock(owner: LockOwner, path: string): boolean {
  if (owner.pid === process.pid) return heldLocks.has(path);
  if (!isRunning(owner.pid)) return false;
  if (owner.startTime === undefined) return true;

  const startTime = processStartTime(owner.pid);
  return startTime === undefined || startTime === owner.startTime;
}

/**
 * Returns the start time of process `pid` from `/proc/PID/stat`, or undefined where there is no
 * such file (outside Linux, or a process of another pid namespace).
 */
function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name in brackets may contain spaces; the fields after it start at field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTime = fields[22 - 3];
  return startTime !== undefined && /^\d+$/.test(startTime) ? startTime : undefined;
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
