import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { buildRouter, updateRouter } from '../../data-plane/router/router.js';
import type { Router, RouterRoute } from '../../data-plane/router/types.js';

/**
 * A node with more than eight static edges looks them up in first-character buckets or a hash
 * table, and a node with fewer scans their first characters. These tests move nodes across
 * that size by builds and by updates, and compare each lookup with a router built anew.
 */

function route(path: string): RouterRoute<string> {
  return { name: path, hosts: [], paths: [path], methods: ['GET'], value: path };
}

/** Returns the name of the route a GET of `path` finds, or the kind of the result. */
function lookup(router: Router<string>, path: string): string {
  const match = router.find('GET', undefined, path);
  return match.kind === 'found' ? match.value : match.kind;
}

/**
 * Returns request paths near the routes of `names`: each name, the name with another last
 * letter, a prefix of it, and paths one segment shorter or longer. None of them is a fully
 * static route, so every lookup walks the tree.
 */
function requestsNear(names: readonly string[]): string[] {
  const requests = new Set<string>(['/n', '/n/', '/n//v', '/m/a/v']);
  for (const name of names) {
    for (const segment of [name, name.slice(0, -1) + 'q', name + 'x', name.slice(0, -1)]) {
      requests.add(`/n/${segment}/v`);
      requests.add(`/n/${segment}`);
      requests.add(`/n/${segment}/v/w`);
    }
  }
  return [...requests];
}

function assertSameLookups(router: Router<string>, names: readonly string[]): void {
  const fresh = buildRouter(pathsOf(names).map(route));
  for (const request of requestsNear(names)) {
    assert.equal(lookup(router, request), lookup(fresh, request), `GET ${request}`);
  }
}

/** Returns the patterns `/n/<name>/:rest` of `names`, plus a param sibling that misses fall back to. */
function pathsOf(names: readonly string[]): string[] {
  return ['/n/:id/:rest', ...names.map((name) => `/n/${name}/:rest`)];
}

const DISTINCT_FIRST = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'];
const SHARED_FIRST = ['e0', 'e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8', 'e9', 'e10'];

describe('edge lookup by node width', () => {
  for (const [label, names] of [
    ['buckets', DISTINCT_FIRST],
    ['hash table', SHARED_FIRST],
  ] as const) {
    test(`built nodes with ${label}`, () => {
      for (let count = 1; count <= names.length; count++) {
        const router = buildRouter(pathsOf(names.slice(0, count)).map(route));
        for (const name of names.slice(0, count)) {
          assert.equal(lookup(router, `/n/${name}/v`), `/n/${name}/:rest`);
        }
        assert.equal(lookup(router, '/n/zz/v'), '/n/:id/:rest');
        assertSameLookups(router, names.slice(0, count));
      }
    });

    test(`updated nodes with ${label}`, () => {
      // Grow from 8 to 11 edges one update at a time, then shrink back to 1.
      let router: Router<string> = buildRouter(pathsOf(names.slice(0, 8)).map(route));
      for (let count = 9; count <= names.length; count++) {
        const updated = updateRouter(router, [], [route(`/n/${names[count - 1]}/:rest`)]);
        assert.ok(updated !== null, `update to ${count} edges`);
        router = updated;
        assertSameLookups(router, names.slice(0, count));
      }
      for (let count = names.length - 1; count >= 1; count--) {
        const updated = updateRouter(router, [route(`/n/${names[count]}/:rest`)], []);
        assert.ok(updated !== null, `update to ${count} edges`);
        router = updated;
        assertSameLookups(router, names.slice(0, count));
      }
    });
  }
});

describe('long static edges', () => {
  // Edges of 13 or more characters are compared by a search that stops at the edge's end when
  // a long tail follows. The rows pair short tails with long ones.
  const EDGE = 'organization-settings/members';
  const router = buildRouter(
    [`/api/${EDGE}/*rest`, `/api/${EDGE}`, '/api/:other/*rest'].map(route),
  );
  const LONG = `/${EDGE.slice(0, -1)}Z`.repeat(270);

  for (const [label, path, expected] of [
    ['whole edge', `/api/${EDGE}`, `/api/${EDGE}`],
    ['edge and tail', `/api/${EDGE}/x`, `/api/${EDGE}/*rest`],
    ['edge and long tail', `/api/${EDGE}${LONG}`, `/api/${EDGE}/*rest`],
    ['last letter differs', `/api/${EDGE.slice(0, -1)}Z/x`, '/api/:other/*rest'],
    ['last letter differs, long tail', `/api/${EDGE.slice(0, -1)}Z${LONG}`, '/api/:other/*rest'],
    ['edge later in long tail', `/api/x/${EDGE}${LONG}`, '/api/:other/*rest'],
    ['edge text longer', `/api/${EDGE}s${LONG}`, '/api/:other/*rest'],
  ] as const) {
    test(label, () => {
      assert.equal(lookup(router, path), expected);
    });
  }
});
