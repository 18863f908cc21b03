#!/usr/bin/env python3
"""Stacks one more layer on a docker-archive image, independently of
layerfs: the output is a new docker-archive holding the base image's layers
plus LAYER on top.

Usage
-----
  stack_layer.py BASE.docker.tar LAYER.tar OUT.tar --tag NAME:TAG
                 [--base-tag T] [--created-by TEXT]

BASE's manifest.json entry (the first, or the one tagged --base-tag) and its
config are read; the config gets LAYER's sha256 (of the uncompressed tar;
LAYER may be gzip) appended to rootfs.diff_ids and a history entry, and is
written as `<its sha256>.json`; every layer is written as
`<diff id hex>/layer.tar`; manifest.json names the config, the layers and
the single RepoTag NAME:TAG. Members of OUT get mode 0644, owner 0:0 and
mtime 0, in a fixed order, so the same inputs give the same bytes.
Prints the new image id (the config's sha256) on stdout.

Python standard library only.
"""

import argparse
import gzip
import hashlib
import io
import json
import posixpath
import shutil
import sys
import tarfile
import tempfile


class StackError(Exception):
    pass


def member(tf, name, depth=0):
    """The regular-file member `name` of tf, following member symlinks."""
    name = posixpath.normpath(name.lstrip("/"))
    if name.startswith(".."):
        raise StackError("member name %r escapes the archive" % name)
    try:
        m = tf.getmember(name)
    except KeyError:
        try:
            m = tf.getmember("./" + name)
        except KeyError:
            raise StackError("%s: no member %s" % (tf.name, name))
    if m.issym():
        if depth > 16:
            raise StackError("symlink loop at %s" % name)
        return member(tf, posixpath.join(posixpath.dirname(name),
                                         m.linkname), depth + 1)
    if not m.isreg():
        raise StackError("member %s is not a file" % name)
    return m


def uncompressed_copy(src):
    """-> (temp file holding the uncompressed bytes of src, sha256 hex)."""
    head = src.read(2)
    src.seek(0)
    raw = gzip.GzipFile(fileobj=src) if head == b"\x1f\x8b" else src
    tmp = tempfile.TemporaryFile()
    h = hashlib.sha256()
    while True:
        b = raw.read(1 << 20)
        if not b:
            break
        h.update(b)
        tmp.write(b)
    tmp.seek(0)
    return tmp, h.hexdigest()


def add_file(out, name, f, size):
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = 0o644
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    out.addfile(ti, f)


def add_dir(out, name):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.mtime = 0
    out.addfile(ti)


def stack(base, layer, out_path, tag, base_tag=None, created_by=None):
    with tarfile.open(base, "r:") as tf:
        manifest = json.loads(tf.extractfile(member(tf, "manifest.json"))
                              .read())
        if not manifest:
            raise StackError("%s: empty manifest.json" % base)
        entry = manifest[0]
        if base_tag:
            found = [m for m in manifest if base_tag in (m.get("RepoTags")
                                                         or [])]
            if not found:
                raise StackError("%s: no image tagged %s" % (base, base_tag))
            entry = found[0]
        config = json.loads(tf.extractfile(member(tf, entry["Config"]))
                            .read())
        diff_ids = config.setdefault("rootfs", {"type": "layers"}) \
            .setdefault("diff_ids", [])
        if len(diff_ids) != len(entry["Layers"]):
            raise StackError("%s: %d layers but %d diff_ids"
                             % (base, len(entry["Layers"]), len(diff_ids)))
        layers = []  # (temp file, hex) bottom first
        for name, want in zip(entry["Layers"], diff_ids):
            f, hexd = uncompressed_copy(tf.extractfile(member(tf, name)))
            if "sha256:" + hexd != want:
                raise StackError("%s: layer %s is sha256:%s, the config says "
                                 "%s" % (base, name, hexd, want))
            layers.append((f, hexd))
    with open(layer, "rb") as src:
        f, hexd = uncompressed_copy(src)
    layers.append((f, hexd))

    diff_ids.append("sha256:" + hexd)
    history = config.setdefault("history", [])
    history.append({
        "created": "2024-01-01T00:00:00Z",
        "created_by": created_by or "stack_layer.py %s" % layer,
        "comment": "layer stacked by tools/stack_layer.py",
    })
    config["created"] = "2024-01-01T00:00:00Z"
    config_bytes = json.dumps(config, separators=(",", ":"),
                              sort_keys=True).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    layer_names = ["%s/layer.tar" % h for _, h in layers]
    new_manifest = [{
        "Config": "%s.json" % image_id,
        "RepoTags": [tag],
        "Layers": layer_names,
    }]
    manifest_bytes = json.dumps(new_manifest, separators=(",", ":")).encode()

    with tarfile.open(out_path, "w", format=tarfile.PAX_FORMAT) as out:
        seen = set()
        for (f, hexd), name in zip(layers, layer_names):
            if hexd in seen:  # the same layer twice: stored once
                continue
            seen.add(hexd)
            add_dir(out, hexd)
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
            add_file(out, name, f, size)
        add_file(out, "%s.json" % image_id, io.BytesIO(config_bytes),
                 len(config_bytes))
        add_file(out, "manifest.json", io.BytesIO(manifest_bytes),
                 len(manifest_bytes))
    for f, _ in layers:
        f.close()
    return image_id


def main(argv):
    ap = argparse.ArgumentParser(
        description="Stack a layer tar on a docker-archive image.")
    ap.add_argument("base")
    ap.add_argument("layer")
    ap.add_argument("out")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--base-tag")
    ap.add_argument("--created-by")
    args = ap.parse_args(argv)
    try:
        print(stack(args.base, args.layer, args.out, args.tag, args.base_tag,
                    args.created_by))
    except (StackError, OSError, tarfile.TarError, KeyError, ValueError) as e:
        print("stack_layer: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
