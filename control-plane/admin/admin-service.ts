import type {
  sendUnaryData,
  ServerUnaryCall,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';

import { LoomError } from '../../common/errors.js';
import { toServiceError } from '../../common/grpc-errors.js';
import type { Logger } from '../../common/logger.js';
import type {
  ApplyRequest,
  ApplyResponse,
  DeleteRequest,
  DeleteResponse,
  GetConfigResponse,
  StatusResponse,
} from '../../proto/gen/loom/v1/admin.js';
import { ConfigState } from '../snapshot/config-state.js';
import type { SnapshotCache } from '../snapshot/snapshot-cache.js';
import type { ProxyRegistry } from '../stream/proxy-registry.js';
import type { Store } from '../store/store.js';
import { planApply, planDelete, type Plan, type StoredConfig } from './plan.js';

/** How often an apply without `if_version` re-plans after a concurrent write. */
const MAX_PLAN_ATTEMPTS = 3;

interface AdminDependencies {
  store: Store;
  prefix: string;
  cache: SnapshotCache;
  registry: ProxyRegistry;
  logger: Logger;
}

/**
 * The operator API behind loomctl. Every write reads the stored config at one
 * revision, validates the whole result, and commits on the condition that no
 * Loom key changed since that revision, so a concurrent apply can never slip
 * in between validation and write.
 */
export class AdminApi {
  readonly #deps: AdminDependencies;
  readonly #logger: Logger;

  constructor(deps: AdminDependencies) {
    this.#deps = deps;
    this.#logger = deps.logger.child({ component: 'admin' });
  }

  async apply(request: ApplyRequest): Promise<ApplyResponse> {
    const epoch = await this.#deps.store.epoch();
    const { plan, revision } = await this.#commitPlanned(
      request.ifVersion,
      request.dryRun,
      (stored) =>
        planApply(this.#deps.prefix, stored, request, request.prune),
    );
    const committed = !request.dryRun && plan.operations.length > 0;
    if (committed) {
      this.#logger.info({ epoch, version: revision, changes: plan.changes.length }, 'apply committed');
    }
    return { version: revision, epoch, changes: plan.changes, committed };
  }

  async delete(request: DeleteRequest): Promise<DeleteResponse> {
    if (request.kind !== 'route' && request.kind !== 'upstream') {
      throw new LoomError('LOOM_INVALID_ARGUMENT', `unknown kind "${request.kind}"; use route or upstream`);
    }
    const kind = request.kind;
    const { plan, revision } = await this.#commitPlanned(request.ifVersion, false, (stored) =>
      planDelete(this.#deps.prefix, stored, kind, request.name),
    );
    this.#logger.info({ version: revision, kind, name: request.name }, 'delete committed');
    return { version: revision, changes: plan.changes };
  }

  async getConfig(): Promise<GetConfigResponse> {
    const [epoch, stored] = await Promise.all([this.#deps.store.epoch(), this.#readStored()]);
    return { version: stored.revision, epoch, routes: stored.routes, upstreams: stored.upstreams };
  }

  status(): StatusResponse {
    const snapshot = this.#deps.cache.current?.snapshot;
    return {
      version: snapshot?.version ?? 0,
      epoch: snapshot?.epoch ?? '',
      proxies: this.#deps.registry.list(),
    };
  }

  async #commitPlanned(
    ifVersion: number,
    dryRun: boolean,
    makePlan: (stored: StoredConfig) => Plan,
  ): Promise<{ plan: Plan; revision: number }> {
    for (let attempt = 1; ; attempt++) {
      const stored = await this.#readStored();
      const plan = makePlan(stored);
      if (dryRun || plan.operations.length === 0) return { plan, revision: stored.revision };

      try {
        const revision = await this.#deps.store.commit(plan.operations, {
          ifRevision: ifVersion > 0 ? ifVersion : stored.revision,
          prefix: this.#deps.prefix,
        });
        return { plan, revision };
      } catch (error) {
        const retry =
          error instanceof LoomError &&
          error.code === 'LOOM_VERSION_CONFLICT' &&
          ifVersion === 0 &&
          attempt < MAX_PLAN_ATTEMPTS;
        if (!retry) throw error;
      }
    }
  }

  async #readStored(): Promise<StoredConfig> {
    const range = await this.#deps.store.range(this.#deps.prefix);
    const state = new ConfigState(this.#deps.prefix, this.#logger);
    state.reset(range);
    return { revision: range.revision, routes: state.routes(), upstreams: state.upstreams() };
  }
}

/** Wraps an AdminApi as the AdminService implementation of a gRPC server. */
export function createAdminService(api: AdminApi, logger: Logger): UntypedServiceImplementation {
  const unary =
    <Req, Res>(handler: (request: Req) => Promise<Res> | Res) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      Promise.resolve()
        .then(() => handler(call.request))
        .then(
          (response) => callback(null, response),
          (error: unknown) => {
            if (!(error instanceof LoomError)) logger.error({ err: error }, 'admin call failed');
            callback(toServiceError(error), null);
          },
        );
    };
  return {
    apply: unary((request: ApplyRequest) => api.apply(request)),
    getConfig: unary(() => api.getConfig()),
    delete: unary((request: DeleteRequest) => api.delete(request)),
    status: unary(() => api.status()),
  };
}
