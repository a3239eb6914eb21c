import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { formatStatusTable } from '../../cli/commands/status.js';
import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';

function proxy(fields: Partial<ProxyStatus>): ProxyStatus {
  return {
    id: 'p1',
    address: '127.0.0.1:8080',
    connected: true,
    ackedEpoch: 'e2',
    ackedVersion: 7,
    nackedVersion: 0,
    nackError: '',
    connectedAtMs: 0,
    lastSeenMs: 0,
    nackedEpoch: '',
    snapshotsSent: 3,
    fallbackVersion: 0,
    fallbackEpoch: '',
    versionAckedAtMs: 0,
    controlPlane: 'cp-a:7400',
    instanceId: '',
    ...fields,
  };
}

/** Returns the NACKED cell of the one proxy row. */
function nackCell(fields: Partial<ProxyStatus>): string {
  const status: StatusResponse = {
    version: 7,
    epoch: 'e2',
    proxies: [proxy(fields)],
    versionCommittedAtMs: 0,
    controlPlane: 'cp-a:7400',
    fleetError: '',
  };
  const row = formatStatusTable(status).trimEnd().split('\n')[1];
  return row.slice(row.indexOf('Z', row.lastIndexOf('1970')) + 1).trim();
}

describe('status table', () => {
  test('no nack shows a dash', () => {
    assert.equal(nackCell({}), '-');
  });

  test('older nack is superseded', () => {
    const cell = nackCell({ nackedEpoch: 'e2', nackedVersion: 5, nackError: 'bad' });
    assert.equal(cell, '5: bad (since superseded)');
  });

  test('current nack is shown as is', () => {
    const cell = nackCell({ nackedEpoch: 'e2', nackedVersion: 8, nackError: 'bad' });
    assert.equal(cell, '8: bad');
  });

  test('nack of a wiped epoch is marked', () => {
    const cell = nackCell({ nackedEpoch: 'e1', nackedVersion: 9, nackError: 'bad' });
    assert.equal(cell, '9: bad (other epoch)');
  });
});
