import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { SendWatchdog } from '../../data-plane/proxy/send-watchdog.js';

/** The fields of a connection that the watchdog reads, settable by the test. */
interface FakeConnection {
  writableLength: number;
  bytesWritten: number;
  destroyed: boolean;
  /** Calls of `resetAndDestroy`, which is how the watchdog cuts a plain connection. */
  resets: number;
}

function fakeConnection(): FakeConnection {
  const connection = {
    writableLength: 0,
    bytesWritten: 0,
    destroyed: false,
    resets: 0,
    once: () => connection,
    resetAndDestroy() {
      connection.resets++;
      connection.destroyed = true;
      return connection;
    },
    destroy() {
      connection.destroyed = true;
      return connection;
    },
  };
  return connection;
}

/** Queues `bytes` more bytes on `connection`, as a write that the kernel has not taken. */
function queue(connection: FakeConnection, bytes: number): void {
  connection.writableLength += bytes;
  connection.bytesWritten += bytes;
}

/** Lets the kernel take `bytes` of what is queued on `connection`. */
function take(connection: FakeConnection, bytes: number): void {
  connection.writableLength -= bytes;
}

describe('send watchdog', () => {
  const watchdogs: SendWatchdog[] = [];
  const logger = pino({ level: 'silent' });
  after(() => {
    for (const watchdog of watchdogs) watchdog.stop();
  });

  /** Connections cut, as the metrics count them. */
  let cuts = 0;

  function watchdog(timeoutMs: number, ...connections: FakeConnection[]): SendWatchdog {
    const created = new SendWatchdog(timeoutMs, logger, () => cuts++);
    watchdogs.push(created);
    for (const connection of connections) created.track(connection as unknown as Socket);
    return created;
  }

  it('cuts a connection that takes nothing', () => {
    const connection = fakeConnection();
    const checks = watchdog(1_000, connection);
    queue(connection, 50_000);

    assert.equal(checks.check(0), 0);
    assert.equal(checks.check(999), 0);
    const before = cuts;
    assert.equal(checks.check(1_000), 1);
    assert.equal(connection.resets, 1);
    assert.equal(cuts, before + 1);
    assert.equal(checks.size, 0);
  });

  it('keeps a connection that takes bytes', () => {
    const connection = fakeConnection();
    const checks = watchdog(1_000, connection);
    queue(connection, 50_000);
    checks.check(0);
    for (let now = 500; now <= 5_000; now += 500) {
      take(connection, 1_000);
      assert.equal(checks.check(now), 0, `cut at ${now} ms`);
    }
    assert.equal(connection.resets, 0);
  });

  it('counts a drain and refill as progress', () => {
    const connection = fakeConnection();
    const checks = watchdog(1_000, connection);
    queue(connection, 16_384);
    checks.check(0);
    // Between two checks the client took everything and the proxy wrote as much again.
    take(connection, 16_384);
    queue(connection, 16_384);
    assert.equal(checks.check(1_500), 0);
    assert.equal(checks.check(2_499), 0);
    assert.equal(checks.check(2_500), 1);
  });

  it('never cuts a connection with nothing waiting', () => {
    const connection = fakeConnection();
    const checks = watchdog(1_000, connection);
    for (let now = 0; now <= 10_000; now += 1_000) assert.equal(checks.check(now), 0);
    // A wait counts from the first check that finds bytes waiting.
    queue(connection, 10);
    assert.equal(checks.check(10_500), 0);
    assert.equal(checks.check(11_499), 0);
    assert.equal(checks.check(11_500), 1);
  });

  it('restarts the wait once the bytes left', () => {
    const connection = fakeConnection();
    const checks = watchdog(1_000, connection);
    queue(connection, 100);
    checks.check(0);
    take(connection, 100);
    checks.check(900);
    queue(connection, 100);
    assert.equal(checks.check(1_200), 0);
    assert.equal(checks.check(2_199), 0);
    assert.equal(checks.check(2_200), 1);
  });

  it('tracks nothing at 0', () => {
    const checks = watchdog(0, fakeConnection());
    assert.equal(checks.size, 0);
  });

  it('checks four times per timeout', () => {
    assert.equal(new SendWatchdog(300, logger).periodMs, 75);
    assert.equal(new SendWatchdog(60_000, logger).periodMs, 1_000);
    assert.equal(new SendWatchdog(20, logger).periodMs, 10);
  });
});
