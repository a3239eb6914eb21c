import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchClientReads } from '../../data-plane/proxy/exchange.js';

/** Returns a stand-in socket with the two fields the watch reads, settable by the test. */
function fakeSocket(writableLength: number): Socket & { writableLength: number } {
  return { writableLength, destroyed: false } as unknown as Socket & { writableLength: number };
}

describe('client read watch', () => {
  it('starts over while the buffer shrinks', async () => {
    const socket = fakeSocket(100_000);
    let fired = 0;
    const timer = watchClientReads(socket, 200, { handleSendTimeout: () => fired++ });
    try {
      for (let turn = 0; turn < 6; turn++) {
        await sleep(50);
        socket.writableLength -= 1_000;
      }
      assert.equal(fired, 0, 'fired while the client was reading');
      await sleep(600);
      assert.equal(fired, 1);
    } finally {
      clearTimeout(timer);
    }
  });

  it('fires once the buffer stays the same', async () => {
    const socket = fakeSocket(5_000);
    let fired = 0;
    const timer = watchClientReads(socket, 20, { handleSendTimeout: () => fired++ });
    await sleep(100);
    clearTimeout(timer);
    assert.equal(fired, 1);
  });

  it('starts no timer for 0', () => {
    const timer = watchClientReads(fakeSocket(1), 0, {
      handleSendTimeout: () => assert.fail('fired'),
    });
    assert.equal(timer, undefined);
  });
});
