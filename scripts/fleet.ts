// Runs a local fleet: one control plane on the embedded store in ./loom-data
// (kept between runs), two proxies on 8080 and 8081, and the example upstream
// on 9001. Ctrl-C stops everything. Usage: npm start
import { startEchoUpstream } from '../examples/echo-upstream.js';
import { startLoom, waitForPort, type LoomProcess } from './processes.js';

const CONTROL_PLANE = '127.0.0.1:7400';
const CONTROL_PLANE_ADMIN = '127.0.0.1:7401';
const PROXIES = [
  { id: 'proxy-1', listen: '127.0.0.1:8080', admin: '127.0.0.1:9901' },
  { id: 'proxy-2', listen: '127.0.0.1:8081', admin: '127.0.0.1:9902' },
];

const upstream = await startEchoUpstream(9001, 'users').catch((error: NodeJS.ErrnoException) => {
  if (error.code !== 'EADDRINUSE') throw error;
  process.stderr.write(
    'port 9001 on 127.0.0.1 is in use; is another fleet running? Stop it (Ctrl-C) and try again.\n',
  );
  process.exit(1);
});
const processes: LoomProcess[] = [
  startLoom('control-plane', [
    'control-plane',
    '--listen',
    CONTROL_PLANE,
    '--admin-listen',
    CONTROL_PLANE_ADMIN,
    '--data-dir',
    './loom-data',
    '--log-pretty',
  ]),
];
await waitForPort('127.0.0.1', 7400);
for (const proxy of PROXIES) {
  processes.push(
    startLoom(proxy.id, [
      'data-plane',
      '--control-plane',
      CONTROL_PLANE,
      '--listen',
      proxy.listen,
      '--admin-listen',
      proxy.admin,
      '--id',
      proxy.id,
      '--log-pretty',
    ]),
  );
}
await Promise.all(
  PROXIES.map((proxy) => waitForPort('127.0.0.1', Number(proxy.listen.split(':')[1]))),
);

process.stdout.write(
  [
    '',
    'Loom fleet is running:',
    `  control plane   ${CONTROL_PLANE}  (gRPC: proxies and loomctl; store: ./loom-data)`,
    `                  http://${CONTROL_PLANE_ADMIN}/readyz  (admin: health and metrics)`,
    ...PROXIES.map(
      (proxy) =>
        `  ${proxy.id}         http://${proxy.listen}  (admin http://${proxy.admin}/readyz)`,
    ),
    '  upstream        http://127.0.0.1:9001  (example echo server)',
    '',
    'In another terminal:',
    '  npx loomctl apply -f examples/quickstart.yaml',
    '  curl http://127.0.0.1:8080/users/42',
    '',
    'Press Ctrl-C to stop.',
    '',
  ].join('\n'),
);

let stopping = false;
const stopAll = async () => {
  if (stopping) return;
  stopping = true;
  await Promise.all(processes.map((child) => child.stop()));
  upstream.close();
  process.exit(0);
};
process.on('SIGINT', () => void stopAll());
process.on('SIGTERM', () => void stopAll());
for (const child of processes) {
  child.child.once('exit', (code) => {
    if (stopping) return;
    process.stderr.write(`${child.name} exited with code ${code}; stopping the fleet\n`);
    void stopAll();
  });
}
