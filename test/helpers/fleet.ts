import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { findFreePort } from './ports.js';

/** One proxy process of a test fleet. */
export interface FleetProxy {
  id: string;
  port: number;
  adminPort: number;
  process: LoomProcess;
  url(path: string): string;
}

/** A control plane and proxies started as real processes on 127.0.0.1. */
export interface Fleet {
  /** host:port of the control plane, for proxies and loomctl. */
  controlPlane: string;
  /** Port of the control plane's HTTP admin listener (/healthz, /readyz, /metrics). */
  controlPlaneAdminPort: number;
  proxies: FleetProxy[];
  /** Folder with one log file per process and the embedded store. */
  dir: string;
  startControlPlane(): Promise<void>;
  stopControlPlane(): Promise<void>;
  /** Returns the end of every process log, for failure messages. */
  logs(): string;
  stop(): Promise<void>;
}

/** Settings of `startFleet`. */
export interface FleetOptions {
  /** etcd endpoint; without it the control plane uses the embedded store. */
  etcd?: string;
  proxies: number;
}

/** Starts a control plane and `proxies` proxies, and waits until all listen. */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const dir = mkdtempSync(join(tmpdir(), 'loom-fleet-'));
  const cpPort = await findFreePort();
  const cpAdminPort = await findFreePort();
  const controlPlane = `127.0.0.1:${cpPort}`;
  const storeArgs = options.etcd ? ['--etcd', options.etcd] : undefined;
  let cp: LoomProcess | undefined;
  const logFiles: string[] = [join(dir, 'control-plane.log')];

  const startControlPlane = async () => {
    cp = startControlPlaneProcess(dir, {
      listen: controlPlane,
      adminListen: `127.0.0.1:${cpAdminPort}`,
      storeArgs,
      extraArgs: ['--log-level', 'debug'],
    });
    await waitForPort('127.0.0.1', cpPort);
  };
  await startControlPlane();
  // A stream opened before the first snapshot ends with UNAVAILABLE; a proxy retries it, but a
  // test that opens one stream by hand would wait for a snapshot that never comes.
  await waitForReady(cpAdminPort, join(dir, 'control-plane.log'));

  const proxies: FleetProxy[] = [];
  for (let index = 1; index <= options.proxies; index++) {
    const id = `proxy-${index}`;
    logFiles.push(join(dir, `${id}.log`));
    proxies.push(await startProxy(controlPlane, dir, id));
  }
  await Promise.all(proxies.map((proxy) => waitForPort('127.0.0.1', proxy.adminPort)));

  return {
    controlPlane,
    controlPlaneAdminPort: cpAdminPort,
    proxies,
    dir,
    startControlPlane,
    async stopControlPlane() {
      await cp?.stop();
    },
    logs() {
      return logFiles
        .map((file) => {
          let text = '';
          try {
            text = readFileSync(file, 'utf8');
          } catch {
            text = '(no log)';
          }
          return `--- ${file}\n${text.split('\n').slice(-40).join('\n')}`;
        })
        .join('\n');
    },
    async stop() {
      await Promise.all([cp?.stop(), ...proxies.map((proxy) => proxy.process.stop())]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until the control plane's /readyz returns 200, which it does once it published a snapshot. */
async function waitForReady(adminPort: number, logFile: string): Promise<void> {
  try {
    await waitFor('the control plane to be ready', 30_000, async () => {
      const response = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      await response.arrayBuffer();
      return response.status === 200;
    });
  } catch (error) {
    let log = '(no log)';
    try {
      log = readFileSync(logFile, 'utf8').split('\n').slice(-40).join('\n');
    } catch {
      // The error then shows "(no log)".
    }
    throw new Error(`${(error as Error).message}\n--- ${logFile}\n${log}`);
  }
}

/** Settings of `startControlPlaneProcess`. */
export interface ControlPlaneProcessOptions {
  /** host:port of the gRPC listener. */
  listen: string;
  /** host:port of the HTTP admin listener; default 127.0.0.1:0. */
  adminListen?: string;
  /** Store flags, such as `--etcd URL`; default the embedded store in `DIR/store`. */
  storeArgs?: string[];
  /** More `loom control-plane` flags. */
  extraArgs?: string[];
  /** Name of the process and of its log file `DIR/NAME.log`; default control-plane. */
  name?: string;
}

/** Starts `loom control-plane` logging to `DIR/NAME.log`. It does not wait for it to listen. */
export function startControlPlaneProcess(
  dir: string,
  options: ControlPlaneProcessOptions,
): LoomProcess {
  const name = options.name ?? 'control-plane';
  return startLoom(
    name,
    [
      'control-plane',
      '--listen',
      options.listen,
      '--admin-listen',
      options.adminListen ?? '127.0.0.1:0',
      ...(options.storeArgs ?? ['--data-dir', join(dir, 'store')]),
      ...(options.extraArgs ?? []),
    ],
    join(dir, `${name}.log`),
  );
}

/** Waits until `check` passes for every proxy, within `timeoutMs`. */
export async function waitForEveryProxy(
  fleet: Fleet,
  what: string,
  check: (proxy: FleetProxy) => Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  for (const proxy of fleet.proxies) {
    await waitFor(`${proxy.id}: ${what}`, timeoutMs, () => check(proxy));
  }
}

/** Settings of `startProxy`. */
export interface ProxyOptions {
  /** Makes the proxy nack every snapshot that contains a route of this name. */
  rejectRoute?: string;
  /** More `loom data-plane` flags. */
  extraArgs?: string[];
}

/**
 * Starts one more proxy against `controlPlane`, logging to `DIR/ID.log` at debug level. It does
 * not wait for the proxy to listen.
 */
export async function startProxy(
  controlPlane: string,
  dir: string,
  id: string,
  options: ProxyOptions = {},
): Promise<FleetProxy> {
  const [port, adminPort] = [await findFreePort(), await findFreePort()];
  const env =
    options.rejectRoute === undefined
      ? undefined
      : { LOOM_FAULT_REJECT_ROUTE: options.rejectRoute };
  const process = startLoom(
    id,
    [
      'data-plane',
      '--control-plane',
      controlPlane,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--id',
      id,
      '--log-level',
      'debug',
      ...(options.extraArgs ?? []),
    ],
    join(dir, `${id}.log`),
    env,
  );
  return { id, port, adminPort, process, url: (path) => `http://127.0.0.1:${port}${path}` };
}
