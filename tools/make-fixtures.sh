#!/usr/bin/env bash
# Regenerates every fixture in fixtures/ (see fixtures/README.md).
#
#   sudo bash tools/make-fixtures.sh
#
# Needs root (buildah with the overlay driver, chown of fixture files),
# buildah, skopeo, busybox-static (/bin/busybox), zstd and python3.
# Idempotent: removes and recreates its outputs. Uses a private buildah
# store under a temporary directory; the system store is never touched.
# No network: the multi image is built FROM scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
FX=$PWD/fixtures
# Fixed time of the multi image: image "created", history and every file
# in its layers (buildah commit --timestamp).
EPOCH=1700000000

die() { echo "make-fixtures: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (buildah overlay storage, chown)"
for c in buildah skopeo zstd python3 tar gzip; do
  command -v "$c" >/dev/null || die "missing $c (apt-get install -y buildah skopeo zstd python3)"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "missing $BUSYBOX (apt-get install -y busybox-static)"
file_type=$(LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null | grep -c INTERP || true)
[ "$file_type" = 0 ] || die "$BUSYBOX is not statically linked (install busybox-static)"

export LC_ALL=C TZ=UTC
umask 022

WORK=$(mktemp -d /tmp/layerfs-fixtures.XXXXXX)
B=(buildah --root "$WORK/root" --runroot "$WORK/runroot" --storage-driver overlay)
SKOPEO=(skopeo --insecure-policy)
SRC="containers-storage:[overlay@$WORK/root+$WORK/runroot]localhost/multi:latest"
cleanup() {
  set +e
  "${B[@]}" umount --all >/dev/null 2>&1
  "${B[@]}" rm --all >/dev/null 2>&1
  "${B[@]}" rmi --all --force >/dev/null 2>&1
  # containers/storage may leave its private bind mount of the store
  grep -o " $WORK/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Sets the mtime of everything a layer adds or changes (the overlay upper
# dir, seen through the merged dir) so that the bytes do not depend on when
# the script ran. (buildah --timestamp also rewrites the times in the layer
# tar; this keeps the store itself deterministic too.)
pin_times() {
  local mnt=$1 upper
  upper=$(dirname "$mnt")/diff
  [ -d "$upper" ] || die "no overlay upper dir next to $mnt"
  (cd "$upper" && find . ! -type c -print0) | sort -z -r |
    while IFS= read -r -d '' p; do touch -h -d "@$EPOCH" "$mnt/$p"; done
}

rm -rf "$FX/multi.oci" "$FX/multi-zstd.oci" "$FX/multi.docker.tar" \
  "$FX/multi.oci.tar" "$FX/edge" "$FX/edge.docker.tar" \
  "$FX/edge-rootfs.tar.gz" "$FX/edge-rootfs.tar.zst" "$FX/edge-rootfs.tar" \
  "$FX/legacy.docker.tar" "$FX/bad"
mkdir -p "$FX"

# ---------------------------------------------------------------- multi
echo "== multi: layer 0 (busybox, files, owners, setuid, hard links)"
ctr=$("${B[@]}" from --name multi-build-0 scratch)
mnt=$("${B[@]}" mount "$ctr")
(
  cd "$mnt"
  install -d -m 0755 bin etc usr usr/share usr/share/doc usr/share/doc/pkg \
    usr/share/doc/pkg/sub opt opt/data home
  install -d -m 1777 tmp
  install -d -m 0750 -o 1000 -g 1000 home/user
  install -m 0755 "$BUSYBOX" bin/busybox
  for l in sh ls cat echo id; do ln -s busybox "bin/$l"; done
  printf '#!/bin/sh\necho "not really su"\n' >bin/su-fake
  chmod 04755 bin/su-fake
  cat >etc/os-release <<'EOF'
NAME="layerfs-fixture"
ID=layerfs-fixture
PRETTY_NAME="layerfs-fixture (multi-layer test image)"
VERSION_ID=1
EOF
  echo "removed in layer 1" >etc/os-release-extra
  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' >etc/passwd
  printf 'root:x:0:\nuser:x:1000:\n' >etc/group
  echo "pkg documentation" >usr/share/doc/pkg/README
  echo "copyright: public domain" >usr/share/doc/pkg/copyright
  echo "hard linked twice" >usr/share/doc/pkg/a
  ln usr/share/doc/pkg/a usr/share/doc/pkg/a-link
  echo "one" >usr/share/doc/pkg/sub/one
  echo "two" >usr/share/doc/pkg/sub/two
  for i in 1 2 3 4; do echo "data file $i" >"opt/data/file$i"; done
  echo "old nested" >opt/data/old-only-in-layer0
  printf 'top secret\n' >home/user/secret
  chown 1000:1000 home/user/secret
  chmod 0640 home/user/secret
  chmod 0644 etc/* usr/share/doc/pkg/README usr/share/doc/pkg/copyright \
    usr/share/doc/pkg/a usr/share/doc/pkg/sub/* opt/data/*
)
pin_times "$mnt"
"${B[@]}" config --cmd '["/bin/sh"]' \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LAYERFS_FIXTURE=multi --workingdir / --os linux --arch amd64 \
  --author layerfs --created-by "layer 0: busybox, /etc, docs, /opt/data" \
  "$ctr"
"${B[@]}" commit -q --timestamp "$EPOCH" "$ctr" localhost/multi-l0 >/dev/null
"${B[@]}" rm "$ctr" >/dev/null

echo "== multi: layer 1 (file and directory whiteouts)"
ctr=$("${B[@]}" from --name multi-build-1 localhost/multi-l0)
mnt=$("${B[@]}" mount "$ctr")
rm "$mnt/etc/os-release-extra"
rm -rf "$mnt/usr/share/doc/pkg/sub"
pin_times "$mnt"
"${B[@]}" config --created-by "layer 1: rm /etc/os-release-extra /usr/share/doc/pkg/sub" "$ctr"
"${B[@]}" commit -q --timestamp "$EPOCH" "$ctr" localhost/multi-l1 >/dev/null
"${B[@]}" rm "$ctr" >/dev/null

echo "== multi: layer 2 (opaque directory)"
ctr=$("${B[@]}" from --name multi-build-2 localhost/multi-l1)
mnt=$("${B[@]}" mount "$ctr")
# Removing a lower directory and creating it again in the overlay merged
# dir makes it opaque (trusted.overlay.opaque=y), which containers/storage
# writes as opt/data/.wh..wh..opq.
rm -rf "$mnt/opt/data"
mkdir -m 0755 "$mnt/opt/data"
echo new >"$mnt/opt/data/new"
pin_times "$mnt"
"${B[@]}" config --created-by "layer 2: rm -rf /opt/data && mkdir /opt/data && echo new > /opt/data/new" "$ctr"
"${B[@]}" commit -q --timestamp "$EPOCH" "$ctr" localhost/multi:latest >/dev/null
"${B[@]}" rm "$ctr" >/dev/null

echo "== multi: skopeo copy to OCI layout, docker-archive, oci-archive, zstd"
"${SKOPEO[@]}" copy -q "$SRC" "oci:$FX/multi.oci:multi:latest"
"${SKOPEO[@]}" copy -q "$SRC" "docker-archive:$FX/multi.docker.tar:multi:latest"
"${SKOPEO[@]}" copy -q "$SRC" "oci-archive:$FX/multi.oci.tar:multi:latest"
# skopeo 1.9 tars the layout with the wall-clock mtimes of its temporary
# files; pin the header mtimes (nothing else changes) for reproducibility.
python3 - "$FX/multi.oci.tar" "$EPOCH" <<'PY'
import sys, tarfile
path, epoch = sys.argv[1], int(sys.argv[2])
with tarfile.open(path) as tf:
    offsets = []
    for m in tf:
        if m.offset_data - m.offset != 512:
            sys.exit("multi.oci.tar: unexpected extended header at %s" % m.name)
        offsets.append(m.offset)
with open(path, "r+b") as f:
    for off in offsets:
        f.seek(off)
        h = bytearray(f.read(512))
        h[136:148] = b"%011o\0" % epoch
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        f.seek(off)
        f.write(h)
PY
"${SKOPEO[@]}" copy -q --dest-compress-format zstd "$SRC" \
  "oci:$FX/multi-zstd.oci:multi:latest"

# The layers must hold what they are meant to test.
python3 - "$FX/multi.oci" <<'EOF'
import gzip, io, json, sys, tarfile
root = sys.argv[1]
def blob(d):
    return open("%s/blobs/%s" % (root, d["digest"].replace(":", "/")), "rb").read()
idx = json.loads(open(root + "/index.json").read())
man = json.loads(blob(idx["manifests"][0]))
layers = man["layers"]
if len(layers) != 3:
    sys.exit("multi: expected 3 layers, got %d" % len(layers))
names = []
for d in layers:
    if "gzip" not in d["mediaType"]:
        sys.exit("multi.oci: layer not gzip: %s" % d["mediaType"])
    tf = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(d))))
    names.append({m.name.lstrip("./").rstrip("/") for m in tf})
need = [(1, "etc/.wh.os-release-extra"), (1, "usr/share/doc/pkg/.wh.sub"),
        (2, "opt/data/.wh..wh..opq"), (0, "usr/share/doc/pkg/a-link"),
        (0, "bin/busybox")]
for i, n in need:
    if n not in names[i]:
        sys.exit("multi: layer %d lacks %s; it has %s" % (i, n, sorted(names[i])))
print("multi: layers hold the expected whiteouts and opaque marker")
EOF
for f in "$FX"/multi-zstd.oci/blobs/sha256/*; do
  if [ "$(head -c4 "$f" | od -An -tx1 | tr -d ' ')" = 28b52ffd ]; then
    zstd_ok=1
  fi
done
[ -n "${zstd_ok:-}" ] || die "multi-zstd.oci has no zstd blob"

# ---------------------------------------------------------------- edge etc.
echo "== edge layers, rootfs tars, legacy archive, bad inputs"
python3 tools/make_edge_tars.py "$FX"
zstd -q -19 --no-progress -f -o "$FX/edge-rootfs.tar.zst" "$FX/edge-rootfs.tar"
rm "$FX/edge-rootfs.tar"

echo "== fixtures:"
du -sh "$FX"
