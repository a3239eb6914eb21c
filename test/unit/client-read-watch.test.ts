import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchClientReads } from '../../data-plane/proxy/exchange.js';

/** The fields of a response and its connection that the watch reads, settable by the test. */
interface FakeResponse {
  writableFinished: boolean;
  destroyed: boolean;
  socket: { writableLength: number; destroyed: boolean } | null;
}

/** Returns a stand-in response whose connection holds `buffered` bytes. */
function fakeResponse(buffered: number): FakeResponse {
  return {
    writableFinished: false,
    destroyed: false,
    socket: { writableLength: buffered, destroyed: false },
  };
}

/** The connection the watch checks: the response's, or the last one it had while queued. */
const connections = new WeakMap<FakeResponse, NonNullable<FakeResponse['socket']>>();

function watch(res: FakeResponse, ms: number, onTimeout: () => void): NodeJS.Timeout | undefined {
  const connection = connections.get(res) ?? res.socket!;
  return watchClientReads(res as unknown as ServerResponse, connection as unknown as Socket, ms, {
    handleSendTimeout: onTimeout,
  });
}

describe('client read watch', () => {
  it('starts over while the buffer shrinks', async () => {
    const res = fakeResponse(100_000);
    let fired = 0;
    const timer = watch(res, 200, () => fired++);
    try {
      for (let turn = 0; turn < 6; turn++) {
        await sleep(50);
        res.socket!.writableLength -= 1_000;
      }
      assert.equal(fired, 0, 'fired while the client was reading');
      await sleep(600);
      assert.equal(fired, 1);
    } finally {
      clearTimeout(timer);
    }
  });

  it('fires once the buffer stays the same', async () => {
    const res = fakeResponse(5_000);
    let fired = 0;
    const timer = watch(res, 20, () => fired++);
    await sleep(100);
    clearTimeout(timer);
    assert.equal(fired, 1);
  });

  it('waits while the response is queued', async () => {
    const res = fakeResponse(5_000);
    const connection = res.socket;
    connections.set(res, connection!);
    res.socket = null;
    let fired = 0;
    const timer = watch(res, 20, () => fired++);
    try {
      await sleep(150);
      assert.equal(fired, 0, 'fired while another response held the connection');
      res.socket = connection;
      await sleep(150);
      assert.equal(fired, 1);
    } finally {
      clearTimeout(timer);
    }
  });

  it('stops once the connection closed', async () => {
    const res = fakeResponse(5_000);
    const connection = res.socket!;
    connections.set(res, connection);
    res.socket = null;
    connection.destroyed = true;
    const timer = watch(res, 20, () => assert.fail('fired after the connection closed'));
    await sleep(100);
    assert.equal(timer?.hasRef(), false);
    clearTimeout(timer);
  });

  it('stops once the response finished', async () => {
    const res = fakeResponse(5_000);
    res.writableFinished = true;
    const timer = watch(res, 20, () => assert.fail('fired after the response finished'));
    await sleep(100);
    clearTimeout(timer);
  });

  it('starts no timer for 0', () => {
    const timer = watch(fakeResponse(1), 0, () => assert.fail('fired'));
    assert.equal(timer, undefined);
  });
});
