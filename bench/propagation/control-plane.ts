// A control plane for the propagation benchmark, run as its own process. It
// differs from `loom control-plane` only in admitting new streams without
// pacing, so that 1,000 subscribers connect in seconds.
// Usage: tsx bench/propagation/control-plane.ts LISTEN DATA_DIR
import { createLogger } from '../../common/logger.js';
import { ControlPlane } from '../../control-plane/control-plane.js';

const [listen, dataDir] = process.argv.slice(2);
const logger = createLogger({ name: 'bench-control-plane', level: 'warn' });
const controlPlane = await ControlPlane.start({
  listen,
  etcdEndpoints: [],
  dataDir,
  logger,
  streamAdmissionRate: 100_000,
});
process.on('SIGTERM', () => {
  void controlPlane.stop().then(() => process.exit(0));
});
