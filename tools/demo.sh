#!/usr/bin/env bash
# The main job on a fresh machine: build layerfs, import the bundled
# busybox fixture image into a private store, mount it, look inside, run a
# binary from it, unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
fi
cargo build --release --locked
LAYERFS=$PWD/target/release/layerfs
export LAYERFS_ROOT=${LAYERFS_ROOT:-$(mktemp -d)/store}
MNT=$(mktemp -d)
trap '"$LAYERFS" umount "$MNT" 2>/dev/null || true' EXIT

id=$("$LAYERFS" import fixtures/multi.docker.tar --tag demo)
echo "imported image $id"
"$LAYERFS" images
"$LAYERFS" history demo
"$LAYERFS" mount demo "$MNT"
echo "--- ls -la $MNT/bin"
ls -la "$MNT/bin"
echo "--- $MNT/bin/busybox echo hi"
"$MNT/bin/busybox" echo hi
echo "--- cat $MNT/etc/os-release"
cat "$MNT/etc/os-release"
"$LAYERFS" umount "$MNT"
echo "--- a writable mount: changes land in a read-write branch"
RW=$(mktemp -d)/rw
"$LAYERFS" mount demo "$MNT" --rw "$RW"
echo hi > "$MNT/etc/motd"
rm -r "$MNT/usr/share/doc"
mv "$MNT/opt" "$MNT/opt2"
"$LAYERFS" umount "$MNT"
echo "--- layerfs diff $RW (what the container changed)"
"$LAYERFS" diff "$RW"
echo "--- the branch is a layer diff:"
(cd "$RW" && find . -path ./.wh..wh.layerfs -prune -o -print | sort)
trap - EXIT
echo "unmounted; store at $LAYERFS_ROOT, branch at $RW"
