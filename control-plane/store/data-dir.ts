import { mkdir } from 'node:fs/promises';

import { LoomError } from '../../common/errors.js';

/** Reasons for a failed `mkdir` by errno code, each with what the operator can do. */
const REASONS: Record<string, string> = {
  EEXIST: 'a file that is not a directory exists at that path; move the file away',
  ENOTDIR: 'a parent of that path is a file, not a directory; move the file away',
  EACCES: 'permission denied; give this user write access to the parent directory',
  EPERM: 'permission denied; give this user write access to the parent directory',
  EROFS: 'the file system is read-only',
};

/**
 * Creates the data directory of the embedded store, with its parents, unless
 * it exists.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the path, the reason and the
 *   fix when the directory cannot be created, such as when a file exists there.
 */
export async function createDataDir(dataDir: string): Promise<void> {
  try {
    await mkdir(dataDir, { recursive: true });
  } catch (error) {
    const reason = REASONS[(error as NodeJS.ErrnoException).code ?? ''];
    if (reason === undefined) throw error;

    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `cannot create data directory ${dataDir}: ${reason}, or choose another directory with --data-dir`,
      { cause: error },
    );
  }
}

/** Causes and fixes of failed reads and writes of store files, by errno code. */
const FILE_REASONS: Record<string, string> = {
  EACCES:
    'permission denied; give the user that runs the control plane read and write access to ' +
    'the data directory and its files',
  EPERM:
    'operation not permitted; give the user that runs the control plane write access to the ' +
    'data directory, and remove an immutable attribute if one is set (chattr -i)',
  EROFS: 'the file system is read-only; remount it read-write',
  EISDIR: 'a directory is at the path of a store file; move it away',
  ENOTDIR: 'a file is at the path of a directory; move it away',
  ENOSPC: 'no space is left on the device; free space on it',
  EDQUOT: 'the disk quota of the user is used up; free space or raise the quota',
  EFBIG: 'the file size limit of the process (ulimit -f) was reached; raise or remove it',
  EIO: 'the device reported an input/output error; check the disk',
  EMFILE: 'the process has too many open files; raise its limit (ulimit -n)',
  ENFILE: 'the system has too many open files; close some',
};

/**
 * Returns the message of a file system error of the embedded store: the operation, the path
 * and, for known errno codes, the cause and the fix. `path` is named when the error carries no
 * path.
 */
export function describeFileError(error: unknown, path: string): string {
  const errno = error as NodeJS.ErrnoException;
  const operation = `${errno.syscall ?? 'access'} ${errno.path ?? path}`;
  const reason = FILE_REASONS[errno.code ?? ''];
  return reason === undefined
    ? `${operation} failed: ${errno.message}`
    : `${operation} failed with ${errno.code}: ${reason}`;
}

/** Returns whether `error` is an error of a file system call, which carries an errno code. */
export function isFileError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).errno === 'number';
}
