#!/usr/bin/env bash
# Checks the fixtures and the oracle against third-party tools (no layerfs):
#  1. every format of the multi image gives the same oracle tree;
#  2. `umoci unpack` of fixtures/multi.oci == oracle of its layers, exactly;
#  3. edge.docker.tar, converted by skopeo to an OCI layout and unpacked by
#     umoci, == oracle of edge.docker.tar, except the documented differences
#     (umoci keeps AUFS .wh..wh.plnk/; it gives directories it creates
#     implicitly, and their parents, the wall-clock mtime);
#  4. the edge rootfs tar (gz and zst) == its extraction by GNU tar, except
#     mtimes of implicit directories and of directories GNU tar modified
#     after setting their time;
#  5. the oracle refuses every fixture in fixtures/bad/.
# Needs root (umoci unpack without --rootless, mknod), umoci, skopeo, tar.
set -euo pipefail
cd "$(dirname "$0")/.."
O=(python3 tools/oracle_merge.py)
W=$(mktemp -d /tmp/layerfs-verify.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "verify-fixtures: FAIL: $*" >&2; exit 1; }

echo "== 1. one tree from every format of multi"
"${O[@]}" --image fixtures/multi.docker.tar >"$W/multi.json"
for f in fixtures/multi.oci fixtures/multi.oci:multi:latest fixtures/multi.oci.tar \
  fixtures/multi-zstd.oci; do
  "${O[@]}" --image "$f" >"$W/other.json"
  "${O[@]}" --compare "$W/multi.json" "$W/other.json" >/dev/null || fail "$f differs"
done
"${O[@]}" fixtures/edge/layer{0,1,2,3}.tar >"$W/edge-layers.json"
"${O[@]}" --image fixtures/edge.docker.tar >"$W/edge.json"
"${O[@]}" --compare "$W/edge-layers.json" "$W/edge.json" >/dev/null ||
  fail "edge layers vs edge.docker.tar"
"${O[@]}" --image fixtures/legacy.docker.tar >/dev/null

echo "== 2. umoci unpack of multi.oci vs the oracle (no field ignored)"
cp -a fixtures/multi.oci "$W/multi-layout"
umoci unpack --image "$W/multi-layout:multi:latest" "$W/multi-bundle" >/dev/null
"${O[@]}" --snapshot "$W/multi-bundle/rootfs" >"$W/multi-umoci.json"
"${O[@]}" --compare "$W/multi.json" "$W/multi-umoci.json"

echo "== 3. skopeo + umoci unpack of edge.docker.tar vs the oracle"
skopeo --insecure-policy copy -q docker-archive:fixtures/edge.docker.tar \
  "oci:$W/edge-layout:edge"
umoci unpack --image "$W/edge-layout:edge" "$W/edge-bundle" >/dev/null
"${O[@]}" --snapshot "$W/edge-bundle/rootfs" >"$W/edge-umoci.json"
implicit=(mtime@ mtime_nsec@ mtime@implicit mtime_nsec@implicit
  mtime@implicit/deep mtime_nsec@implicit/deep mtime@long mtime_nsec@long
  'mtime@long/a*' 'mtime_nsec@long/a*')
"${O[@]}" --compare "$W/edge.json" "$W/edge-umoci.json" \
  --ignore-path '.wh..wh.plnk*' "${implicit[@]/#/--ignore=}"

echo "== 4. GNU tar extraction of edge-rootfs.tar.{gz,zst} vs the oracle"
"${O[@]}" fixtures/edge-rootfs.tar.gz >"$W/rootfs.json"
"${O[@]}" fixtures/edge-rootfs.tar.zst >"$W/rootfs-zst.json"
cmp -s "$W/rootfs.json" "$W/rootfs-zst.json" || fail "gz and zst rootfs differ"
mkdir "$W/rootfs"
tar --xattrs --xattrs-include='*' --numeric-owner -xpzf fixtures/edge-rootfs.tar.gz \
  -C "$W/rootfs" 2>/dev/null
"${O[@]}" --snapshot "$W/rootfs" >"$W/rootfs-tar.json"
gnu=(mtime@etc mtime_nsec@etc mtime@implicit mtime_nsec@implicit
  mtime@implicit/deep mtime_nsec@implicit/deep
  mtime@dir-to-whiteout/sub/deeper mtime_nsec@dir-to-whiteout/sub/deeper
  'mtime@long/a*' 'mtime_nsec@long/a*')
"${O[@]}" --compare "$W/rootfs.json" "$W/rootfs-tar.json" "${gnu[@]/#/--ignore=}"

echo "== 5. the oracle refuses every bad fixture"
for f in fixtures/bad/*; do
  case $f in
    */absolute.tar | */dotdot.tar | */truncated.tar | */corrupt-gzip.tar.gz)
      args=("$f") ;;
    *) args=(--image "$f") ;;
  esac
  if [ "$f" = fixtures/bad/absolute.tar ]; then
    # Docker treats absolute names as relative; the oracle warns.
    "${O[@]}" "${args[@]}" 2>&1 >/dev/null | grep -q warning || fail "$f: no warning"
    echo "   $f: warning (absolute name)"
    continue
  fi
  if "${O[@]}" "${args[@]}" >/dev/null 2>"$W/err"; then
    fail "$f was accepted"
  fi
  echo "   $f: $(tail -1 "$W/err" | cut -c1-110)"
done
echo "verify-fixtures: all good"
