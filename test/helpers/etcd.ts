import { execFile, spawn, type ChildProcess } from 'node:child_process';
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
  /** Pauses etcd with SIGSTOP: its connections stay open and it replies to nothing until `thaw`. */
  freeze(): void;
  /** Resumes etcd after `freeze` with SIGCONT. */
  thaw(): void;
  /** Stops etcd if it runs, then starts it again on the same ports and data directory. */
  restart(): Promise<void>;
  /** Writes a backup of the running etcd to `file` with `etcdctl snapshot save`. */
  saveSnapshot(file: string): Promise<void>;
  /**
   * Stops etcd, restores `file` with `etcdctl snapshot restore` into a new data
   * directory and starts etcd on the same ports from it. `clusterToken` is the
   * restore's `--initial-cluster-token`; etcd's default keeps the cluster id.
   */
  restoreSnapshot(file: string, options?: { clusterToken?: string }): Promise<void>;
}

/** Options of {@link startEtcd}. */
export interface StartEtcdOptions {
  /** Time to wait for etcd to report healthy, in milliseconds. Defaults to 5000. */
  startTimeoutMs?: number;
  /** Extra etcd flags, such as `--max-txn-ops=200000`; appended after the harness's own. */
  extraArgs?: string[];
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
    const etcd = new EtcdHarness(binary, rootDir, ports, options);
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
  dataDir: string;
  readonly logFile: string;
  readonly #binary: string;
  readonly #rootDir: string;
  readonly #peerPort: number;
  readonly #startTimeoutMs: number;
  readonly #extraArgs: string[];
  #child: ChildProcess | undefined;

  constructor(
    binary: string,
    rootDir: string,
    ports: { client: number; peer: number },
    options: StartEtcdOptions,
  ) {
    this.#binary = binary;
    this.#rootDir = rootDir;
    this.#peerPort = ports.peer;
    this.#startTimeoutMs = options.startTimeoutMs ?? 5000;
    this.#extraArgs = options.extraArgs ?? [];
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
      ...this.#extraArgs,
    ];
    const child = spawnEtcd(this.#binary, args, this.logFile);
    this.#child = child;

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

  freeze(): void {
    if (this.#child !== undefined && !hasExited(this.#child)) this.#child.kill('SIGSTOP');
  }

  thaw(): void {
    if (this.#child !== undefined && !hasExited(this.#child)) this.#child.kill('SIGCONT');
  }

  async restart(): Promise<void> {
    await this.#terminate('SIGTERM');
    await this.start();
  }

  async saveSnapshot(file: string): Promise<void> {
    await runEtcdctl([`--endpoints=${this.endpoint}`, 'snapshot', 'save', file]);
  }

  async restoreSnapshot(file: string, options: { clusterToken?: string } = {}): Promise<void> {
    await this.#terminate('SIGTERM');
    const peerUrl = `http://127.0.0.1:${this.#peerPort}`;
    const dataDir = join(this.#rootDir, `restored-${Date.now()}`);
    await runEtcdctl([
      'snapshot',
      'restore',
      file,
      '--name=loom-test',
      `--data-dir=${dataDir}`,
      `--initial-cluster=loom-test=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      ...(options.clusterToken ? [`--initial-cluster-token=${options.clusterToken}`] : []),
    ]);
    this.dataDir = dataDir;
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

/**
 * Starts etcd with `args`, its output appended to `logFile`, and registers it for the exit hook
 * that kills etcd processes left running.
 */
function spawnEtcd(binary: string, args: string[], logFile: string): ChildProcess {
  const logFd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    // ETCD_* variables would override the flags.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => !name.startsWith('ETCD_')),
    );
    child = spawn(binary, args, { stdio: ['ignore', logFd, logFd], env });
  } finally {
    closeSync(logFd);
  }
  runningChildren.add(child);
  child.once('exit', () => runningChildren.delete(child));
  return child;
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

/** Runs etcdctl (API v3) and rejects with its output when it fails. */
export async function runEtcdctl(args: string[]): Promise<void> {
  const binary = await findEtcdctl();
  await new Promise<void>((resolve, reject) => {
    const env = { ...process.env, ETCDCTL_API: '3' };
    execFile(binary, args, { env, timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`etcdctl ${args.join(' ')} failed: ${stderr || stdout}`));
      else resolve();
    });
  });
}

/** Returns the path of etcdctl, or throws naming the Debian package that provides it. */
export async function findEtcdctl(): Promise<string> {
  for (const directory of ['/usr/bin', ...(process.env.PATH ?? '').split(delimiter)]) {
    if (directory === '') continue;
    const candidate = join(directory, 'etcdctl');
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  throw new Error('etcdctl is not installed: run `apt-get install -y etcd-client`');
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

/** One member of a cluster started by {@link startEtcdCluster}. */
export interface EtcdClusterMember {
  name: string;
  /** Client URL, such as `http://127.0.0.1:40123`. */
  endpoint: string;
  /** True while the member's process runs. */
  readonly running: boolean;
  /** Kills the member with SIGKILL and keeps its data, as a crash would. */
  kill(): Promise<void>;
  /** Starts a killed member again with its data and resolves once it reports healthy. */
  start(): Promise<void>;
}

/** A multi-member etcd cluster on 127.0.0.1. */
export interface EtcdCluster {
  members: EtcdClusterMember[];
  /** Every member's client URL. */
  endpoints: string[];
  /** Returns the member that leads now, as a running member reports it. */
  leader(): Promise<EtcdClusterMember>;
  /** Stops every member and removes the temporary directory. */
  stop(): Promise<void>;
}

/**
 * Starts a cluster of `size` members on free ports of 127.0.0.1, each with its
 * own data directory, and resolves once every member reports healthy.
 * Heartbeat 25 ms and election timeout 250 ms let a new leader take over
 * within about a second of a leader's death.
 */
export async function startEtcdCluster(size = 3, startTimeoutMs = 15_000): Promise<EtcdCluster> {
  const binary = await findEtcdBinary();
  const rootDir = await mkdtemp(join(tmpdir(), 'loom-etcd-cluster-'));
  liveDirectories.add(rootDir);
  installExitHook();

  const specs = [];
  for (let index = 1; index <= size; index++) {
    specs.push({ name: `m${index}`, client: await findFreePort(), peer: await findFreePort() });
  }
  const initialCluster = specs
    .map((spec) => `${spec.name}=http://127.0.0.1:${spec.peer}`)
    .join(',');
  const members = specs.map(
    (spec) => new ClusterMember(binary, rootDir, spec, initialCluster, startTimeoutMs),
  );
  try {
    await Promise.all(members.map((member) => member.start()));
  } catch (error) {
    await Promise.all(members.map((member) => member.kill()));
    await rm(rootDir, { recursive: true, force: true });
    liveDirectories.delete(rootDir);
    throw error;
  }

  return {
    members,
    endpoints: members.map((member) => member.endpoint),
    async leader() {
      for (const member of members.filter((candidate) => candidate.running)) {
        member.id ??= (await memberStatus(member.endpoint))?.memberId;
      }
      for (const member of members.filter((candidate) => candidate.running)) {
        const status = await memberStatus(member.endpoint);
        const leader = members.find((candidate) => candidate.id === status?.leader);
        if (status !== undefined && leader !== undefined) return leader;
      }
      throw new Error('no running etcd member reports a known leader');
    },
    async stop() {
      await Promise.all(members.map((member) => member.terminate('SIGTERM')));
      await rm(rootDir, { recursive: true, force: true });
      liveDirectories.delete(rootDir);
    },
  };
}

class ClusterMember implements EtcdClusterMember {
  readonly name: string;
  readonly endpoint: string;
  /** Member id in decimal, as etcd's JSON gateway reports it; learned on first use. */
  id: string | undefined;
  readonly #binary: string;
  readonly #args: string[];
  readonly #logFile: string;
  readonly #startTimeoutMs: number;
  #child: ChildProcess | undefined;
  #started = false;

  constructor(
    binary: string,
    rootDir: string,
    spec: { name: string; client: number; peer: number },
    initialCluster: string,
    startTimeoutMs: number,
  ) {
    this.name = spec.name;
    this.endpoint = `http://127.0.0.1:${spec.client}`;
    this.#binary = binary;
    this.#startTimeoutMs = startTimeoutMs;
    this.#logFile = join(rootDir, `${spec.name}.log`);
    const peerUrl = `http://127.0.0.1:${spec.peer}`;
    this.#args = [
      `--name=${spec.name}`,
      `--data-dir=${join(rootDir, spec.name)}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${initialCluster}`,
      '--initial-cluster-token=loom-test-cluster',
      '--heartbeat-interval=25',
      '--election-timeout=250',
      '--logger=zap',
      '--log-outputs=stderr',
    ];
  }

  get running(): boolean {
    return this.#child !== undefined && !hasExited(this.#child);
  }

  async start(): Promise<void> {
    // A restarted member rejoins from its data directory; the cluster flags are ignored then.
    const args = [...this.#args, `--initial-cluster-state=${this.#started ? 'existing' : 'new'}`];
    this.#started = true;
    const child = spawnEtcd(this.#binary, args, this.#logFile);
    this.#child = child;

    const deadline = Date.now() + this.#startTimeoutMs;
    while (Date.now() < deadline) {
      if (hasExited(child)) {
        throw new Error(
          `etcd member ${this.name} exited during start:\n${readLogTail(this.#logFile)}`,
        );
      }
      if (await isHealthy(this.endpoint)) return;
      await sleep(HEALTH_POLL_MS * 2);
    }
    throw new Error(
      `etcd member ${this.name} was not healthy after ${this.#startTimeoutMs} ms:\n` +
        readLogTail(this.#logFile),
    );
  }

  async kill(): Promise<void> {
    await this.terminate('SIGKILL');
  }

  async terminate(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    if (child === undefined || hasExited(child)) return;

    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

/** Reads a member's id and the leader's id through etcd's JSON gateway. */
async function memberStatus(
  endpoint: string,
): Promise<{ memberId: string; leader: string } | undefined> {
  try {
    const response = await fetch(`${endpoint}/v3/maintenance/status`, {
      method: 'POST',
      body: '{}',
      signal: AbortSignal.timeout(1_000),
    });
    const body = (await response.json()) as { header?: { member_id?: string }; leader?: string };
    if (!body.header?.member_id || !body.leader) return undefined;
    return { memberId: body.header.member_id, leader: body.leader };
  } catch {
    return undefined;
  }
}
