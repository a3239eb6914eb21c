import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Agent, request } from 'undici';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { AdminClient, type AdminConnection } from '../../cli/admin-client.js';
import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { findFreePort } from '../helpers/ports.js';
import { parseConfigTexts, type DeclaredConfig } from '../../config/load.js';

/** A Loom server process of a fault test, with its ports and log file. */
export interface Member {
  name: string;
  process: LoomProcess;
  port: number;
  adminPort: number;
  address: string;
  logFile: string;
}

/** A folder for one test's logs and state; `logs()` returns their ends for failure messages. */
export class Workspace {
  readonly dir = mkdtempSync(join(tmpdir(), 'loom-faults-'));
  readonly members: Member[] = [];

  /** Starts a control plane on a free port (or `port`) and waits until it accepts connections. */
  async controlPlane(name: string, args: string[], port?: number): Promise<Member> {
    const grpcPort = port ?? (await findFreePort());
    const adminPort = await findFreePort();
    const logFile = join(this.dir, `${name}.log`);
    const process = startLoom(
      name,
      [
        'control-plane',
        '--listen',
        `127.0.0.1:${grpcPort}`,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--log-level',
        'debug',
        ...args,
      ],
      logFile,
    );
    const member = {
      name,
      process,
      port: grpcPort,
      adminPort,
      address: `127.0.0.1:${grpcPort}`,
      logFile,
    };
    this.members.push(member);
    await waitForPort('127.0.0.1', grpcPort);
    return member;
  }

  /** Starts a proxy with `--id name` and waits until its admin port accepts connections. */
  async proxy(
    name: string,
    controlPlanes: string[],
    args: string[] = [],
    env?: Record<string, string>,
  ): Promise<Member> {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const logFile = join(this.dir, `${name}.log`);
    const process = startLoom(
      name,
      [
        'data-plane',
        '--control-plane',
        controlPlanes.join(','),
        '--listen',
        `127.0.0.1:${port}`,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--id',
        name,
        '--log-level',
        'debug',
        ...args,
      ],
      logFile,
      env,
    );
    const member = { name, process, port, adminPort, address: `127.0.0.1:${port}`, logFile };
    this.members.push(member);
    await waitForPort('127.0.0.1', adminPort);
    return member;
  }

  /** Returns the last lines of every log, for assertion messages. */
  logs(lines = 30): string {
    return this.members
      .map((member) => {
        let text: string;
        try {
          text = readFileSync(member.logFile, 'utf8');
        } catch {
          text = '(no log)';
        }
        return `--- ${member.name}\n${text.split('\n').slice(-lines).join('\n')}`;
      })
      .join('\n');
  }

  /** Stops every process and removes the folder. */
  async close(): Promise<void> {
    await Promise.all(this.members.map((member) => member.process.stop(3_000)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Returns the parsed pino lines of a member's log whose message is `message` or starts with it,
 * oldest first.
 */
export function logLines(member: Member, message: string): Record<string, unknown>[] {
  return readFileSync(member.logFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes(message))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === message || String(line.msg).startsWith(message));
}

/** Body of a proxy's `/readyz`, with its HTTP status. */
export interface ReadyState {
  status: number;
  body: { status?: string; reason?: string; version?: number; epoch?: string; source?: string };
}

/** Reads a proxy's `/readyz`; a connection error reads as status 0. */
export async function readyz(adminPort: number): Promise<ReadyState> {
  try {
    const response = await fetch(`http://127.0.0.1:${adminPort}/readyz`, {
      signal: AbortSignal.timeout(2_000),
    });
    return { status: response.status, body: (await response.json()) as ReadyState['body'] };
  } catch {
    return { status: 0, body: {} };
  }
}

/** Waits until a proxy serves at least `version` (in any epoch when `epoch` is omitted). */
export async function waitForVersion(
  adminPort: number,
  version: number,
  timeoutMs = 20_000,
  epoch?: string,
): Promise<void> {
  await waitFor(`proxy admin ${adminPort} at version ${version}`, timeoutMs, async () => {
    const state = await readyz(adminPort);
    const sameEpoch = epoch === undefined || state.body.epoch === epoch;
    return state.status === 200 && sameEpoch && (state.body.version ?? 0) >= version;
  });
}

/** Starts an echo upstream on a free port. */
export async function startUpstream(name: string): Promise<{ server: Server; port: number }> {
  const server = await startEchoUpstream(0, name);
  return { server, port: (server.address() as AddressInfo).port };
}

/**
 * Builds a config of upstream `echo` with route `/hold/*rest` and `routeCount`
 * routes `/r{i}{tag}/*rest`, all to it.
 */
export function fixtureConfig(upstreamPort: number, routeCount: number, tag = ''): DeclaredConfig {
  const names = ['hold', ...Array.from({ length: routeCount }, (_, i) => `r${i}${tag}`)];
  const routes = names.map(
    (name) => `  - {name: ${name}, paths: ['/${name}/*rest'], upstream: echo}`,
  );
  const text = [
    'upstreams:',
    `  - {name: echo, targets: [{url: 'http://127.0.0.1:${upstreamPort}'}]}`,
    'routes:',
    ...routes,
  ].join('\n');
  return parseConfigTexts([{ file: 'fixture.yaml', text }]);
}

/** Returns a config file's text: upstream `echo` on `upstreamPort` and one route per name. */
export function fixtureText(upstreamPort: number, routes: string[]): string {
  return [
    'apiVersion: loom/v1',
    'upstreams:',
    `  - {name: echo, targets: [{url: 'http://127.0.0.1:${upstreamPort}'}]}`,
    'routes:',
    ...routes.map((name) => `  - {name: ${name}, paths: ['/${name}/*rest'], upstream: echo}`),
  ].join('\n');
}

/**
 * Parses a config file's text, applies it through the admin API and waits until every proxy
 * serves it; returns the new version.
 */
export async function applyConfigText(
  controlPlane: string,
  proxies: readonly Member[],
  file: string,
  text: string,
): Promise<number> {
  const version = await applyConfig(controlPlane, parseConfigTexts([{ file, text }]));
  for (const proxy of proxies) {
    await waitForVersion(proxy.adminPort, version, 30_000);
  }
  return version;
}

/** Applies a config through the admin API, pruning the rest; returns the new version. */
export async function applyConfig(
  controlPlane: string,
  config: DeclaredConfig,
  connection?: AdminConnection,
): Promise<number> {
  const client = new AdminClient(controlPlane, connection);
  try {
    const response = await client.apply({
      routes: config.routes,
      upstreams: config.upstreams,
      prune: true,
      dryRun: false,
      includeValues: false,
    });
    return response.version;
  } finally {
    client.close();
  }
}

/** Counts of a load run. */
export interface LoadResult {
  ok: number;
  failed: number;
  /** Error messages or statuses of failed requests, up to 20. */
  failures: string[];
  /** Connections the client opened to the proxy. */
  connections: number;
}

/**
 * Sends GET requests to `url` from `concurrency` loops over keep-alive
 * connections until `stop()` resolves or `maxRequests` were sent. A request
 * fails on a connection error or a status other than 200.
 */
export function startLoad(
  url: string,
  options: { concurrency: number; maxRequests: number },
): { stop(): Promise<LoadResult> } {
  let connections = 0;
  const agent = new Agent({
    connections: options.concurrency,
    keepAliveTimeout: 60_000,
    connect: { timeout: 5_000 },
  });
  agent.on('connect', () => {
    connections += 1;
  });
  const result: LoadResult = { ok: 0, failed: 0, failures: [], connections: 0 };
  let running = true;
  let sent = 0;
  const loop = async () => {
    while (running && sent < options.maxRequests) {
      sent += 1;
      try {
        const response = await request(url, { dispatcher: agent, headersTimeout: 10_000 });
        await response.body.text();
        if (response.statusCode === 200) result.ok += 1;
        else fail(`status ${response.statusCode}`);
      } catch (error) {
        fail(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
      }
    }
  };
  const fail = (reason: string) => {
    result.failed += 1;
    if (result.failures.length < 20) result.failures.push(reason);
  };
  const loops = Array.from({ length: options.concurrency }, () => loop());
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      await agent.close();
      result.connections = connections;
      return result;
    },
  };
}

/** Peak resident set size of a process in KiB (VmHWM), or undefined when unknown. */
export function peakRssKiB(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /VmHWM:\s+(\d+) kB/.exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Counts log lines of `file` whose `msg` equals `message`. */
export function countLogLines(file: string, message: string): number {
  let count = 0;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.includes(`"msg":"${message}"`)) count += 1;
  }
  return count;
}

/** Returns the `version` field of each log line with this message, in file order. */
export function loggedVersions(file: string, message: string): number[] {
  const versions: number[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes(`"msg":"${message}"`)) continue;
    const version = (JSON.parse(line) as { version?: unknown }).version;
    if (typeof version === 'number') versions.push(version);
  }
  return versions;
}
