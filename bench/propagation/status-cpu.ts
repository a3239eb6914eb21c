// Measures the control plane's CPU time for one `status` call with a version, the call that
// `loomctl apply --wait` and the propagation benchmark repeat while a snapshot spreads. It times
// the proxy registry's list with each proxy's ack time and the encoding of the StatusResponse.
// The registry contains PROXIES connected proxies with ACKS acks each. The gRPC call itself is
// left out. CPU time comes from `process.cpuUsage`, so it includes V8's other threads.
// Usage: node --import tsx bench/propagation/status-cpu.ts [--proxies 1000] [--acks 64]
//   [--calls 500] [--json]
import { cpus, loadavg } from 'node:os';

import { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { ProxyRegistry } from '../../control-plane/stream/proxy-registry.js';
import { checkOptions, numberOption } from './options.js';
import { ownCpuMs } from './process-stats.js';

const argv = process.argv.slice(2);
checkOptions(
  argv,
  'usage: node --import tsx bench/propagation/status-cpu.ts [--proxies 1000] [--acks 64]\n' +
    '  [--calls 500] [--json]\n',
  ['--json'],
  ['--proxies', '--acks', '--calls'],
);
const PROXIES = numberOption(argv, '--proxies', 1_000);
const ACKS = numberOption(argv, '--acks', 64);
const CALLS = numberOption(argv, '--calls', 500);
/** Calls made before the measured ones, so that V8 has optimized the code. */
const WARMUP_CALLS = 100;

const epoch = 'c0ffee00-0000-4000-8000-000000000001';
const registry = new ProxyRegistry();
for (let index = 0; index < PROXIES; index++) {
  const id = `proxy-${index}`;
  const stream = { instanceId: id, address: '127.0.0.1:8080', peerHost: '127.0.0.1', end() {} };
  registry.connect(id, stream, '', 0);
  for (let version = 1; version <= ACKS; version++) {
    registry.sent(id, epoch, version);
    registry.ack(id, epoch, version);
  }
}
const target = { epoch, version: Math.max(1, ACKS - 4) };

/** Lists the proxies and encodes the response, as the admin API's `status` does. */
function statusCall(): Uint8Array {
  const proxies = registry.list(target, 'control-plane:7000');
  return StatusResponse.encode({
    version: ACKS,
    epoch,
    proxies,
    versionCommittedAtMs: Date.now(),
    controlPlane: 'control-plane:7000',
    fleetError: '',
  }).finish();
}

for (let call = 0; call < WARMUP_CALLS; call++) statusCall();
const cpuBefore = ownCpuMs();
const started = performance.now();
for (let call = 0; call < CALLS; call++) statusCall();
const result = {
  proxies: PROXIES,
  acks: ACKS,
  calls: CALLS,
  cpuMsPerCall: Number(((ownCpuMs() - cpuBefore) / CALLS).toFixed(3)),
  wallMsPerCall: Number(((performance.now() - started) / CALLS).toFixed(3)),
  cpuModel: cpus()[0]?.model ?? 'unknown',
  loadAverage: Number(loadavg()[0].toFixed(1)),
};
if (argv.includes('--json')) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  process.stdout.write(
    `${PROXIES} proxies, ${ACKS} acks each: ${result.cpuMsPerCall} ms of CPU and ` +
      `${result.wallMsPerCall} ms of wall time per status call (load average ` +
      `${result.loadAverage})\n`,
  );
}
