import { startUpstream, Workspace, type Member } from '../faults/harness.js';
import { startEtcd, type EtcdProcess } from './etcd.js';

/** Two control-plane replicas on one etcd, an echo upstream, and the workspace of their logs. */
export interface Replicas {
  etcd: EtcdProcess;
  upstream: Awaited<ReturnType<typeof startUpstream>>;
  ws: Workspace;
  /** Replica `cp-a`. */
  first: Member;
  /** Replica `cp-b`. */
  second: Member;
  /** Stops every process of the workspace, the upstream and etcd. */
  close(): Promise<void>;
}

/** Starts etcd, an echo upstream and two control planes `cp-a` and `cp-b` on that etcd. */
export async function startReplicas(): Promise<Replicas> {
  const etcd = await startEtcd();
  const upstream = await startUpstream('echo');
  const ws = new Workspace();
  const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
  const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
  return {
    etcd,
    upstream,
    ws,
    first,
    second,
    async close() {
      await ws.close();
      upstream.server.close();
      await etcd.stop();
    },
  };
}
