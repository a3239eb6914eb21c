import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Namespace, Secret, Service } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';

import { WORKER_EXIT_GRACE_MS } from '../../data-plane/workers/worker-pool.js';
import { ROOT, startLoom, waitFor, type LoomProcess } from '../../scripts/processes.js';
import { createTestPki, type TestPki } from '../faults/certs.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { httpGet } from '../helpers/net.js';
import { LocalPorts, rewriteAddresses } from './local-addresses.js';
import { StrictFieldCheck } from './strict-fields.js';

const MANIFEST_DIR = join(ROOT, 'deploy', 'kubernetes');
const NAMESPACE = 'loom';

/** One Kubernetes object as parsed from YAML; only the fields the checks read are typed. */
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  file: string;
}

interface ContainerPort {
  name?: string;
  containerPort: number;
}

interface Probe {
  httpGet?: { path: string; port: string | number };
  periodSeconds?: number;
  failureThreshold?: number;
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: ContainerPort[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string }[];
}

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    containers: Container[];
    terminationGracePeriodSeconds?: number;
    volumes?: { name: string; secret?: { secretName: string } }[];
  };
}

type Validator = (data: Record<string, unknown>) => void;

const VALIDATORS: Record<string, Validator> = {
  'v1/Namespace': (data) => new Namespace(data).validate(),
  'v1/Service': (data) => new Service(data as never).validate(),
  'v1/Secret': (data) => new Secret(data).validate(),
  'apps/v1/Deployment': (data) => new Deployment(data).validate(),
  'apps/v1/StatefulSet': (data) => new StatefulSet(data as never).validate(),
  'autoscaling/v2/HorizontalPodAutoscaler': (data) =>
    new HorizontalPodAutoscaler(data as never).validate(),
  'policy/v1/PodDisruptionBudget': (data) => new PodDisruptionBudget(data).validate(),
};

const strictFields = new StrictFieldCheck();

/** Parses every YAML document of `text`. Duplicate keys are parse errors, as in strict kubectl. */
function parseManifests(text: string, file: string): Manifest[] {
  const manifests: Manifest[] = [];
  for (const document of parseAllDocuments(text)) {
    assert.deepEqual(document.errors, [], `${file} does not parse`);
    const value = document.toJS() as Omit<Manifest, 'file'> | null;
    if (value !== null) manifests.push({ ...value, file });
  }
  return manifests;
}

function loadManifests(): Manifest[] {
  return readdirSync(MANIFEST_DIR)
    .filter((name) => name.endsWith('.yaml'))
    .flatMap((file) => parseManifests(readFileSync(join(MANIFEST_DIR, file), 'utf8'), file));
}

/**
 * Checks one object against its Kubernetes schema and, like `kubectl apply --validate=strict`,
 * rejects fields the API does not define. The error names the schema violation or the fields.
 */
function validate(manifest: Manifest): void {
  const kind = `${manifest.apiVersion}/${manifest.kind}`;
  const validator = VALIDATORS[kind];
  assert.ok(validator, `${manifest.file}: no schema for ${manifest.apiVersion} ${manifest.kind}`);
  const data: Record<string, unknown> = { ...manifest };
  delete data.file;
  validator(data);

  const unknown = strictFields.unknownFields(kind, data);
  if (unknown.length > 0) {
    const name = `${manifest.kind} ${manifest.metadata.name}`;
    throw new Error(`${manifest.file}: ${name} has unknown fields: ${unknown.join(', ')}`);
  }
}

function template(manifest: Manifest): PodTemplate {
  return (manifest.spec as { template: PodTemplate }).template;
}

function find(manifests: Manifest[], kind: string, name: string): Manifest {
  const manifest = manifests.find((item) => item.kind === kind && item.metadata.name === name);
  assert.ok(manifest, `no ${kind} named ${name}`);
  return manifest;
}

function workloads(manifests: Manifest[]): Manifest[] {
  return manifests.filter((item) => item.kind === 'Deployment' || item.kind === 'StatefulSet');
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

function containerPort(container: Container, port: string | number): number {
  if (typeof port === 'number') return port;
  const named = container.ports?.find((item) => item.name === port);
  assert.ok(named, `container ${container.name} has no port named ${port}`);
  return named.containerPort;
}

function seconds(duration: string): number {
  const match = /^(\d+)s$/.exec(duration);
  assert.ok(match, `duration ${duration} is not in seconds`);
  return Number(match[1]);
}

describe('kubernetes manifests', () => {
  const manifests = loadManifests();

  test('manifests match kubernetes schemas', () => {
    assert.ok(manifests.length >= 10, `only ${manifests.length} objects found`);
    for (const manifest of manifests) {
      assert.doesNotThrow(() => validate(manifest), `${manifest.file}: ${manifest.kind}`);
      if (manifest.kind !== 'Namespace') {
        assert.equal(manifest.metadata.namespace, NAMESPACE, `${manifest.metadata.name}`);
      }
    }
  });

  test('schema check rejects broken objects', () => {
    const proxy = find(manifests, 'Deployment', 'loom-proxy');
    const wrongType = structuredClone(proxy);
    (wrongType.spec as { replicas: unknown }).replicas = 'three';
    assert.throws(() => validate(wrongType), /replicas/);

    const missingImage = structuredClone(proxy);
    delete (template(missingImage).spec.containers[0] as { image?: string }).image;
    delete (template(missingImage).spec.containers[0] as { name?: string }).name;
    assert.throws(() => validate(missingImage), /name/);
  });

  test('strict check rejects unknown fields', () => {
    const text = readFileSync(join(MANIFEST_DIR, 'proxy.yaml'), 'utf8');
    assert.match(text, /readinessProbe:\n\s+httpGet:/);
    const misspelled = text.replace(/(readinessProbe:\n\s+)httpGet:/, '$1httpGett:');
    const proxy = find(parseManifests(misspelled, 'proxy.yaml'), 'Deployment', 'loom-proxy');
    assert.throws(
      () => validate(proxy),
      /proxy\.yaml: Deployment loom-proxy has unknown fields: spec\.template\.spec\.containers\[0\]\.readinessProbe\.httpGett$/,
    );

    const extraTopLevel = structuredClone(find(manifests, 'Service', 'loom-proxy'));
    (extraTopLevel as unknown as Record<string, unknown>).specs = {};
    (extraTopLevel.metadata as Record<string, unknown>).label = { app: 'loom' };
    assert.throws(() => validate(extraTopLevel), /unknown fields: metadata\.label, specs$/);
  });

  test('strict check accepts map keys', () => {
    const proxy = structuredClone(find(manifests, 'Deployment', 'loom-proxy'));
    template(proxy).metadata.labels['example.com/any-key'] = 'x';
    const secret = structuredClone(find(manifests, 'Secret', 'loom-proxy-tls'));
    (secret as unknown as { stringData: Record<string, string> }).stringData = { 'any.key': 'x' };
    assert.doesNotThrow(() => validate(proxy));
    assert.doesNotThrow(() => validate(secret));
  });

  test('services and selectors line up', () => {
    for (const service of manifests.filter((item) => item.kind === 'Service')) {
      const spec = service.spec as {
        selector: Record<string, string>;
        ports: { name: string; targetPort: string | number }[];
      };
      const backends = workloads(manifests).filter((item) =>
        selects(spec.selector, template(item).metadata.labels),
      );
      assert.equal(backends.length, 1, `Service ${service.metadata.name} selects one workload`);
      const container = template(backends[0]).spec.containers[0];
      for (const port of spec.ports) containerPort(container, port.targetPort);
    }
    for (const budget of manifests.filter((item) => item.kind === 'PodDisruptionBudget')) {
      const selector = (budget.spec as { selector: { matchLabels: Record<string, string> } })
        .selector.matchLabels;
      assert.ok(
        workloads(manifests).some((item) => selects(selector, template(item).metadata.labels)),
        `PodDisruptionBudget ${budget.metadata.name} selects a workload`,
      );
    }
    for (const workload of workloads(manifests)) {
      const selector = (workload.spec as { selector: { matchLabels: Record<string, string> } })
        .selector.matchLabels;
      assert.ok(selects(selector, template(workload).metadata.labels), workload.metadata.name);
      for (const volume of template(workload).spec.volumes ?? []) {
        if (volume.secret) find(manifests, 'Secret', volume.secret.secretName);
      }
    }
    const autoscaler = find(manifests, 'HorizontalPodAutoscaler', 'loom-proxy');
    const target = (autoscaler.spec as { scaleTargetRef: { kind: string; name: string } })
      .scaleTargetRef;
    find(manifests, target.kind, target.name);
    assert.equal(
      (find(manifests, 'Deployment', 'loom-control-plane').spec as { replicas: number }).replicas,
      2,
    );
  });

  test('proxy grace period covers drain', () => {
    const pod = template(find(manifests, 'Deployment', 'loom-proxy'));
    const drain = pod.spec.containers[0].args?.find((arg) => arg.startsWith('--drain-timeout='));
    assert.ok(drain, 'the proxy sets --drain-timeout');
    // A proxy with --workers kills a worker still running WORKER_EXIT_GRACE_MS after the drain
    // deadline. Its primary then writes the snapshot cache file and exits. The 2 s for that is
    // an estimate with headroom, because it took under 20 ms in a local run. The kubelet's
    // SIGKILL must come after all of it, or it cuts the exit short.
    const grace = pod.spec.terminationGracePeriodSeconds;
    assert.ok(grace !== undefined, 'the proxy sets terminationGracePeriodSeconds');
    const needed = seconds(drain.split('=')[1]) + WORKER_EXIT_GRACE_MS / 1_000 + 2;
    assert.ok(grace >= needed, `terminationGracePeriodSeconds ${grace} is below ${needed}`);
    // The port stays open at least until the failed readiness probe takes the pod out of the
    // Service, and the accept grace leaves most of the drain to requests in flight.
    const container = pod.spec.containers[0];
    const accept = container.args?.find((arg) => arg.startsWith('--drain-accept-grace='));
    assert.ok(accept, 'the proxy sets --drain-accept-grace');
    const acceptSeconds = seconds(accept.split('=')[1]);
    const probe = container.readinessProbe;
    assert.ok(probe?.periodSeconds, 'the readiness probe sets periodSeconds');
    assert.ok(probe.failureThreshold, 'the readiness probe sets failureThreshold');
    assert.ok(acceptSeconds >= probe.periodSeconds * probe.failureThreshold, accept);
    assert.ok(acceptSeconds <= seconds(drain.split('=')[1]) / 2, accept);
  });
});

describe('kubernetes probes on real processes', { timeout: 60_000, concurrency: 1 }, () => {
  const manifests = loadManifests();
  const dir = mkdtempSync(join(tmpdir(), 'loom-kubernetes-'));
  const ports = new LocalPorts();
  const processes: LoomProcess[] = [];
  let etcd: EtcdProcess;
  let pki: TestPki;

  /** Files each Secret provides, from the test PKI. */
  const secretFiles = (): Record<string, Record<string, string>> => ({
    'loom-control-plane-tls': {
      'tls.crt': pki.server.cert,
      'tls.key': pki.server.key,
      'ca.crt': pki.ca,
    },
    'loom-proxy-tls': { 'tls.crt': pki.proxy.cert, 'tls.key': pki.proxy.key, 'ca.crt': pki.ca },
  });

  /** Resolves a service DNS name of the manifests to the workload and container port behind it. */
  const resolveHost = (host: string, port: number) => {
    if (host.endsWith(`.loom-etcd.${NAMESPACE}.svc`)) return { owner: 'etcd', port };
    const service = manifests.find(
      (item) => item.kind === 'Service' && item.metadata.name === host.split('.')[0],
    );
    if (service === undefined) return undefined;
    const spec = service.spec as {
      selector: Record<string, string>;
      ports: { port: number; targetPort: string | number }[];
    };
    const backend = workloads(manifests).find((item) =>
      selects(spec.selector, template(item).metadata.labels),
    );
    const servicePort = spec.ports.find((item) => item.port === port);
    if (backend === undefined || servicePort === undefined) return undefined;
    const container = template(backend).spec.containers[0];
    return { owner: backend.metadata.name, port: containerPort(container, servicePort.targetPort) };
  };

  /** Turns a container's args into local ones: addresses, `$(VAR)` and mounted Secrets. */
  async function localArgs(workload: Manifest): Promise<string[]> {
    const pod = template(workload).spec;
    const container = pod.containers[0];
    const variables = new Map<string, string>();
    for (const variable of container.env ?? []) {
      const fromPodName = variable.valueFrom?.fieldRef?.fieldPath === 'metadata.name';
      variables.set(
        variable.name,
        fromPodName ? `${workload.metadata.name}-0` : (variable.value ?? ''),
      );
    }
    const mounts: [string, string][] = [];
    for (const mount of container.volumeMounts ?? []) {
      const volume = pod.volumes?.find((item) => item.name === mount.name);
      const local = join(dir, workload.metadata.name, mount.name);
      mkdirSync(local, { recursive: true });
      const secretName = volume?.secret?.secretName;
      if (secretName !== undefined) {
        const files = secretFiles()[secretName];
        assert.ok(files, `no test material for Secret ${secretName}`);
        for (const [key, source] of Object.entries(files)) copyFileSync(source, join(local, key));
      }
      mounts.push([mount.mountPath, local]);
    }

    const args: string[] = [];
    for (const original of container.args ?? []) {
      let arg = original.replace(/\$\((\w+)\)/g, (_, name: string) => variables.get(name) ?? '');
      // A mounted path starts the value: `--flag=/mount/path/file`.
      const mount = mounts.find(([mountPath]) => arg.includes(`=${mountPath}/`));
      if (mount) arg = arg.replace(`=${mount[0]}/`, `=${mount[1]}/`);
      args.push(await rewriteAddresses(arg, workload.metadata.name, ports, resolveHost));
    }
    return args;
  }

  async function start(name: string): Promise<void> {
    const workload = find(manifests, 'Deployment', name);
    assert.deepEqual(template(workload).spec.containers[0].command, ['loom']);
    processes.push(startLoom(name, await localArgs(workload), join(dir, `${name}.log`)));
  }

  async function probe(name: string, kind: 'readinessProbe' | 'livenessProbe'): Promise<string> {
    const container = template(find(manifests, 'Deployment', name)).spec.containers[0];
    const httpProbe = container[kind]?.httpGet;
    assert.ok(httpProbe, `${name} has an HTTP ${kind}`);
    const port = await ports.get(name, containerPort(container, httpProbe.port));
    return `http://127.0.0.1:${port}${httpProbe.path}`;
  }

  const logs = () =>
    ['loom-control-plane', 'loom-proxy']
      .map((name) => {
        try {
          return `--- ${name}\n${readFileSync(join(dir, `${name}.log`), 'utf8')}`;
        } catch {
          return `--- ${name}: no log`;
        }
      })
      .join('\n');

  before(async () => {
    etcd = await startEtcd();
    ports.set('etcd', 2379, etcd.clientPort);
    pki = createTestPki();
    await start('loom-control-plane');
    await start('loom-proxy');
  });

  after(async () => {
    await Promise.all(processes.map((child) => child.stop()));
    await etcd?.stop();
    pki?.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const name of ['loom-control-plane', 'loom-proxy']) {
    test(`${name} probes answer 200`, async () => {
      const liveness = await probe(name, 'livenessProbe');
      const readiness = await probe(name, 'readinessProbe');
      await waitFor(`${liveness} to answer 200`, 20_000, async () => {
        return (await httpGet(liveness)).status === 200;
      }).catch((error: Error) => assert.fail(`${error.message}\n${logs()}`));
      await waitFor(`${readiness} to answer 200`, 20_000, async () => {
        return (await httpGet(readiness)).status === 200;
      }).catch((error: Error) => assert.fail(`${error.message}\n${logs()}`));
    });
  }

  test('proxy metrics on the probe port', async () => {
    const readiness = new URL(await probe('loom-proxy', 'readinessProbe'));
    const metrics = await httpGet(`${readiness.origin}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /^loom_proxy_control_plane_connected 1$/m);
  });
});
