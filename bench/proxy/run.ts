// Measures Loom against other reverse proxies in one run: wrk and an nginx upstream pinned to
// core 0, each proxy alone on core 1. Prints a Markdown table, or one JSON object with --json.
// Usage: tsx bench/proxy/run.ts [--json] [--duration 10s] [--runs 3]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';

import { ROOT, waitFor, waitForPort } from '../../scripts/processes.js';
import { findFreePort } from '../../test/helpers/ports.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const duration = args[args.indexOf('--duration') + 1] ?? '10s';
const runs = Number(args.includes('--runs') ? args[args.indexOf('--runs') + 1] : 3);
const dir = mkdtempSync(join(tmpdir(), 'loom-bench-'));
const children: ChildProcess[] = [];
// `--import tsx` keeps the peer in one process; the tsx command line would fork a child.
const TSX_IMPORT = ['--import', 'tsx'];
const CLK_TCK = 100;

interface Peer {
  name: string;
  url: string;
  /** PIDs whose CPU time and memory count as the proxy's. */
  pids: number[];
}

interface Sample {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerRequest: number;
  rssMb: number;
}

function start(name: string, command: string, commandArgs: string[], core?: number): ChildProcess {
  const [file, fileArgs] =
    core === undefined
      ? [command, commandArgs]
      : ['taskset', ['-c', String(core), command, ...commandArgs]];
  const child = spawn(file, fileArgs, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.once('exit', (code) => {
    if (code !== 0 && code !== null && !stopping)
      process.stderr.write(`${name} exited ${code}: ${stderr}\n`);
  });
  children.push(child);
  return child;
}

let stopping = false;
function stopAll(): void {
  stopping = true;
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  }
}

function nginxConfig(listen: string, body: string): string {
  return `daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\npid ${dir}/nginx-${Math.random()}.pid;\nerror_log ${dir}/nginx-error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;\n  keepalive_requests 1000000;\n${listen}\n${body}\n}\n`;
}

function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function rssMb(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return line ? Number(line[1]) / 1024 : 0;
}

function parseLatencyMs(text: string): number {
  const match = /([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value;
}

function runWrk(peer: Peer, length: string): Sample {
  const before = peer.pids.map(cpuTicks);
  const result = spawnSync(
    'taskset',
    ['-c', '0', 'wrk', '-t1', '-c50', `-d${length}`, '--latency', peer.url],
    { encoding: 'utf8' },
  );
  const after = peer.pids.map(cpuTicks);
  const output = result.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1] ?? 'NaN');
  const total = Number(/(\d+) requests in/.exec(output)?.[1] ?? 'NaN');
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(output);
  if (errors) process.stderr.write(`${peer.name}: ${errors[0]}\n`);
  if (!/99%/.test(output)) process.stderr.write(`${peer.name}: unexpected wrk output\n${output}\n`);
  const cpuSeconds = after.reduce((sum, ticks, i) => sum + ticks - before[i], 0) / CLK_TCK;
  return {
    rps,
    p50Ms: parseLatencyMs(/50%\s+(\S+)/.exec(output)?.[1] ?? ''),
    p99Ms: parseLatencyMs(/99%\s+(\S+)/.exec(output)?.[1] ?? ''),
    cpuUsPerRequest: (cpuSeconds * 1e6) / total,
    rssMb: peer.pids.reduce((sum, pid) => sum + rssMb(pid), 0),
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const [upA, upB, nginxPort, minimal, httpProxyPort, fastify, loom, loomAdmin, cp, cpAdmin] =
    await Promise.all(Array.from({ length: 10 }, () => findFreePort()));
  const upstreamConf = join(dir, 'upstream.conf');
  writeFileSync(
    upstreamConf,
    nginxConfig(
      '',
      `  server { listen 127.0.0.1:${upA}; listen 127.0.0.1:${upB}; location / { return 200 'hello world\\n'; } }`,
    ),
  );
  const proxyConf = join(dir, 'proxy.conf');
  writeFileSync(
    proxyConf,
    nginxConfig(
      `  upstream backend { server 127.0.0.1:${upA}; keepalive 64; }`,
      `  server { listen 127.0.0.1:${nginxPort}; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
    ),
  );
  const upstreamProcess = start('nginx upstream', 'nginx', ['-c', upstreamConf, '-p', dir], 0);
  await waitForPort('127.0.0.1', upA);
  const upstreamUrl = `http://127.0.0.1:${upA}`;

  const peers: Peer[] = [
    {
      name: 'direct (nginx upstream)',
      url: `${upstreamUrl}/bench/hello`,
      pids: [upstreamProcess.pid ?? 0],
    },
  ];
  const nginx = start('nginx proxy', 'nginx', ['-c', proxyConf, '-p', dir], 1);
  peers.push({
    name: 'nginx proxy_pass',
    url: `http://127.0.0.1:${nginxPort}/bench/hello`,
    pids: [nginx.pid ?? 0],
  });
  for (const [name, file, port] of [
    ['minimal node:http + undici.Pool', 'minimal-proxy.ts', minimal],
    ['http-proxy (keep-alive agent)', 'http-proxy.ts', httpProxyPort],
    ['@fastify/http-proxy', 'fastify-proxy.ts', fastify],
  ] as const) {
    const child = start(
      name,
      'node',
      [...TSX_IMPORT, join(ROOT, 'bench', 'proxy', file), String(port), upstreamUrl],
      1,
    );
    peers.push({ name, url: `http://127.0.0.1:${port}/bench/hello`, pids: [child.pid ?? 0] });
  }

  // Loom: a control plane on core 0 and one data-plane process alone on core 1.
  start(
    'control plane',
    'node',
    [
      join(ROOT, 'bin', 'loom.js'),
      'control-plane',
      '--listen',
      `127.0.0.1:${cp}`,
      '--admin-listen',
      `127.0.0.1:${cpAdmin}`,
      '--data-dir',
      join(dir, 'store'),
      '--log-level',
      'warn',
    ],
    0,
  );
  await waitForPort('127.0.0.1', cp);
  const accessLog = join(dir, 'access.log');
  const loomChild = start(
    'loom',
    'node',
    [
      join(ROOT, 'bin', 'loom.js'),
      'data-plane',
      '--control-plane',
      `127.0.0.1:${cp}`,
      '--listen',
      `127.0.0.1:${loom}`,
      '--admin-listen',
      `127.0.0.1:${loomAdmin}`,
      '--access-log',
      accessLog,
      '--log-level',
      'warn',
    ],
    1,
  );
  const config = join(dir, 'loom.yaml');
  writeFileSync(
    config,
    [
      'upstreams:',
      '  - name: bench',
      '    balancer: round-robin',
      '    targets:',
      `      - url: http://127.0.0.1:${upA}`,
      `      - url: http://127.0.0.1:${upB}`,
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
    ].join('\n'),
  );
  const applied = spawnSync(
    'node',
    [join(ROOT, 'bin', 'loomctl.js'), '--control-plane', `127.0.0.1:${cp}`, 'apply', '-f', config],
    { cwd: ROOT, encoding: 'utf8' },
  );
  if (applied.status !== 0) throw new Error(`loomctl apply failed: ${applied.stderr}`);
  await waitFor('loom to apply the configuration', 30_000, async () => {
    const response = await fetch(`http://127.0.0.1:${loomAdmin}/readyz`).catch(() => undefined);
    return response?.status === 200;
  });
  peers.push({
    name: 'Loom (routing, header actions, round robin, metrics, access log)',
    url: `http://127.0.0.1:${loom}/bench/hello`,
    pids: [loomChild.pid ?? 0],
  });
  for (const peer of peers) await waitForPort('127.0.0.1', Number(new URL(peer.url).port));

  for (const peer of peers) runWrk(peer, '3s');
  const samples = new Map<string, Sample[]>(peers.map((peer) => [peer.name, []]));
  for (let round = 0; round < runs; round++) {
    for (const peer of peers) samples.get(peer.name)?.push(runWrk(peer, duration));
  }

  const results = peers.map((peer) => {
    const list = samples.get(peer.name) ?? [];
    return {
      name: peer.name,
      rps: Math.round(median(list.map((s) => s.rps))),
      p50Ms: median(list.map((s) => s.p50Ms)),
      p99Ms: median(list.map((s) => s.p99Ms)),
      cpuUsPerRequest: Number(median(list.map((s) => s.cpuUsPerRequest)).toFixed(1)),
      rssMb: Number(median(list.map((s) => s.rssMb)).toFixed(1)),
    };
  });
  const machine = {
    nproc: cpus().length,
    cpu: cpus()[0]?.model,
    node: process.version,
    command: `wrk -t1 -c50 -d${duration} --latency, ${runs} interleaved runs, median`,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify({ machine, results })}\n`);
  } else {
    process.stdout.write(
      `${machine.nproc} cores, ${machine.cpu}, Node.js ${machine.node}; ${machine.command}\n\n`,
    );
    process.stdout.write(
      '| proxy | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB |\n| --- | ---: | ---: | ---: | ---: | ---: |\n',
    );
    for (const r of results) {
      process.stdout.write(
        `| ${r.name} | ${r.rps} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.cpuUsPerRequest} | ${r.rssMb} |\n`,
      );
    }
  }
}

process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
main()
  .catch((err: unknown) => {
    process.stderr.write(`benchmark failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    stopAll();
    setTimeout(() => rmSync(dir, { recursive: true, force: true }), 500);
  });
