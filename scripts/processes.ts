// Starts Loom servers as child processes, the way an operator runs them, for
// the local fleet and the integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Environment variable naming a folder with prebuilt `loom.mjs` and `loomctl.mjs`, each
 * `bin/<program>.js` bundled with its sources. `test/run.ts` sets it, because a bundle starts
 * without compiling TypeScript and so takes less CPU time per process than `bin/<program>.js`.
 */
export const PREBUILT_BIN_ENV = 'LOOM_PREBUILT_BIN';

/**
 * Returns the script that starts `program`: the prebuilt bundle when {@link PREBUILT_BIN_ENV}
 * is set, otherwise `bin/<program>.js`.
 */
export function programEntry(program: 'loom' | 'loomctl'): string {
  const prebuilt = process.env[PREBUILT_BIN_ENV];
  if (prebuilt !== undefined && prebuilt !== '') return join(prebuilt, `${program}.mjs`);
  return join(ROOT, 'bin', `${program}.js`);
}

/** A Loom server process started by `startLoom`. */
export interface LoomProcess {
  name: string;
  child: ChildProcess;
  /** Sends SIGTERM and waits for the exit; SIGKILL after `timeoutMs`. Returns the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  /** Sends SIGKILL and waits for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts `node bin/loom.js ...args`, or its bundle (see `programEntry`).
 * Output goes to `logFile` when given, otherwise it is inherited. The child
 * writes to the file itself, so a line is in the file as soon as the child has
 * logged it. `env` adds variables to this process's environment.
 */
export function startLoom(
  name: string,
  args: string[],
  logFile?: string,
  env?: Record<string, string>,
): LoomProcess {
  const logFd = logFile === undefined ? undefined : openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [programEntry('loom'), ...args], {
      cwd: ROOT,
      env: env === undefined ? process.env : { ...process.env, ...env },
      stdio: ['ignore', logFd ?? 'inherit', logFd ?? 'inherit'],
    });
  } finally {
    if (logFd !== undefined) closeSync(logFd);
  }
  const exited = new Promise<number | null>((resolveExit) => {
    child.once('exit', (code, signal) => resolveExit(signal ? null : code));
  });
  return {
    name,
    child,
    async stop(timeoutMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Resolves once a TCP connection to host:port succeeds; rejects after `timeoutMs`. */
export async function waitForPort(host: string, port: number, timeoutMs = 15_000): Promise<void> {
  await waitFor(`${host}:${port} to accept connections`, timeoutMs, () => canConnect(host, port));
}

/** Polls `check` every 50 ms until it returns true; rejects naming `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean> | boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (
      await Promise.resolve()
        .then(check)
        .catch(() => false)
    )
      return;
    await new Promise((resolveDelay) => setTimeout(resolveDelay, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolveConnect) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolveConnect(true);
    });
    socket.once('error', () => resolveConnect(false));
  });
}
