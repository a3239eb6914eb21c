import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { request } from 'undici';

import { AdminClient } from '../../cli/admin-client.js';
import { parseConfigTexts } from '../../config/load.js';
import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';
import { waitFor } from '../../scripts/processes.js';
import { applyConfig, Workspace, type Member } from '../faults/harness.js';

// Helpers of the tests that run a proxy with `--workers 2` and the worker header.

export interface Answer {
  status: number;
  /** `x-loom-worker`: slot and PID of the worker that responded, such as `2-4242`. */
  worker: string;
  body: string;
}

export const NONE: Answer = { status: 0, worker: '', body: '' };

/** Sends one GET on a new connection, so node:cluster hands it to the next worker. */
export async function get(port: number, path: string, timeoutMs = 10_000): Promise<Answer> {
  const response = await request(`http://127.0.0.1:${port}${path}`, {
    headers: { connection: 'close' },
    headersTimeout: timeoutMs,
  });
  const body = await response.body.text();
  const worker = response.headers['x-loom-worker'];
  return { status: response.statusCode, worker: typeof worker === 'string' ? worker : '', body };
}

/**
 * Sends requests on new connections until a worker of every slot in `slots` responded, at most 60;
 * returns the responses keyed by slot. Routed requests carry the worker header; 404s do not, so
 * `path` must match a route.
 */
export async function answersBySlot(
  port: number,
  path: string,
  slots = 2,
): Promise<Map<string, Answer>> {
  const bySlot = new Map<string, Answer>();
  for (let i = 0; i < 60 && bySlot.size < slots; i++) {
    const answer = await get(port, path);
    assert.equal(answer.status, 200, `GET ${path} returned ${answer.status}`);
    bySlot.set(answer.worker.split('-')[0], answer);
  }
  return bySlot;
}

/** Statuses of `count` requests on new connections; round robin spreads them over the workers. */
export async function statuses(port: number, path: string, count = 6): Promise<number[]> {
  const result: number[] = [];
  for (let i = 0; i < count; i++) result.push((await get(port, path)).status);
  return result;
}

export async function proxyStatus(
  controlPlane: string,
  id: string,
): Promise<ProxyStatus | undefined> {
  const client = new AdminClient(controlPlane);
  try {
    return (await client.status()).proxies.find((proxy) => proxy.id === id);
  } finally {
    client.close();
  }
}

export async function waitForAck(controlPlane: string, id: string, version: number): Promise<void> {
  await waitFor(`${id} to ack version ${version}`, 60_000, async () => {
    return ((await proxyStatus(controlPlane, id))?.ackedVersion ?? 0) >= version;
  });
}

/**
 * Applies upstream `up` with one target at `upstreamPort` and route `a` for `/a/*rest`, then
 * waits until proxy `id` acked that version.
 */
export async function applyRouteA(
  controlPlane: string,
  id: string,
  upstreamPort: number,
): Promise<void> {
  const text = [
    'upstreams:',
    `  - {name: up, targets: [{url: 'http://127.0.0.1:${upstreamPort}'}]}`,
    'routes:',
    "  - {name: a, paths: ['/a/*rest'], upstream: up}",
  ].join('\n');
  const version = await applyConfig(controlPlane, parseConfigTexts([{ file: 'a.yaml', text }]));
  await waitForAck(controlPlane, id, version);
}

/** Starts a proxy with two workers and the worker header, with extra environment variables. */
export async function startProxy(
  ws: Workspace,
  cp: Member,
  name: string,
  env: Record<string, string>,
): Promise<Member> {
  const saved = { ...process.env };
  Object.assign(process.env, { LOOM_TEST_WORKER_HEADER: '1', ...env });
  try {
    return await ws.proxy(name, [cp.address], ['--workers', '2', '--drain-timeout', '10s']);
  } finally {
    for (const key of Object.keys(process.env)) {
      if (!(key in saved)) delete process.env[key];
    }
  }
}

/** An upstream that responds "ok", and a workspace with a control plane on an embedded store. */
export interface UpstreamAndControlPlane {
  upstream: Server;
  upstreamPort: number;
  ws: Workspace;
  cp: Member;
}

/**
 * Starts an upstream on 127.0.0.1 that responds "ok" to every request, a workspace, and its
 * control plane `cp` with the embedded store in the workspace folder.
 */
export async function startUpstreamAndControlPlane(): Promise<UpstreamAndControlPlane> {
  const upstream = createServer((req, res) => res.end('ok'));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const upstreamPort = (upstream.address() as AddressInfo).port;
  const ws = new Workspace();
  const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
  return { upstream, upstreamPort, ws, cp };
}
