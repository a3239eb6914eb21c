import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { programEntry, ROOT } from '../../scripts/processes.js';

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
      [programEntry('loomctl'), '--control-plane', controlPlane, ...args],
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
 * Writes `text` to `DIR/NAME`, applies it with `loomctl apply -f` and asserts that the apply
 * succeeds. Returns the file's path.
 */
export async function applyConfigText(
  controlPlane: string,
  dir: string,
  name: string,
  text: string,
): Promise<string> {
  const file = join(dir, name);
  writeFileSync(file, text);
  const applied = await loomctl(controlPlane, ['apply', '-f', file]);
  assert.equal(applied.code, 0, applied.stderr);
  return file;
}

/** A {@link CliResult} with the number of bytes written to standard input. */
export interface FedCliResult extends CliResult {
  written: number;
}

/**
 * Runs `loomctl` with `chunk` written to its standard input over and over, as from a stream that
 * never ends. Writing stops when loomctl closes the pipe or exits, or after `maxBytes`. A
 * loomctl still running after 60 s is killed and reported as code -1. `written` counts the
 * bytes handed to the pipe, which is at most one chunk more than the pipe accepted.
 */
export function loomctlFedEndlessly(
  controlPlane: string,
  args: string[],
  chunk: Buffer,
  maxBytes: number,
): Promise<FedCliResult> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [programEntry('loomctl'), '--control-plane', controlPlane, ...args],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    let written = 0;
    let stopped = false;
    child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    // EPIPE once loomctl has closed standard input.
    child.stdin.on('error', () => (stopped = true));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);

    const write = () => {
      while (!stopped && written < maxBytes) {
        written += chunk.length;
        if (!child.stdin.write(chunk)) {
          child.stdin.once('drain', write);
          return;
        }
      }
      if (!stopped) child.stdin.end();
    };
    child.once('close', (code) => {
      stopped = true;
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, written });
    });
    write();
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
      [programEntry('loom'), ...args],
      { cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        let code = 0;
        if (error) code = typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A `loom` process whose stdout and stderr are pipes that the caller reads. */
export interface PipedLoom {
  child: ChildProcess;
  /** Resolves with the exit code, or null when a signal ended the process. */
  exited: Promise<number | null>;
  /** Returns stdout and stderr so far, interleaved as they arrived. */
  output(): string;
}

/** Starts `loom ARGS` with its stdout and stderr piped to this process. */
export function startPipedLoom(args: string[]): PipedLoom {
  const child = spawn(process.execPath, [programEntry('loom'), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal === null ? code : null));
  });
  return { child, exited, output: () => output };
}

/**
 * Waits up to `timeoutMs` for the exit and returns its code. A process still running then is
 * killed, and the result is 'running'.
 */
export async function exitWithin(
  loom: PipedLoom,
  timeoutMs: number,
): Promise<number | null | 'running'> {
  let timer: NodeJS.Timeout | undefined;
  const running = new Promise<'running'>((resolve) => {
    timer = setTimeout(() => resolve('running'), timeoutMs);
  });
  const result = await Promise.race([loom.exited, running]);
  clearTimeout(timer);
  if (result === 'running') {
    loom.child.kill('SIGKILL');
    await loom.exited;
  }
  return result;
}
