// Processes and measurements shared by the proxy benchmark (run.ts) and the profiler
// (profile.ts): nginx upstreams, a control plane with one Loom data plane, and wrk runs that
// read the CPU time of the measured processes from /proc.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { ROOT, waitFor, waitForPort } from '../../scripts/processes.js';
import { findFreePort } from '../../test/helpers/ports.js';

/** Kernel clock ticks per second, the unit of the CPU times in `/proc/PID/stat`. */
const CLK_TCK = 100;

/** One wrk measurement of a proxy. */
export interface Sample {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerRequest: number;
  rssMb: number;
}

/** Starts and stops the child processes of one benchmark run. */
export class BenchProcesses {
  readonly #children: ChildProcess[] = [];
  #stopping = false;

  /** Starts `command`, pinned to `core` with taskset when given; stderr is shown on a crash. */
  start(
    name: string,
    command: string,
    commandArgs: string[],
    core?: number,
    env?: NodeJS.ProcessEnv,
  ): ChildProcess {
    const [file, fileArgs] =
      core === undefined
        ? [command, commandArgs]
        : ['taskset', ['-c', String(core), command, ...commandArgs]];
    const child = spawn(file, fileArgs, {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: env ?? process.env,
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => {
      if (code !== 0 && code !== null && !this.#stopping) {
        process.stderr.write(`${name} exited ${code}: ${stderr}\n`);
      }
    });
    this.#children.push(child);
    return child;
  }

  /** Sends SIGTERM to every child still running. */
  stopAll(): void {
    this.#stopping = true;
    for (const child of this.#children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    }
  }
}

/** Returns an nginx configuration for one foreground process that keeps its files in `dir`. */
export function nginxConfig(dir: string, listen: string, body: string): string {
  return [
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    'user root;',
    `pid ${dir}/nginx-${Math.random()}.pid;`,
    `error_log ${dir}/nginx-error.log warn;`,
    'events { worker_connections 4096; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
    '  keepalive_requests 1000000;',
    listen,
    body,
    '}',
    '',
  ].join('\n');
}

/**
 * Starts one nginx process on `core` that returns a 12-byte body to every request on both
 * ports, and waits until it listens.
 */
export async function startNginxUpstream(
  processes: BenchProcesses,
  dir: string,
  ports: [number, number],
  core: number,
): Promise<ChildProcess> {
  const file = join(dir, 'upstream.conf');
  const server = `  server { listen 127.0.0.1:${ports[0]}; listen 127.0.0.1:${ports[1]}; location / { return 200 'hello world\\n'; } }`;
  writeFileSync(file, nginxConfig(dir, '', server));
  const child = processes.start('nginx upstream', 'nginx', ['-c', file, '-p', dir], core);
  await waitForPort('127.0.0.1', ports[0]);
  return child;
}

/** Settings of {@link startLoomProxy}. */
export interface LoomProxySettings {
  dir: string;
  /** Checkout whose `bin/loom.js` runs; default this one. */
  root?: string;
  /** Upstream targets the `bench` route balances over. */
  upstreamPorts: number[];
  /** Core of the data plane; the control plane runs on `controlPlaneCore`. */
  core: number | string;
  controlPlaneCore: number;
  /** Extra `loom data-plane` flags, such as `--workers 2`. */
  extraArgs?: string[];
  /** Options for node itself, such as `--cpu-prof`. */
  nodeArgs?: string[];
  /** Access log file; undefined turns the access log off. */
  accessLog?: string;
}

/** A Loom data plane of a benchmark run, fed by its own control plane. */
export interface LoomProxy {
  url: string;
  child: ChildProcess;
  adminPort: number;
}

/**
 * Starts a control plane on the embedded store and one `loom data-plane` process, applies the
 * benchmark configuration (two routes, request and response header actions, round robin over
 * every upstream port) and waits until the proxy is ready.
 */
export async function startLoomProxy(
  processes: BenchProcesses,
  settings: LoomProxySettings,
): Promise<LoomProxy> {
  const [port, adminPort, cp, cpAdmin] = await Promise.all(
    Array.from({ length: 4 }, () => findFreePort()),
  );
  const root = settings.root ?? ROOT;
  const loomJs = join(root, 'bin', 'loom.js');
  processes.start(
    'control plane',
    'node',
    [
      loomJs,
      'control-plane',
      '--listen',
      `127.0.0.1:${cp}`,
      '--admin-listen',
      `127.0.0.1:${cpAdmin}`,
      '--data-dir',
      join(settings.dir, `store-${port}`),
      '--log-level',
      'warn',
    ],
    settings.controlPlaneCore,
  );
  await waitForPort('127.0.0.1', cp);
  const args = [
    ...(settings.nodeArgs ?? []),
    loomJs,
    'data-plane',
    '--control-plane',
    `127.0.0.1:${cp}`,
    '--listen',
    `127.0.0.1:${port}`,
    '--admin-listen',
    `127.0.0.1:${adminPort}`,
    '--log-level',
    'warn',
    ...(settings.accessLog === undefined ? [] : ['--access-log', settings.accessLog]),
    ...(settings.extraArgs ?? []),
  ];
  const taskset = ['-c', String(settings.core), 'node', ...args];
  const child = processes.start('loom', 'taskset', taskset);

  const config = join(settings.dir, `loom-${port}.yaml`);
  writeFileSync(config, benchConfig(settings.upstreamPorts));
  const applied = spawnSync(
    'node',
    [join(root, 'bin', 'loomctl.js'), '--control-plane', `127.0.0.1:${cp}`, 'apply', '-f', config],
    { cwd: root, encoding: 'utf8' },
  );
  if (applied.status !== 0) throw new Error(`loomctl apply failed: ${applied.stderr}`);
  await waitFor('loom to apply the configuration', 30_000, async () => {
    const response = await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined);
    return response?.status === 200;
  });
  await waitForPort('127.0.0.1', port);
  return { url: `http://127.0.0.1:${port}/bench/hello`, child, adminPort };
}

/** Returns the Loom configuration that every benchmark run serves. */
function benchConfig(upstreamPorts: number[]): string {
  return [
    'upstreams:',
    '  - name: bench',
    '    balancer: round-robin',
    '    targets:',
    ...upstreamPorts.map((port) => `      - url: http://127.0.0.1:${port}`),
    'routes:',
    '  - name: other',
    '    paths: [/other/*rest]',
    '    upstream: bench',
    '  - name: bench',
    '    paths: [/bench/*rest]',
    '    upstream: bench',
    '    requestHeaders: { set: { x-bench: "1" }, remove: [x-debug] }',
    '    responseHeaders: { set: { x-proxy: loom }, remove: [server] }',
    '',
  ].join('\n');
}

/** Returns the PIDs of `pid` and of every process below it, read from /proc. */
export function processTree(pid: number): number[] {
  const result = spawnSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' });
  const children = new Map<number, number[]>();
  for (const line of result.stdout.split('\n')) {
    const [child, parent] = line.trim().split(/\s+/).map(Number);
    if (!Number.isInteger(child) || !Number.isInteger(parent)) continue;
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  const tree: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const next = queue.shift() as number;
    tree.push(next);
    queue.push(...(children.get(next) ?? []));
  }
  return tree;
}

/** User plus system CPU time of a process so far, in clock ticks; 0 once it has exited. */
export function cpuTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function rssMb(pid: number): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
    return line ? Number(line[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function parseLatencyMs(text: string): number {
  const match = /([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  if (match[2] === 'us') return value / 1000;
  if (match[2] === 's') return value * 1000;
  return value;
}

/**
 * Runs `wrk -t1 -c50 --latency` (or `connections` connections) pinned to core 0 against `url`
 * for `length` (such as `10s`) and returns its rates and latencies with the CPU time and RSS of
 * `pids` during the run.
 */
export function runWrk(
  name: string,
  url: string,
  pids: number[],
  length: string,
  connections = 50,
) {
  const before = pids.map(cpuTicks);
  const result = spawnSync(
    'taskset',
    ['-c', '0', 'wrk', '-t1', `-c${connections}`, `-d${length}`, '--latency', url],
    { encoding: 'utf8' },
  );
  const after = pids.map(cpuTicks);
  const output = result.stdout;
  const total = Number(/(\d+) requests in/.exec(output)?.[1] ?? 'NaN');
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(output);
  if (errors) process.stderr.write(`${name}: ${errors[0]}\n`);
  if (!/99%/.test(output)) process.stderr.write(`${name}: unexpected wrk output\n${output}\n`);
  const cpuSeconds = after.reduce((sum, ticks, i) => sum + ticks - before[i], 0) / CLK_TCK;
  const sample: Sample = {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1] ?? 'NaN'),
    p50Ms: parseLatencyMs(/50%\s+(\S+)/.exec(output)?.[1] ?? ''),
    p99Ms: parseLatencyMs(/99%\s+(\S+)/.exec(output)?.[1] ?? ''),
    cpuUsPerRequest: (cpuSeconds * 1e6) / total,
    rssMb: pids.reduce((sum, pid) => sum + rssMb(pid), 0),
  };
  return sample;
}

/**
 * Returns the middle value of a list, or the upper of the two middle values of an even list.
 * NaN entries (a wrk run that printed no such line) are left out; NaN when none is left.
 */
export function median(values: number[]): number {
  const sorted = values.filter((value) => !Number.isNaN(value)).sort((a, b) => a - b);
  return sorted.length === 0 ? Number.NaN : sorted[Math.floor(sorted.length / 2)];
}

/** Reads the load averages of the last 1, 5 and 15 minutes from /proc/loadavg. */
export function loadAverage(): [number, number, number] {
  const [one, five, fifteen] = readFileSync('/proc/loadavg', 'utf8').split(' ').map(Number);
  return [one, five, fifteen];
}
