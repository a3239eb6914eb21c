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
