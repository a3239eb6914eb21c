import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { createLogger } from '../../common/logger.js';
import { parseConfigTexts, type DeclaredConfig } from '../../config/load.js';
import { HealthReplica } from '../../data-plane/workers/health-replica.js';
import { MAX_FIRST_CHECK_DELAY_MS } from '../../data-plane/upstreams/health-checker.js';
import { TargetState } from '../../data-plane/upstreams/target-state.js';
import { waitFor } from '../../scripts/processes.js';
import { applyConfig, Workspace, type Member } from '../faults/harness.js';
import { answersBySlot, get, startProxy, waitForAck, type Answer } from './workers-harness.js';

/** An upstream that responds with its name and counts the health checks it receives. */
interface CheckedUpstream {
  server: Server;
  port: number;
  origin: string;
  /** Health checks received so far. */
  checks(): number;
  /** Makes `/healthz` respond 200 (true) or 503 (false). */
  setHealthy(healthy: boolean): void;
}

async function startCheckedUpstream(name: string): Promise<CheckedUpstream> {
  let checks = 0;
  let healthy = true;
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      if (req.headers['user-agent'] === 'loom-health-check') checks++;
      res.statusCode = healthy ? 200 : 503;
      res.end();
      return;
    }
    res.end(name);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    origin: `http://127.0.0.1:${port}`,
    checks: () => checks,
    setHealthy: (value) => {
      healthy = value;
    },
  };
}

/**
 * Upstream `pair` (targets a and b) is checked every 100 ms and changes health on one result.
 * Upstream `once` (target c) is checked every 10 minutes, so each checker sends exactly one
 * check within a test: its first one, within `MAX_FIRST_CHECK_DELAY_MS`.
 */
function config(a: CheckedUpstream, b: CheckedUpstream, c: CheckedUpstream): DeclaredConfig {
  const fast = '{path: /healthz, intervalMs: 100, healthyThreshold: 1, unhealthyThreshold: 1}';
  const text = [
    'upstreams:',
    `  - name: pair`,
    `    targets: [{url: '${a.origin}'}, {url: '${b.origin}'}]`,
    `    healthCheck: ${fast}`,
    `  - name: once`,
    `    targets: [{url: '${c.origin}'}]`,
    '    healthCheck: {path: /healthz, intervalMs: 600000}',
    'routes:',
    "  - {name: pair, paths: ['/pair/*rest'], upstream: pair}",
    "  - {name: once, paths: ['/once/*rest'], upstream: once}",
  ].join('\n');
  return parseConfigTexts([{ file: 'health.yaml', text }]);
}

/** Bodies (upstream names) of `count` requests on new connections, keyed by worker slot. */
async function bodiesBySlot(port: number, count: number): Promise<Map<string, string[]>> {
  const bySlot = new Map<string, string[]>();
  for (let i = 0; i < count; i++) {
    const answer: Answer = await get(port, '/pair/x');
    assert.equal(answer.status, 200);
    const slot = answer.worker.split('-')[0];
    bySlot.set(slot, [...(bySlot.get(slot) ?? []), answer.body]);
  }
  return bySlot;
}

/** Parsed log lines of `file` whose `msg` is `message`. */
function logLines(file: string, message: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.includes(`"msg":"${message}"`))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('proxy workers health checks', { timeout: 180_000 }, () => {
  let a: CheckedUpstream;
  let b: CheckedUpstream;
  let c: CheckedUpstream;
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;

  before(async () => {
    [a, b, c] = await Promise.all(['a', 'b', 'c'].map(startCheckedUpstream));
    ws = new Workspace();
    cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    proxy = await startProxy(ws, cp, 'health', {});
    const version = await applyConfig(cp.address, config(a, b, c));
    await waitForAck(cp.address, 'health', version);
  });

  after(async () => {
    await ws?.close();
    for (const upstream of [a, b, c]) upstream?.server.close();
  });

  test('checks sent once per proxy', async () => {
    await waitFor('the first check of target c', 10_000, () => c.checks() > 0);
    // Workers committed the snapshot before the ack, so a checker of theirs would have started
    // already. The wait covers the random delay of its first check and leaves it time to arrive.
    await new Promise((resolve) => setTimeout(resolve, MAX_FIRST_CHECK_DELAY_MS + 1_000));

    assert.equal(c.checks(), 1, ws.logs());
    assert.ok(a.checks() > 0);
    assert.ok(b.checks() > 0);
  });

  test('workers agree on unhealthy target', async () => {
    a.setHealthy(false);
    await waitFor('every process to take target a out', 20_000, () => {
      return logLines(proxy.logFile, 'target unhealthy').length >= 3;
    });

    const lines = logLines(proxy.logFile, 'target unhealthy');
    assert.equal(lines.length, 3, ws.logs());
    const primary = lines.filter((line) => line.worker === undefined);
    assert.equal(primary.length, 1);
    assert.equal(primary[0].reason, 'status 503');
    const workers = lines.filter((line) => line.worker !== undefined).map((line) => line.worker);
    assert.deepEqual(workers.sort(), [1, 2]);
    const bySlot = await bodiesBySlot(proxy.port, 12);
    assert.deepEqual([...bySlot.keys()].sort(), ['1', '2']);
    for (const [slot, bodies] of bySlot) {
      assert.ok(
        bodies.every((body) => body === 'b'),
        `worker ${slot} sent to ${bodies.join(',')}`,
      );
    }
  });

  test('replacement starts with shared health', async () => {
    const victim = (await answersBySlot(proxy.port, '/pair/x')).get('2')?.worker ?? '';
    assert.notEqual(victim, '');
    process.kill(Number(victim.split('-')[1]), 'SIGKILL');

    const fromReplacement: string[] = [];
    await waitFor('a new worker in slot 2 to serve 4 requests', 30_000, async () => {
      const answer = await get(proxy.port, '/pair/x', 1_000);
      if (answer.worker.startsWith('2-') && answer.worker !== victim) {
        fromReplacement.push(answer.body);
      }
      return fromReplacement.length >= 4;
    });

    assert.deepEqual(fromReplacement, ['b', 'b', 'b', 'b']);
    assert.equal(c.checks(), 1, 'the replacement sent its own check');
  });

  test('recovered target back everywhere', async () => {
    a.setHealthy(true);
    const seen = new Map<string, Set<string>>();
    await waitFor('every worker to send requests to target a', 20_000, async () => {
      for (const [slot, bodies] of await bodiesBySlot(proxy.port, 4)) {
        seen.set(slot, new Set([...(seen.get(slot) ?? []), ...bodies]));
      }
      return ['1', '2'].every((slot) => seen.get(slot)?.has('a') === true);
    });

    const metrics = await (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text();
    const gauge = `loom_proxy_target_healthy{upstream="pair",target="${a.origin}"}`;
    assert.ok(metrics.includes(`${gauge} 1`), metrics);
  });
});

describe('health replica', () => {
  const logger = createLogger({ name: 'test', level: 'silent' });
  const target = 'http://127.0.0.1:9/base';

  test('attached state follows updates', () => {
    const replica = new HealthReplica();
    const state = new TargetState('up', target, logger);
    replica.attach(state);

    replica.update([{ upstream: 'up', target: 'http://127.0.0.1:9' }]);
    assert.equal(state.healthy, false);
    replica.update([]);
    assert.equal(state.healthy, true);
  });

  test('new state starts with known health', () => {
    const replica = new HealthReplica();
    replica.update([{ upstream: 'up', target: 'http://127.0.0.1:9' }]);
    const state = new TargetState('up', target, logger);
    const other = new TargetState('other', target, logger);
    replica.attach(state);
    replica.attach(other);

    assert.equal(state.healthy, false);
    assert.equal(other.healthy, true);
  });

  test('replaced checker keeps state attached', () => {
    const replica = new HealthReplica();
    const state = new TargetState('up', target, logger);
    const detachOld = replica.attach(state);
    replica.attach(state);
    detachOld();

    replica.update([{ upstream: 'up', target: 'http://127.0.0.1:9' }]);
    assert.equal(state.healthy, false);
  });

  test('detached state stops following', () => {
    const replica = new HealthReplica();
    const state = new TargetState('up', target, logger);
    replica.attach(state)();

    replica.update([{ upstream: 'up', target: 'http://127.0.0.1:9' }]);
    assert.equal(state.healthy, true);
  });
});
