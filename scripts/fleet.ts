// Runs a local fleet: one control plane on the embedded store in ./loom-data
// (kept between runs), two proxies and the example upstream. SIGINT (Ctrl-C) or
// SIGTERM to this process stops everything.
// Usage: npm start -- [--base-port N] [--data-dir DIR]
// Default ports: control plane 7400 (admin 7401), proxies 8080 and 8081 (admin
// 9901 and 9902), upstream 9001. With --base-port N (or LOOM_FLEET_BASE_PORT=N)
// they are N and N+1, N+2 and N+3 (admin N+4 and N+5), and N+6.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { runningLockOwner } from '../control-plane/store/data-dir-lock.js';
import { startEchoUpstream } from '../examples/echo-upstream.js';
import { startLoom, waitForPort, type LoomProcess } from './processes.js';

const HOST = '127.0.0.1';

/** Every port of the fleet, each with the part that listens on it. */
interface FleetPorts {
  controlPlane: number;
  controlPlaneAdmin: number;
  upstream: number;
  proxies: { id: string; port: number; adminPort: number }[];
}

function fleetPorts(base: number | undefined): FleetPorts {
  if (base === undefined) {
    return {
      controlPlane: 7400,
      controlPlaneAdmin: 7401,
      upstream: 9001,
      proxies: [
        { id: 'proxy-1', port: 8080, adminPort: 9901 },
        { id: 'proxy-2', port: 8081, adminPort: 9902 },
      ],
    };
  }
  return {
    controlPlane: base,
    controlPlaneAdmin: base + 1,
    upstream: base + 6,
    proxies: [
      { id: 'proxy-1', port: base + 2, adminPort: base + 4 },
      { id: 'proxy-2', port: base + 3, adminPort: base + 5 },
    ],
  };
}

/** Parses the command line; prints the usage and exits for --help or a bad flag. */
function readFlags(): { 'base-port'?: string; 'data-dir': string } {
  rejectFlagsTakenByNpm();
  try {
    const { values } = parseArgs({
      options: {
        'base-port': { type: 'string' },
        'data-dir': { type: 'string', default: './loom-data' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    return { 'base-port': values['base-port'], 'data-dir': values['data-dir'] };
  } catch (error) {
    fail(`error: ${(error as Error).message}\n${USAGE}`);
  }
}

/**
 * Exits when npm kept a fleet flag for itself. npm reads every flag before "--" as an option of
 * its own and exports it as `npm_config_NAME`. So `npm start --base-port=17400` would start the
 * fleet on the default ports, and `npm start --base-port 17400` passes only `17400` on.
 */
function rejectFlagsTakenByNpm(): void {
  const positionals = process.argv.slice(2).filter((argument) => !argument.startsWith('-'));
  for (const flag of ['base-port', 'data-dir']) {
    const value = process.env[`npm_config_${flag.replace('-', '_')}`];
    if (value === undefined) continue;
    const example = value !== 'true' ? value : (positionals[0] ?? 'VALUE');
    fail(
      `error: npm read --${flag} as an option of its own, so the fleet did not get it; ` +
        `give the fleet's flags after "--", such as: npm start -- --${flag} ${example}`,
    );
  }
}

function parseBasePort(value: string | undefined, source: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const base = Number(value);
  if (!Number.isInteger(base) || base < 1024 || base > 65535 - 6) {
    fail(
      `invalid ${source} "${value}"; expected a port from 1024 to 65529 (the fleet uses 7 ports)`,
    );
  }
  return base;
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

/** Returns the first fleet port that another process listens on, named with its part. */
async function findBusyPort(ports: FleetPorts): Promise<string | undefined> {
  const named: [number, string][] = [
    [ports.controlPlane, 'control plane'],
    [ports.controlPlaneAdmin, 'control-plane admin'],
    [ports.upstream, 'example upstream'],
    ...ports.proxies.flatMap((proxy): [number, string][] => [
      [proxy.port, proxy.id],
      [proxy.adminPort, `${proxy.id} admin`],
    ]),
  ];
  for (const [port, part] of named) {
    if (!(await isFree(port))) return `port ${port} on ${HOST} (${part})`;
  }
  return undefined;
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

const USAGE = `usage: npm start -- [--base-port N] [--data-dir DIR]

  --base-port N   use ports N to N+6 (env LOOM_FLEET_BASE_PORT); default 7400
                  and 7401 (control plane), 8080 and 8081 (proxies), 9901 and
                  9902 (proxy admin), 9001 (example upstream)
  --data-dir DIR  directory of the embedded store (default ./loom-data)
`;

const flags = readFlags();
const base =
  parseBasePort(flags['base-port'], '--base-port') ??
  parseBasePort(process.env.LOOM_FLEET_BASE_PORT, 'LOOM_FLEET_BASE_PORT');
const ports = fleetPorts(base);
const dataDir = flags['data-dir'];
const controlPlane = `${HOST}:${ports.controlPlane}`;

/**
 * Drain time of the fleet's proxies. A stop sends SIGKILL 5 s after SIGTERM (`LoomProcess.stop`),
 * so a proxy with the 30 s default would be killed mid-drain, before it logs the drain's end.
 */
const PROXY_DRAIN_TIMEOUT = '3s';

const children: LoomProcess[] = [];
let upstream: Server | undefined;
let running = false;
let stopping = false;

/** The folder of the quick-start copy that `quickstartFile` wrote, deleted when the fleet stops. */
let quickstartDir: string | undefined;
const stopAll = async (code: number) => {
  if (stopping) return;
  stopping = true;
  await Promise.all(children.map((child) => child.stop()));
  upstream?.close();
  // The copy names this fleet's upstream port, so it is no use once the fleet stops.
  if (quickstartDir !== undefined) rmSync(quickstartDir, { recursive: true, force: true });
  process.exit(code);
};
// Installed before any child starts, so a signal during the start stops what already runs.
process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));

/** Starts a Loom process whose exit stops the fleet, during the start or later. */
function startChild(name: string, args: string[], listens: number[]): LoomProcess {
  // A signal during the start must not leave a process behind that stopAll did not see.
  if (stopping) throw new Error(`not starting ${name}: the fleet is stopping`);
  const child = startLoom(name, [...args, '--log-pretty']);
  children.push(child);
  child.child.once('exit', (code, signal) => {
    if (stopping) return;
    const outcome = signal === null ? `exited with code ${code}` : `was killed by ${signal}`;
    const when = running ? '' : ` during start (ports ${listens.join(', ')}; see its error above)`;
    process.stderr.write(`${name} ${outcome}${when}; stopping the fleet\n`);
    // The control plane's errors name its own --data-dir, which reaches it through npm only
    // after "--".
    if (!running && name === 'control-plane') {
      process.stderr.write('The fleet takes --data-dir after "--": npm start -- --data-dir DIR\n');
    }
    void stopAll(1);
  });
  return child;
}

const busy = await findBusyPort(ports);
if (busy !== undefined) {
  // Suggests a base port other than the one in use, which may have come from --base-port.
  const next = (base ?? 7400) + 10_000;
  const suggested = next <= 65_535 - 6 ? next : 17_400;
  fail(
    `${busy} is in use; is another fleet running? Stop it (Ctrl-C), or run the fleet on other ` +
      `ports with "npm start -- --base-port ${suggested}" or LOOM_FLEET_BASE_PORT=${suggested}.`,
  );
}

const lockOwner = await runningLockOwner(dataDir).catch(() => undefined);
if (lockOwner !== undefined) {
  // The control plane's own message names --data-dir, which npm would take for itself here.
  const portFlag = base === undefined ? '' : ` --base-port ${base}`;
  fail(
    `data directory ${dataDir} is in use by process ${lockOwner} (lock file ` +
      `${join(dataDir, 'LOCK')}); is another fleet running? Stop it (Ctrl-C), or give this ` +
      `fleet its own directory with "npm start --${portFlag} --data-dir ${dataDir}-2".`,
  );
}

async function start(): Promise<void> {
  upstream = await startEchoUpstream(ports.upstream, 'users');
  startChild(
    'control-plane',
    [
      'control-plane',
      '--listen',
      controlPlane,
      '--admin-listen',
      `${HOST}:${ports.controlPlaneAdmin}`,
      '--data-dir',
      dataDir,
    ],
    [ports.controlPlane, ports.controlPlaneAdmin],
  );
  await waitForPort(HOST, ports.controlPlane);
  await waitForPort(HOST, ports.controlPlaneAdmin);
  for (const proxy of ports.proxies) {
    startChild(
      proxy.id,
      [
        'data-plane',
        '--control-plane',
        controlPlane,
        '--listen',
        `${HOST}:${proxy.port}`,
        '--admin-listen',
        `${HOST}:${proxy.adminPort}`,
        '--id',
        proxy.id,
        '--drain-timeout',
        PROXY_DRAIN_TIMEOUT,
      ],
      [proxy.port, proxy.adminPort],
    );
  }
  await Promise.all(
    ports.proxies.flatMap((proxy) => [
      waitForPort(HOST, proxy.port),
      waitForPort(HOST, proxy.adminPort),
    ]),
  );
}

start().then(
  () => {
    if (stopping) return;
    running = true;
    process.stdout.write(banner());
  },
  (error: unknown) => {
    if (stopping) return;
    process.stderr.write(`the fleet failed to start: ${(error as Error).message}\n`);
    void stopAll(1);
  },
);

/**
 * Returns the quick-start file to apply: `examples/quickstart.yaml`, or a copy whose upstream URL
 * names the moved upstream port. The copy is in a new private folder (mkdtemp), so no other user
 * can plant or replace it at a path they could predict.
 */
function quickstartFile(): string {
  const example = 'examples/quickstart.yaml';
  if (ports.upstream === 9001) return example;
  quickstartDir = mkdtempSync(join(tmpdir(), 'loom-quickstart-'));
  const copy = join(quickstartDir, 'quickstart.yaml');
  const text = readFileSync(example, 'utf8').replace(/\b9001\b/g, String(ports.upstream));
  writeFileSync(copy, text);
  return copy;
}

function banner(): string {
  const loomctl =
    ports.controlPlane === 7400 ? 'npx loomctl' : `npx loomctl --control-plane ${controlPlane}`;
  const quickstart = quickstartFile();
  const upstreamNote =
    quickstart === 'examples/quickstart.yaml'
      ? []
      : [`  (a copy of examples/quickstart.yaml with the upstream on port ${ports.upstream})`];
  return [
    '',
    'Loom fleet is running:',
    `  control plane   ${controlPlane}  (gRPC: proxies and loomctl; store: ${dataDir})`,
    `                  http://${HOST}:${ports.controlPlaneAdmin}/readyz  (admin: health and metrics)`,
    ...ports.proxies.map(
      (proxy) =>
        `  ${proxy.id}         http://${HOST}:${proxy.port}  ` +
        `(admin http://${HOST}:${proxy.adminPort}/readyz)`,
    ),
    `  upstream        http://${HOST}:${ports.upstream}  (example echo server)`,
    '',
    'In another terminal:',
    `  ${loomctl} apply -f ${quickstart}`,
    ...upstreamNote,
    `  curl http://${HOST}:${ports.proxies[0].port}/users/42`,
    '',
    'Press Ctrl-C to stop.',
    '',
  ].join('\n');
}
