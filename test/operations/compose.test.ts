import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { parse } from 'yaml';

import { ROOT, waitFor } from '../../scripts/processes.js';
import { httpGet } from '../helpers/net.js';
import { LocalPorts, rewriteAddresses } from './local-addresses.js';

const DEPLOY_DIR = join(ROOT, 'deploy');
/** Proxies started, as `docker compose up --scale proxy=2` would. */
const PROXY_REPLICAS = 2;

interface ComposeService {
  command: string[];
  depends_on?: string[] | Record<string, { condition: string }>;
  volumes?: string[];
  profiles?: string[];
  healthcheck?: { test: string[] };
}

interface ComposeFile {
  services: Record<string, ComposeService>;
}

/** One process of the fleet: a service replica. */
interface Replica {
  service: string;
  /** Owner of its ports: the service name, with `-N` for replicas after the first. */
  owner: string;
  child?: ChildProcess;
  log: string;
}

function dependencies(service: ComposeService): [string, string][] {
  const dependsOn = service.depends_on ?? [];
  if (Array.isArray(dependsOn)) return dependsOn.map((name) => [name, 'service_started']);
  return Object.entries(dependsOn).map(([name, value]) => [name, value.condition]);
}

/** Where Debian's etcd-server package installs etcd; the etcd tests need it too. */
const ETCD_BINARY = '/usr/bin/etcd';

describe('compose fleet as local processes', { timeout: 90_000, concurrency: 1 }, () => {
  const compose = parse(
    readFileSync(join(DEPLOY_DIR, 'docker-compose.yaml'), 'utf8'),
  ) as ComposeFile;
  const dir = mkdtempSync(join(tmpdir(), 'loom-compose-'));
  const ports = new LocalPorts();
  const replicas: Replica[] = [];
  const names = Object.keys(compose.services);

  const resolveHost = (host: string, port: number) =>
    names.includes(host) ? { owner: host, port } : undefined;

  /** Builds the service's command with local executables, ports, volumes and data directories. */
  async function localCommand(name: string, owner: string, command: string[]): Promise<string[]> {
    const service = compose.services[name];
    const mounts: [string, string][] = [];
    for (const volume of service.volumes ?? []) {
      const [source, target] = volume.split(':');
      if (source.startsWith('./')) {
        // A bind mount of a file next to the compose file; its addresses are rewritten too.
        const text = readFileSync(join(DEPLOY_DIR, source), 'utf8');
        const local = join(dir, `${owner}-${source.slice(2)}`);
        const lines = await Promise.all(
          text.split('\n').map((line) => rewriteAddresses(line, owner, ports, resolveHost)),
        );
        writeFileSync(local, lines.join('\n'));
        mounts.push([target, local]);
      } else {
        const local = join(dir, owner, source);
        mkdirSync(local, { recursive: true });
        mounts.push([target, local]);
      }
    }

    const args: string[] = [];
    for (const original of command.slice(1)) {
      let arg = await rewriteAddresses(original, owner, ports, resolveHost);
      // A listen address given as separate host and port flags.
      const port = /^--port=(\d+)$/.exec(arg);
      if (port) arg = `--port=${await ports.get(owner, Number(port[1]))}`;
      if (arg.endsWith('=0.0.0.0')) arg = arg.replace('0.0.0.0', '127.0.0.1');
      for (const [target, local] of mounts) {
        if (arg === target || arg.endsWith(`=${target}`)) arg = arg.replace(target, local);
      }
      args.push(arg);
    }
    switch (command[0]) {
      case 'etcd':
        return [ETCD_BINARY, ...args];
      case 'loom':
        return [process.execPath, join(ROOT, 'bin', 'loom.js'), ...args];
      case 'loomctl':
        return [process.execPath, join(ROOT, 'bin', 'loomctl.js'), ...args];
      case 'node':
        return [process.execPath, ...args];
      default:
        throw new Error(`service ${name} runs ${command[0]}, which the test cannot start`);
    }
  }

  function spawnReplica(replica: Replica, command: string[]): void {
    const fd = openSync(replica.log, 'a');
    // ETCD_* variables would override etcd's flags.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([key]) => !key.startsWith('ETCD_')),
    );
    try {
      replica.child = spawn(command[0], command.slice(1), {
        cwd: ROOT,
        env,
        stdio: ['ignore', fd, fd],
      });
    } finally {
      closeSync(fd);
    }
  }

  /** Runs a command to its end and returns its exit code. */
  function run(command: string[], log: string, timeoutMs = 30_000): Promise<number | null> {
    const fd = openSync(log, 'a');
    try {
      const child = spawn(command[0], command.slice(1), { cwd: ROOT, stdio: ['ignore', fd, fd] });
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      return new Promise((resolve) => {
        child.once('exit', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
    } finally {
      closeSync(fd);
    }
  }

  async function waitHealthy(name: string): Promise<void> {
    const check = compose.services[name].healthcheck?.test;
    assert.ok(check, `${name} has a healthcheck`);
    assert.equal(check[0], 'CMD', `${name} healthcheck is a CMD list`);
    const command = await localCommand(name, name, check.slice(1));
    const log = join(dir, `${name}.healthcheck.log`);
    await waitFor(`${name} to pass its healthcheck`, 30_000, async () => {
      return (await run(command, log, 5_000)) === 0;
    });
  }

  async function startService(name: string, count: number): Promise<void> {
    for (const [dependency, condition] of dependencies(compose.services[name])) {
      if (condition === 'service_healthy') await waitHealthy(dependency);
    }
    for (let index = 0; index < count; index++) {
      const owner = index === 0 ? name : `${name}-${index + 1}`;
      const replica: Replica = { service: name, owner, log: join(dir, `${owner}.log`) };
      spawnReplica(replica, await localCommand(name, owner, compose.services[name].command));
      replicas.push(replica);
    }
  }

  const logs = () =>
    replicas
      .map((replica) => {
        const text = readFileSync(replica.log, 'utf8');
        return `--- ${replica.owner}\n${text.split('\n').slice(-15).join('\n')}`;
      })
      .join('\n');

  before(async () => {
    const started = new Set<string>();
    const order = names.filter((name) => !compose.services[name].profiles);
    // Services start after their dependencies; etcd members start together.
    while (started.size < order.length) {
      const ready = order.filter(
        (name) =>
          !started.has(name) &&
          dependencies(compose.services[name]).every(([dependency]) => started.has(dependency)),
      );
      assert.ok(ready.length > 0, 'docker-compose.yaml has a dependency cycle');
      for (const name of ready) {
        await startService(name, name === 'proxy' ? PROXY_REPLICAS : 1);
        started.add(name);
      }
    }
  });

  after(async () => {
    await Promise.all(
      replicas.map(async (replica) => {
        const child = replica.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    rmSync(dir, { recursive: true, force: true });
  });

  test('compose services all run', () => {
    for (const replica of replicas) {
      assert.equal(replica.child?.exitCode, null, `${replica.owner} exited\n${logs()}`);
    }
    assert.equal(replicas.filter((replica) => replica.service === 'proxy').length, 2);
    assert.equal(replicas.filter((replica) => replica.service.startsWith('etcd-')).length, 3);
  });

  test('apply service configures proxies', async () => {
    const apply = compose.services.apply;
    for (const [dependency, condition] of dependencies(apply)) {
      if (condition === 'service_healthy') await waitHealthy(dependency);
    }
    const log = join(dir, 'apply.log');
    const code = await run(await localCommand('apply', 'apply', apply.command), log);
    assert.equal(code, 0, readFileSync(log, 'utf8'));

    for (const replica of replicas.filter((item) => item.service === 'proxy')) {
      const url = `http://127.0.0.1:${await ports.get(replica.owner, 8080)}/users/42`;
      await waitFor(`${replica.owner} to route /users/42`, 15_000, async () => {
        const response = await httpGet(url);
        return response.status === 200;
      }).catch((error: Error) => assert.fail(`${error.message}\n${logs()}`));
      const response = await httpGet(url);
      assert.equal((JSON.parse(response.body) as { upstream: string }).upstream, 'users');
    }
  });
});
