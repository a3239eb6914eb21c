import type { AdminClient } from '../../cli/admin-client.js';
import type { ApplyResponse } from '../../proto/gen/loom/v1/admin.js';

/** Applies one upstream named `name` and no route, so that the control plane has a snapshot. */
export function applyUpstream(admin: AdminClient, name = 'users'): Promise<ApplyResponse> {
  return admin.apply({
    routes: [],
    upstreams: [{ name, targets: [{ url: 'http://127.0.0.1:9001', weight: 1 }] }],
    prune: false,
    dryRun: false,
    includeValues: false,
  });
}
