import { execFile } from 'node:child_process';
import { join } from 'node:path';

import { ROOT } from '../../scripts/processes.js';

/** Exit code and output of one loom or loomctl run. */
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

/**
 * Runs `loom ARGS` to its exit. A server that keeps running past `timeoutMs` is killed and
 * reported as code -1.
 */
export function loom(args: string[], timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'bin', 'loom.js'), ...args],
      { cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        let code = 0;
        if (error) code = typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
