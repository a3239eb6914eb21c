import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { readyz, type Member, type Workspace } from '../faults/harness.js';
import { applyRouteA, get, startProxy, startUpstreamAndControlPlane } from './workers-harness.js';

/** Rounds of requests, each with one worker killed with SIGKILL while they run. */
const KILLS = 4;
/** Clients per round, each sending its requests one after another on new connections. */
const CLIENTS = 3;
const REQUESTS_PER_CLIENT = 30;
/** Client timeout for response headers, in ms. Only a connection the proxy lost reaches it. */
const HEADERS_TIMEOUT_MS = 15_000;

/** Outcome of one request: the status, or the error code of a failed connection. */
interface Outcome {
  status?: number;
  worker?: string;
  error?: string;
}

async function attempt(port: number): Promise<Outcome> {
  try {
    const answer = await get(port, '/a/x', HEADERS_TIMEOUT_MS);
    return { status: answer.status, worker: answer.worker };
  } catch (error) {
    return { error: String((error as { code?: unknown }).code ?? error) };
  }
}

/** States of the TCP sockets on local `port` that process `pid` holds, such as `0A` (LISTEN). */
function socketStates(pid: number, port: number): string[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed since readdir
    }
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match !== null) inodes.add(match[1]);
  }

  const localPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const states: string[] = [];
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    if (fields[1].endsWith(localPort) && inodes.has(fields[9])) states.push(fields[3]);
  }
  return states;
}

describe('proxy workers killed under load', { timeout: 300_000 }, () => {
  let upstream: Server;
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;
  const outcomes: Outcome[] = [];

  before(async () => {
    let upstreamPort: number;
    ({ upstream, upstreamPort, ws, cp } = await startUpstreamAndControlPlane());
    proxy = await startProxy(ws, cp, 'killed', {});
    await applyRouteA(cp.address, 'killed', upstreamPort);
  });

  after(async () => {
    await ws?.close();
    upstream?.close();
  });

  test('no request hangs after kill', async () => {
    for (let kill = 0; kill < KILLS; kill++) {
      const round: Outcome[] = [];
      const clients = Array.from({ length: CLIENTS }, async () => {
        for (let i = 0; i < REQUESTS_PER_CLIENT; i++) round.push(await attempt(proxy.port));
      });
      await waitFor('responses before the kill', 60_000, () => round.length >= 2 * CLIENTS);
      // Slots take turns: kill the worker of this round's slot that served the latest response.
      const slot = `${(kill % 2) + 1}-`;
      const victim = round.findLast((outcome) => outcome.worker?.startsWith(slot) === true);
      const pid = Number(victim?.worker?.split('-')[1]);
      assert.ok(pid > 0, `no response from slot ${slot} in ${JSON.stringify(round)}`);
      process.kill(pid, 'SIGKILL');
      await Promise.all(clients);
      outcomes.push(...round);

      await waitFor('both workers to listen again', 60_000, async () => {
        const body = (await readyz(proxy.adminPort)).body as { workers?: { listening: number } };
        return body.workers?.listening === 2;
      });
    }

    assert.equal(outcomes.length, KILLS * CLIENTS * REQUESTS_PER_CLIENT);
    const errors = outcomes.flatMap((outcome) =>
      outcome.error === undefined ? [] : [outcome.error],
    );
    // A lost connection runs into the client's headers timeout.
    assert.deepEqual(
      errors.filter((code) => code === 'UND_ERR_HEADERS_TIMEOUT'),
      [],
    );
    // Only requests the killed worker was serving can fail: at most one per client and kill.
    assert.ok(errors.length <= KILLS * CLIENTS, `connection errors: ${errors.join(', ')}`);
    const statuses = new Set(outcomes.flatMap((outcome) => outcome.status ?? []));
    assert.deepEqual([...statuses], [200]);
  });

  test('primary keeps no client socket open', () => {
    const pid = proxy.process.child.pid ?? 0;
    assert.ok(pid > 0);
    // The listening socket (0A, LISTEN) is the only one left on the proxy port.
    assert.deepEqual(socketStates(pid, proxy.port), ['0A']);
  });
});
