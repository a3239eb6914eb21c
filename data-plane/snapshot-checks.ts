import { LoomError } from '../common/errors.js';
import { BALANCERS, METHOD_PATTERN, NAME_PATTERN } from '../config/limits.js';
import { describeHashOnProblem, describePrefixProblem, shortened } from '../config/validate.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';
import type { Snapshot } from '../proto/gen/loom/v1/snapshot.js';

/*
 * Checks of snapshot values that `loomctl apply` rejects but that a value written straight
 * into the store, or a faulty control plane, can carry. Each check is per value and cheap, so
 * a build runs them on every route it compiles instead of parsing the snapshot with the schema.
 */

/**
 * Rejects a snapshot whose epoch is blank or whose version is not a non-negative safe integer.
 * Both stores fill the epoch with a random UUID (etcd prefixes its cluster id), and a new
 * embedded store sends version 0, so neither is ever blank or negative. A blank epoch would
 * count as a new store history and replace the table whatever its version.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` naming the field and value.
 */
export function checkSnapshotVersion(snapshot: Snapshot): void {
  if (!/\S/.test(snapshot.epoch)) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `invalid snapshot epoch ${JSON.stringify(snapshot.epoch)}: the epoch is blank, and ` +
        'every control plane sends the non-blank epoch of its store',
    );
  }
  if (!Number.isSafeInteger(snapshot.version) || snapshot.version < 0) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `invalid snapshot version ${snapshot.version}: expected an integer from 0 to ` +
        `${Number.MAX_SAFE_INTEGER}`,
    );
  }
}

/**
 * Rejects a route whose name, methods, stripPrefix or addPrefix `loomctl apply` rejects.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` naming the route, the field and the value.
 */
export function checkRouteFields(route: Route): void {
  if (!NAME_PATTERN.test(route.name)) {
    rejectRouteField(route, 'name', route.name, NAME_RULE);
  }
  const methods = route.methods;
  for (let index = 0; index < methods.length; index++) {
    if (!METHOD_PATTERN.test(methods[index])) {
      rejectRouteField(
        route,
        `methods[${index}]`,
        methods[index],
        'expected an upper-case token such as GET',
      );
    }
  }
  checkRoutePrefix(route, 'stripPrefix', route.stripPrefix);
  checkRoutePrefix(route, 'addPrefix', route.addPrefix);
}

// The checks run on every route a build compiles, so they allocate no closure or array.
function checkRoutePrefix(route: Route, field: string, prefix: string | undefined): void {
  if (prefix === undefined) return;
  const problem = describePrefixProblem(prefix);
  if (problem !== undefined) rejectRouteField(route, field, prefix, problem);
}

function rejectRouteField(route: Route, field: string, value: string, reason: string): never {
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(shortened(route.name))}: invalid ${field} ` +
      `${JSON.stringify(shortened(value))}: ${reason}, as loomctl apply rejects`,
  );
}

/** Adds the problems of an upstream's name, balancer and hashOn to `problems`. */
export function checkUpstreamFields(upstream: Upstream, problems: string[]): void {
  const name = JSON.stringify(shortened(upstream.name));
  if (!NAME_PATTERN.test(upstream.name)) {
    problems.push(`upstream ${name}: invalid name; ${NAME_RULE}`);
  }
  const { balancer, hashOn } = upstream;
  if (balancer !== undefined && !(BALANCERS as readonly string[]).includes(balancer)) {
    problems.push(
      `upstream ${name}: invalid balancer ${JSON.stringify(shortened(balancer))}; expected ` +
        `${BALANCERS.join(', ')} or none`,
    );
    return;
  }
  const hashOnProblem = describeHashOnProblem(balancer, hashOn);
  if (hashOnProblem !== undefined) {
    const value = hashOn === undefined ? '' : ` ${JSON.stringify(shortened(hashOn))}`;
    problems.push(`upstream ${name}: hashOn${value}: ${hashOnProblem}`);
  }
}

/** The rule of `NAME_PATTERN`, worded for messages. */
const NAME_RULE =
  'expected 1 to 128 letters, digits, ".", "_" or "-", starting with a letter or digit';
