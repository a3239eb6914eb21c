import { execFile } from 'node:child_process';
import { join } from 'node:path';

import { ROOT } from '../../scripts/processes.js';

/** Exit code and output of one loomctl run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `loomctl` as a user would, against the control plane at `controlPlane`. `stdin` is
 * written to its standard input, which is otherwise closed empty.
 */
export function loomctl(controlPlane: string, args: string[], stdin?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [join(ROOT, 'bin', 'loomctl.js'), '--control-plane', controlPlane, ...args],
      { cwd: ROOT, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(stdin ?? '');
  });
}
