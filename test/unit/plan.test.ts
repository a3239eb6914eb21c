import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ConfigError,
  formatConfigIssue,
  LoomError,
  type ConfigIssue,
} from '../../common/errors.js';
import { planApply, planDelete, type StoredConfig } from '../../control-plane/admin/plan.js';
import { readStoredValue } from '../../control-plane/snapshot/stored-value.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';

const upstream = (name: string): Upstream => ({
  name,
  targets: [{ url: `http://127.0.0.1:9001/${name}`, weight: 1 }],
});
const route = (name: string, upstreamName: string, path = `/${name}`): Route => ({
  name,
  hosts: [],
  paths: [path],
  methods: [],
  upstream: upstreamName,
});
const stored: StoredConfig = {
  revision: 10,
  routes: [route('r1', 'u1')],
  upstreams: [upstream('u1')],
};

/** Returns the issues of an apply without prune that `planApply` rejects. */
function applyIssues(
  config: StoredConfig,
  declared: { routes: Route[]; upstreams: Upstream[] },
): ConfigIssue[] {
  try {
    planApply('/loom/', config, declared, false);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues;
  }
  assert.fail('expected a ConfigError');
}

describe('apply planning', () => {
  test('identical apply plans nothing', () => {
    const plan = planApply(
      '/loom/',
      stored,
      { routes: [route('r1', 'u1')], upstreams: [upstream('u1')] },
      false,
    );
    assert.deepEqual(plan.operations, []);
  });

  test('old target spelling plans nothing', () => {
    // The stored configuration reader puts the old spelling in stored form.
    const read = readStoredValue(
      'upstream',
      'u1',
      JSON.stringify({ name: 'u1', targets: [{ url: 'http://LocalHost:80/', weight: 1 }] }),
    );
    assert.equal(read.kind, 'upstream');
    const old: StoredConfig = { revision: 10, routes: [], upstreams: [read.value] };
    const declared = {
      routes: [],
      upstreams: [{ name: 'u1', targets: [{ url: 'http://localhost', weight: 1 }] }],
    };
    assert.deepEqual(planApply('/loom/', old, declared, false).operations, []);
    assert.deepEqual(planApply('/loom/', old, declared, true).operations, []);
  });

  test('declared resources merge without prune', () => {
    const plan = planApply('/loom/', stored, { routes: [route('r2', 'u1')], upstreams: [] }, false);
    assert.deepEqual(plan.changes, [{ kind: 'route', name: 'r2', action: 'create' }]);
  });

  test('prune deletes undeclared resources', () => {
    const plan = planApply(
      '/loom/',
      stored,
      { routes: [route('r1', 'u2')], upstreams: [upstream('u2')] },
      true,
    );
    assert.deepEqual(plan.changes, [
      { kind: 'route', name: 'r1', action: 'update' },
      { kind: 'upstream', name: 'u1', action: 'delete' },
      { kind: 'upstream', name: 'u2', action: 'create' },
    ]);
  });

  test('removing an upstream still in use is rejected', () => {
    assert.throws(
      () => planApply('/loom/', stored, { routes: [route('r1', 'u1')], upstreams: [] }, true),
      (error: unknown) =>
        error instanceof ConfigError && error.issues.some((issue) => issue.name === 'r1'),
    );
  });

  test('stored route issue names its origin', () => {
    const broken: StoredConfig = { ...stored, routes: [...stored.routes, route('orphan', 'gone')] };
    const issues = applyIssues(broken, { routes: [route('r2', 'u1')], upstreams: [] });
    assert.deepEqual(issues.map(formatConfigIssue), [
      'route "orphan" upstream: this route is stored but not in the applied files: ' +
        'unknown upstream; declared upstreams: u1. To fix it, run "loomctl delete route orphan", ' +
        'add upstream "gone", or include route "orphan" with a declared upstream in the files ' +
        '(got "gone")',
    ]);
  });

  test('declared route issue stays unmarked', () => {
    const issues = applyIssues(stored, { routes: [route('r2', 'gone')], upstreams: [] });
    assert.deepEqual(issues.map(formatConfigIssue), [
      'route "r2" upstream: unknown upstream; declared upstreams: u1 (got "gone")',
    ]);
  });

  test('stored conflict names its origin', () => {
    const both: StoredConfig = { ...stored, routes: [...stored.routes, route('r2', 'u1', '/b')] };
    const issues = applyIssues(both, { routes: [route('r1', 'u1', '/b')], upstreams: [] });
    assert.equal(issues.length, 1);
    assert.equal(issues[0].name, 'r2');
    assert.match(issues[0].message, /^this route is stored but not in the applied files: /);
    assert.match(issues[0].message, / conflicts with path "\/b" of route "r1"/);
    assert.match(
      issues[0].message,
      /To fix it, run "loomctl delete route r2", or include a fixed route "r2" in the files$/,
    );
  });

  test('deleting an upstream in use names the route', () => {
    assert.throws(
      () => planDelete('/loom/', stored, 'upstream', 'u1'),
      (error: unknown) => error instanceof LoomError && /"r1"/.test(error.message),
    );
  });

  test('deleting a missing route is not found', () => {
    assert.throws(
      () => planDelete('/loom/', stored, 'route', 'nope'),
      (error: unknown) =>
        error instanceof LoomError &&
        error.code === 'LOOM_NOT_FOUND' &&
        error.message === 'route "nope" not found; "loomctl get routes" lists what is stored',
    );
  });

  test('deleting an invalid name gives the rule', () => {
    assert.throws(
      () => planDelete('/loom/', stored, 'route', 'no pe'),
      (error: unknown) =>
        error instanceof LoomError &&
        error.code === 'LOOM_NOT_FOUND' &&
        error.message.startsWith('route "no pe" not found (a route name must be 1-128 letters'),
    );
  });

  test('invalid names are rejected', () => {
    assert.throws(
      () =>
        planApply('/loom/', stored, { routes: [route('bad/name', 'u1')], upstreams: [] }, false),
      (error: unknown) => error instanceof ConfigError && error.issues[0].field === 'name',
    );
  });
});
