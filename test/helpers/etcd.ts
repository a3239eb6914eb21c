import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { access, constants, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { findFreePort } from './ports.js';

/** A single-member etcd started for a test, listening on 127.0.0.1 only. */
export interface EtcdProcess {
  /** Client URL, such as `http://127.0.0.1:40123`. */
  endpoint: string;
  clientPort: number;
  /** etcd's `--data-dir`. Deleting it while etcd is stopped wipes the cluster. */
  dataDir: string;
  /** File that receives etcd's stdout and stderr. */
  logFile: string;
  /** Stops etcd (SIGTERM, then SIGKILL after a timeout) and removes its temporary directory. */
  stop(): Promise<void>;
  /** Kills etcd with SIGKILL and keeps its data, as a crash would. */
  kill(): Promise<void>;
  /** Stops etcd if it runs, then starts it again on the same ports and data directory. */
  restart(): Promise<void>;
}

/** Options of {@link startEtcd}. */
export interface StartEtcdOptions {
  /** Time to wait for etcd to report healthy, in milliseconds. Defaults to 5000. */
  startTimeoutMs?: number;
}

const STOP_TIMEOUT_MS = 3000;
const HEALTH_POLL_MS = 25;
const START_ATTEMPTS = 3;

/**
 * Children still running and their temporary directories. The process exit
 * hook removes them, so that a test that fails before `stop()` leaves none behind.
 */
const runningChildren = new Set<ChildProcess>();
const liveDirectories = new Set<string>();
let exitHookInstalled = false;

/**
 * Starts etcd in a new temporary directory on free ports of 127.0.0.1 and
 * resolves once `/health` reports healthy. The caller must call `stop()`, for
 * example in the test's `after` hook. A process exit hook kills any etcd that
 * is still running as a last resort.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdProcess> {
  const binary = await findEtcdBinary();
  const rootDir = await mkdtemp(join(tmpdir(), 'loom-etcd-'));
  liveDirectories.add(rootDir);
  installExitHook();

  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const ports = { client: await findFreePort(), peer: await findFreePort() };
    const etcd = new EtcdHarness(binary, rootDir, ports, options.startTimeoutMs ?? 5000);
    try {
      await etcd.start();
      return etcd;
    } catch (error) {
      // Another process may have taken a port between the probe and etcd's bind.
      lastError = error;
      await etcd.kill();
      await rm(etcd.dataDir, { recursive: true, force: true });
    }
  }

  await rm(rootDir, { recursive: true, force: true });
  liveDirectories.delete(rootDir);
  throw lastError;
}

class EtcdHarness implements EtcdProcess {
  readonly endpoint: string;
  readonly clientPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  readonly #binary: string;
  readonly #rootDir: string;
  readonly #peerPort: number;
  readonly #startTimeoutMs: number;
  #child: ChildProcess | undefined;

  constructor(
    binary: string,
    rootDir: string,
    ports: { client: number; peer: number },
    startTimeoutMs: number,
  ) {
    this.#binary = binary;
    this.#rootDir = rootDir;
    this.#peerPort = ports.peer;
    this.#startTimeoutMs = startTimeoutMs;
    this.clientPort = ports.client;
    this.endpoint = `http://127.0.0.1:${ports.client}`;
    this.dataDir = join(rootDir, 'data');
    this.logFile = join(rootDir, 'etcd.log');
  }

  async start(): Promise<void> {
    const peerUrl = `http://127.0.0.1:${this.#peerPort}`;
    const args = [
      '--name=loom-test',
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=loom-test=${peerUrl}`,
      '--initial-cluster-state=new',
      // A single member with short timeouts elects itself in well under a second.
      '--heartbeat-interval=10',
      '--election-timeout=100',
      '--logger=zap',
      '--log-outputs=stderr',
    ];
    const logFd = openSync(this.logFile, 'a');
    try {
      // ETCD_* variables would override the flags above.
      const env = Object.fromEntries(
        Object.entries(process.env).filter(([name]) => !name.startsWith('ETCD_')),
      );
      this.#child = spawn(this.#binary, args, { stdio: ['ignore', logFd, logFd], env });
    } finally {
      closeSync(logFd);
    }
    const child = this.#child;
    runningChildren.add(child);
    child.once('exit', () => runningChildren.delete(child));

    await this.#waitUntilHealthy(child);
  }

  async stop(): Promise<void> {
    await this.#terminate('SIGTERM');
    await rm(this.#rootDir, { recursive: true, force: true });
    liveDirectories.delete(this.#rootDir);
  }

  async kill(): Promise<void> {
    await this.#terminate('SIGKILL');
  }

  async restart(): Promise<void> {
    await this.#terminate('SIGTERM');
    await this.start();
  }

  async #waitUntilHealthy(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + this.#startTimeoutMs;
    while (Date.now() < deadline) {
      if (hasExited(child)) {
        throw new Error(
          `etcd exited during start (code ${child.exitCode}, signal ${child.signalCode}); ` +
            `log ${this.logFile}:\n${readLogTail(this.logFile)}`,
        );
      }
      if (await isHealthy(this.endpoint)) {
        return;
      }
      await sleep(HEALTH_POLL_MS);
    }
    throw new Error(
      `etcd at ${this.endpoint} was not healthy after ${this.#startTimeoutMs} ms; ` +
        `log ${this.logFile}:\n${readLogTail(this.logFile)}`,
    );
  }

  /** Sends `signal` to etcd and waits for it to exit, escalating to SIGKILL after a timeout. */
  async #terminate(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    if (child === undefined || hasExited(child)) {
      return;
    }

    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const timeout = new AbortController();
    const timer = sleep(STOP_TIMEOUT_MS, 'timeout' as const, { signal: timeout.signal });
    child.kill(signal);
    const winner = await Promise.race([exited, timer.catch(() => undefined)]);
    timeout.abort();
    if (winner === 'timeout') {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function isHealthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(500) });
    const body = (await response.json()) as { health?: string };
    return response.ok && body.health === 'true';
  } catch {
    return false;
  }
}

function readLogTail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

async function findEtcdBinary(): Promise<string> {
  const directories = ['/usr/bin', ...(process.env.PATH ?? '').split(delimiter)];
  for (const directory of directories.filter((entry) => entry !== '')) {
    const candidate = join(directory, 'etcd');
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  throw new Error('etcd is not installed: run `apt-get install -y etcd-server` to run these tests');
}

function installExitHook(): void {
  if (exitHookInstalled) {
    return;
  }
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of runningChildren) {
      child.kill('SIGKILL');
    }
    for (const directory of liveDirectories) {
      rmSync(directory, { recursive: true, force: true });
    }
  });
}
