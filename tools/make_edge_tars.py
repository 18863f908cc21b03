#!/usr/bin/env python3
"""Writes the hand-made edge-case fixtures of layerfs (stdlib only).

  python3 tools/make_edge_tars.py FIXTURES_DIR

Deterministic: fixed mtimes, owners and order, seeded pseudo-random data,
gzip with mtime 0; the same bytes on every run. Removes and recreates its
outputs:

  FIXTURES_DIR/edge/layer{0,1,2,3}.tar   the edge layers (uncompressed)
  FIXTURES_DIR/edge.docker.tar           docker-archive of those layers
  FIXTURES_DIR/edge-rootfs.tar.gz        plain single-layer rootfs (gzip)
  FIXTURES_DIR/edge-rootfs.tar           the same, uncompressed (the caller
                                         makes .tar.zst from it, then
                                         deletes it)
  FIXTURES_DIR/legacy.docker.tar         legacy v1 docker archive
  FIXTURES_DIR/bad/...                   hostile / corrupt inputs

See fixtures/README.md for what each one covers.
"""

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile

T0 = 1600000000  # 2020-09-13T12:26:40Z
T1 = 1650000000  # 2022-04-15T05:20:00Z
T2 = 1700000000  # 2023-11-14T22:13:20Z

GNU, PAX, USTAR = tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT
NAMES = {0: "root", 1000: "user", 65534: "nobody", 6: "disk", 50: "staff"}

# cap_net_raw+ep as a VFS_CAP_REVISION_2 security.capability value:
# magic_etc = 0x02000000 | VFS_CAP_FLAGS_EFFECTIVE, permitted = 1 << 13
# (CAP_NET_RAW), inheritable 0, high words 0; little-endian, 20 bytes.
CAP_NET_RAW_EP = ((0x02000001).to_bytes(4, "little")
                  + (1 << 13).to_bytes(4, "little") + bytes(4)
                  + bytes(4) + bytes(4))
assert len(CAP_NET_RAW_EP) == 20


# --------------------------------------------------------------------------
# A tiny tar writer: every entry chooses its own format.

class E:
    """One tar entry to write."""

    def __init__(self, name, kind="file", data=b"", mode=None, uid=0, gid=0,
                 mtime=T0, link="", dev=(0, 0), pax=None, fmt=None):
        self.name, self.kind, self.data = name, kind, data
        if isinstance(data, str):
            self.data = data.encode()
        self.mode = mode if mode is not None else {
            "dir": 0o755, "symlink": 0o777}.get(kind, 0o644)
        self.uid, self.gid, self.mtime = uid, gid, mtime
        self.link, self.dev, self.pax, self.fmt = link, dev, pax or {}, fmt


TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE,
         "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
         "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
         "fifo": tarfile.FIFOTYPE}


def tar_bytes(entries, fmt, record_pad=False):
    out = io.BytesIO()
    seen = {}
    for e in entries:
        if e.kind == "hardlink":
            # like real archivers: the header repeats the inode's metadata
            t = seen[e.link]
            e.mode, e.uid, e.gid, e.mtime = t.mode, t.uid, t.gid, t.mtime
            if "mtime" in t.pax:
                e.pax = dict(e.pax, mtime=t.pax["mtime"])
            seen[e.name] = t
        else:
            seen[e.name] = e
        ti = tarfile.TarInfo(e.name)
        ti.type = TYPES[e.kind]
        ti.mode = e.mode
        ti.uid, ti.gid = e.uid, e.gid
        ti.uname, ti.gname = NAMES.get(e.uid, ""), NAMES.get(e.gid, "")
        ti.mtime = e.mtime
        ti.linkname = e.link
        ti.devmajor, ti.devminor = e.dev
        ti.size = len(e.data) if e.kind == "file" else 0
        ti.pax_headers = dict(e.pax)
        out.write(ti.tobuf(e.fmt if e.fmt is not None else fmt, "utf-8",
                           "surrogateescape"))
        if ti.size:
            out.write(e.data)
            out.write(bytes(-len(e.data) % 512))
    out.write(bytes(1024))
    if record_pad:  # GNU tar / Python tarfile pad to 20 blocks
        out.write(bytes(-out.tell() % 10240))
    return out.getvalue()


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                       compresslevel=9) as g:
        g.write(b)
    return out.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def rnd_bytes(seed, n):
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------
# The edge layers

LONG_D1 = "gnu-long-directory-" + "d" * 60              # 79 chars
LONG_F1 = "gnu-long-file-name-" + "f" * 70 + ".txt"     # 93 chars
GNU_LONG_FILE = "./long/%s/%s" % (LONG_D1, LONG_F1)     # 181 chars
GNU_DEEP = "./long/%s/%s/%s" % ("a" * 95, "b" * 95, "c" * 99)  # > 256
PAX_D = "pax-directory-" + "p" * 90                     # 104 chars
PAX_F = "pax-file-" + "q" * 100                         # 109 chars
PAX_LONG_FILE = "pax/%s/%s/%s" % (PAX_D, PAX_D, PAX_F)  # > 256
USTAR_DIR = "ustar-prefix-" + "u" * 80                  # 93 chars
USTAR_FILE = "ustar/%s/%s" % (USTAR_DIR, "file-" + "v" * 80)  # 185 chars


def layer0():
    """GNU format, `./` prefixes, a `./` root entry, tarfile record padding."""
    passwd = ("root:x:0:0:root:/root:/bin/sh\n"
              "user:x:1000:1000:user:/home/user:/bin/sh\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    group = "root:x:0:\ndisk:x:6:\nstaff:x:50:\nuser:x:1000:\nnogroup:x:65534:\n"
    return [
        E("./", "dir", mode=0o755, mtime=T0),
        E("./etc/", "dir", mtime=T0 + 10),
        E("./etc/passwd", data=passwd),
        E("./etc/group", data=group),
        E("./etc/x", data="x from layer 0\n"),
        E("./dev/", "dir"),
        E("./dev/null", "char", mode=0o666, dev=(1, 3)),
        E("./dev/sda", "block", mode=0o660, gid=6, dev=(8, 0)),
        E("./dev/initctl", "fifo", mode=0o600),
        E("./hardlinks/", "dir"),
        E("./hardlinks/orig", data="hard link payload\n", mode=0o640,
          uid=1000, gid=1000, mtime=T0 + 1),
        E("./hardlinks/link1", "hardlink", link="./hardlinks/orig"),
        E("./hardlinks/sub/", "dir"),
        E("./hardlinks/sub/link2", "hardlink", link="./hardlinks/orig"),
        E("./links/", "dir"),
        E("./links/relative", "symlink", link="../etc/x"),
        E("./links/absolute", "symlink", link="/etc/x"),
        E("./links/dangling", "symlink", link="../no/such/file"),
        E("./links/to-dir", "symlink", link="../hardlinks"),
        E("./links/header-mode-0755", "symlink", link="relative", mode=0o755),
        E("./long/", "dir"),
        E("./long/%s/" % LONG_D1, "dir"),
        E(GNU_LONG_FILE, data="a GNU long name (././@LongLink 'L')\n"),
        E(GNU_DEEP, data="a GNU long name longer than 256 bytes\n"),
        E("./long/symlink-long-target", "symlink",
          link=GNU_LONG_FILE[len("./long/"):]),   # 174 chars: 'K' record
        E("./long/hardlink-" + "h" * 110, "hardlink", link=GNU_LONG_FILE),
        E("./modes/", "dir"),
        E("./modes/root-0600", data="secret\n", mode=0o600),
        E("./modes/user-0755", data="#!/bin/sh\necho user\n", mode=0o755,
          uid=1000, gid=1000),
        E("./modes/nobody-0644", data="nobody\n", uid=65534, gid=65534),
        E("./modes/setuid-04755", data="setuid\n", mode=0o4755),
        E("./modes/setgid-02755", data="setgid\n", mode=0o2755, gid=50),
        E("./modes/sticky-tmp/", "dir", mode=0o1777),
        E("./modes/sticky-tmp/file-in-tmp", data="tmp\n", mode=0o666,
          uid=1000, gid=1000),
        E("./modes/dir-0700-user/", "dir", mode=0o700, uid=1000, gid=1000),
        E("./modes/dir-0700-user/inside", data="inside\n", uid=1000,
          gid=1000),
        E("./modes/empty", data=b""),
        E("./random.bin", data=rnd_bytes(20240101, 200003)),
        E("./dup", data="first version of dup\n", mode=0o644, mtime=T0),
        E("./swap", data="swap: a file in layer 0\n"),
        E("./dir-to-whiteout/", "dir"),
        E("./dir-to-whiteout/a", data="a\n"),
        E("./dir-to-whiteout/sub/", "dir"),
        E("./dir-to-whiteout/sub/b", data="b\n"),
        E("./dir-to-whiteout/sub/deeper/c", data="c\n"),
        E("./file-to-whiteout", data="whited out in layer 1\n"),
        E("./opaque/", "dir", mtime=T0),
        E("./opaque/old1", data="old1: hidden by the opaque dir\n"),
        E("./opaque/oldsub/", "dir"),
        E("./opaque/oldsub/old2", data="old2: hidden by the opaque dir\n"),
        E("./opaque/keep-name", data="keep-name: layer 0\n"),
        E("./implicit/deep/file", data="my parents have no tar entries\n",
          mtime=T0 + 3),
        E("./dup", data="second and final version of dup\n", mode=0o600,
          mtime=T0 + 5),
    ]


def layer1():
    """PAX format, no prefix: whiteouts, opaque dir, swap dir, PAX details."""
    return [
        E(".wh.dir-to-whiteout", mtime=T1),
        E(".wh.file-to-whiteout", mtime=T1),
        E(".wh.never-existed", mtime=T1),
        E("etc/y", data="y from layer 1 (etc/ has no entry here)\n",
          mtime=T1),
        E("opaque/", "dir", mode=0o750, mtime=T1),
        E("opaque/.wh..wh..opq", mtime=T1),
        E("opaque/new1", data="new1: layer 1, in the opaque dir\n",
          mtime=T1),
        E("opaque/keep-name", data="keep-name: layer 1\n", mtime=T1),
        E("swap/", "dir", mode=0o755, mtime=T1),
        E("swap/child", data="child of the swap dir, layer 1\n", mtime=T1),
        E("swap/subdir/grandchild", data="grandchild\n", mtime=T1),
        E("pax/", "dir", mtime=T1),
        E("pax/" + PAX_F, data="a PAX long name\n", mtime=T1),
        E("pax/%s/" % PAX_D, "dir", mtime=T1),
        E("pax/%s/%s/" % (PAX_D, PAX_D), "dir", mtime=T1),
        E(PAX_LONG_FILE, data="a PAX path longer than 256 bytes\n",
          mtime=T1),
        E("pax/symlink-long-target", "symlink",
          link=PAX_LONG_FILE[len("pax/"):], mtime=T1),
        E("pax/hardlink-long-target", "hardlink", link=PAX_LONG_FILE,
          mtime=T1),
        E("pax/unicode-名前-ü.txt", data="a UTF-8 name\n", mtime=T1),
        E("time/", "dir", mtime=0, pax={"mtime": "1700000001.5"}),
        E("time/nanos", data="nanoseconds\n", mtime=0,
          pax={"mtime": "1700000000.123456789"}),
        E("time/one-nsec", data="one nanosecond\n", mtime=0,
          pax={"mtime": "1700000002.000000001"}),
        E("time/epoch", data="mtime 0\n", mtime=0),
        E("xattrs/", "dir", mtime=T1,
          pax={"SCHILY.xattr.user.dir": "on a directory"}),
        E("xattrs/user-foo", data="user.foo=bar\n", mtime=T1,
          pax={"SCHILY.xattr.user.foo": "bar"}),
        E("xattrs/ping", data="#!/bin/sh\necho ping\n", mode=0o755,
          mtime=T1, pax={"SCHILY.xattr.security.capability":
                         CAP_NET_RAW_EP.decode("utf-8", "surrogateescape")}),
        E("xattrs/binary", data="two xattrs, one not UTF-8\n", mtime=T1,
          pax={"SCHILY.xattr.user.foo": "bar",
               "SCHILY.xattr.user.binary":
                   b"\x00\x01\xfe\xff".decode("utf-8", "surrogateescape")}),
    ]


def layer2():
    """USTAR format (prefix field) unless PAX is needed; AUFS metadata."""
    return [
        E("swap", data="swap: a file again in layer 2\n", mtime=T2),
        E(".wh..wh.plnk/", "dir", mode=0o700, mtime=T2),
        E(".wh..wh.plnk/1234.5678", data="aufs hard link store\n", mtime=T2),
        E(".wh..wh.aufs", data=b"", mode=0o600, mtime=T2),
        E(".wh..wh.orph/", "dir", mode=0o700, mtime=T2),
        E("hardlinks/link1", data="link1: a plain file in layer 2\n",
          mtime=T2),
        E("etc/x", data="x from layer 2\n", mode=0o600, mtime=T2),
        E("modes/sticky-tmp/", "dir", mode=0o1777, uid=0, gid=0, mtime=T2),
        E("opaque/newer", data="newer: layer 2, merged with layer 1\n",
          mtime=T2),
        E("ustar/", "dir", mtime=T2),
        E("ustar/%s/" % USTAR_DIR, "dir", mtime=T2),
        E(USTAR_FILE, data="a ustar name split into prefix + name\n",
          mtime=T2),
    ]


def layer3():
    """An empty layer: just the two zero blocks."""
    return []


def edge_layers():
    return [tar_bytes(layer0(), GNU, record_pad=True),
            tar_bytes(layer1(), PAX),
            tar_bytes(layer2(), USTAR),
            tar_bytes(layer3(), PAX)]


def rootfs_entries():
    """A plain rootfs: layer 0 plus the whiteout-free parts of layer 1."""
    out = [e for e in layer0()]
    for e in layer1():
        if e.name.startswith((".wh.", "opaque/", "swap/")):
            continue
        if e.fmt is None:
            e.fmt = PAX
        out.append(e)
    for e in out:
        if e.fmt is None:
            e.fmt = GNU
    return out


# --------------------------------------------------------------------------
# Archives

def iso(t):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def docker_archive(layers, history, repo_tag, env, extra_members=(),
                   config_diff_ids=None, layer_paths=None):
    """A `docker save` style archive. Returns bytes."""
    diff_ids = ["sha256:" + sha256(l) for l in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": history[-1]["created"],
        "config": {"Cmd": ["/bin/sh"], "Env": env, "WorkingDir": "/"},
        "history": history,
        "rootfs": {"type": "layers",
                   "diff_ids": config_diff_ids or diff_ids},
    }
    cfg = canon(config)
    cfg_name = sha256(cfg) + ".json"
    members = []
    paths = []
    parent = ""
    for l, d in zip(layers, diff_ids):
        v1 = sha256((parent + " " + d).encode())
        v1json = {"id": v1, "created": "1970-01-01T00:00:00Z",
                  "container_config": {"Cmd": None}, "os": "linux"}
        if parent:
            v1json["parent"] = parent
        members += [E(v1 + "/", "dir", mtime=0),
                    E(v1 + "/VERSION", data="1.0", mtime=0),
                    E(v1 + "/json", data=canon(v1json), mtime=0),
                    E(v1 + "/layer.tar", data=l, mtime=0)]
        paths.append(v1 + "/layer.tar")
        parent = v1
    manifest = [{"Config": cfg_name, "RepoTags": [repo_tag],
                 "Layers": layer_paths or paths}]
    name, _, tag = repo_tag.rpartition(":")
    members += [E(cfg_name, data=cfg, mtime=0),
                E("manifest.json", data=canon(manifest), mtime=0),
                E("repositories", data=canon({name: {tag: parent}}),
                  mtime=0)]
    members += list(extra_members)
    return tar_bytes(members, USTAR)


def edge_history(n_layers):
    h = [{"created": iso(T0), "created_by": "ADD layer0.tar / (GNU format)"},
         {"created": iso(T0), "created_by": "ENV LAYERFS_FIXTURE=edge",
          "empty_layer": True},
         {"created": iso(T1), "created_by": "ADD layer1.tar / (PAX format)"},
         {"created": iso(T2), "created_by": "ADD layer2.tar / (USTAR)"},
         {"created": iso(T2), "created_by": "RUN true # empty layer tar",
          "comment": "an empty tar is still a layer"}]
    assert sum(1 for x in h if not x.get("empty_layer")) == n_layers
    return h


ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LAYERFS_FIXTURE=edge"]


def legacy_archive():
    """Old Docker graph format: <id>/json, <id>/layer.tar, repositories."""
    l0 = tar_bytes([
        E("bin/", "dir"),
        E("bin/tool", data="#!/bin/sh\necho legacy\n", mode=0o755),
        E("bin/tool-link", "hardlink", link="bin/tool"),
        E("etc/", "dir"),
        E("etc/hostname", data="legacy\n"),
        E("etc/motd", data="removed in the second layer\n"),
        E("var/", "dir"),
        E("var/lib/", "dir"),
        E("var/lib/state", data="state v1\n", uid=1000, gid=1000),
        E("usr/", "dir"),
        E("usr/bin", "symlink", link="../bin"),
    ], USTAR)
    l1 = tar_bytes([
        E("etc/", "dir", mtime=T1),
        E("etc/.wh.motd", mtime=T1),
        E("var/lib/state", data="state v2\n", uid=1000, gid=1000, mtime=T1),
        E("var/lib/new", data="added by the second layer\n", mtime=T1),
        E(".wh..wh.plnk/", "dir", mode=0o700, mtime=T1),
    ], USTAR)
    id0 = sha256(b"layerfs legacy fixture layer 0")
    id1 = sha256(b"layerfs legacy fixture layer 1")
    j0 = {"id": id0, "created": iso(T0),
          "container_config": {"Cmd": ["/bin/sh", "-c",
                                       "#(nop) ADD file:legacy0 in /"]},
          "config": {"Cmd": None, "Env": ENV[:1]},
          "architecture": "amd64", "os": "linux",
          "docker_version": "1.9.1", "Size": len(l0)}
    j1 = {"id": id1, "parent": id0, "created": iso(T1),
          "container_config": {"Cmd": ["/bin/sh", "-c",
                                       "rm /etc/motd && echo v2 ..."]},
          "config": {"Cmd": ["/bin/sh"],
                     "Env": ENV[:1] + ["LAYERFS_FIXTURE=legacy"]},
          "architecture": "amd64", "os": "linux",
          "docker_version": "1.9.1", "Size": len(l1)}
    members = []
    for i, j, l in ((id0, j0, l0), (id1, j1, l1)):
        members += [E(i + "/", "dir", mtime=0),
                    E(i + "/VERSION", data="1.0", mtime=0),
                    E(i + "/json", data=canon(j), mtime=0),
                    E(i + "/layer.tar", data=l, mtime=0)]
    members.append(E("repositories",
                     data=canon({"legacy": {"latest": id1}}), mtime=0))
    return tar_bytes(members, USTAR)


def oci_layout(root, layers, media="application/vnd.oci.image.layer.v1.tar",
               drop_blob=None, corrupt_blob=None):
    """A minimal OCI layout dir; optionally with a missing/corrupt blob."""
    shutil.rmtree(root, ignore_errors=True)
    blobs = {}

    def blob(data):
        d = sha256(data)
        blobs[d] = data
        return d

    descs = [{"mediaType": media, "digest": "sha256:" + blob(l),
              "size": len(l)} for l in layers]
    config = canon({
        "architecture": "amd64", "os": "linux", "created": iso(T0),
        "config": {"Cmd": ["/bin/sh"], "Env": ENV[:1]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + sha256(l) for l in layers]},
        "history": [{"created": iso(T0), "created_by": "layer %d" % i}
                    for i in range(len(layers))]})
    manifest = canon({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + blob(config), "size": len(config)},
        "layers": descs})
    md = blob(manifest)
    index = canon({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + md, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
    write(os.path.join(root, "oci-layout"),
          canon({"imageLayoutVersion": "1.0.0"}))
    write(os.path.join(root, "index.json"), index)
    for d, data in sorted(blobs.items()):
        if drop_blob is not None and d == sha256(layers[drop_blob]):
            continue
        if corrupt_blob is not None and d == sha256(layers[corrupt_blob]):
            data = corrupt(data)
        write(os.path.join(root, "blobs", "sha256", d), data)


def corrupt(tar):
    """Flips one byte of file data (same size, valid tar, wrong digest)."""
    i = tar.index(b"CONTENT")
    return tar[:i] + b"c" + tar[i + 1:]


def small_layer(tag):
    return tar_bytes([
        E("etc/", "dir"),
        E("etc/hostname", data="CONTENT of %s\n" % tag),
        E("bin/", "dir"),
        E("bin/hello", data="#!/bin/sh\necho hello\n", mode=0o755),
    ], USTAR)


def bad_fixtures(out):
    bad = os.path.join(out, "bad")
    shutil.rmtree(bad, ignore_errors=True)
    os.makedirs(bad)
    # gzip header (magic, deflate, no flags, mtime 0, xfl 0, OS unix),
    # then garbage
    write(os.path.join(bad, "corrupt-gzip.tar.gz"),
          b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
          + rnd_bytes(666, 4096))
    # a rootfs tar cut in the middle of a file's data
    t = tar_bytes([E("etc/", "dir"), E("etc/hostname", data="truncated\n"),
                   E("big.bin", data=rnd_bytes(7, 100000)),
                   E("after", data="never reached\n")], USTAR)
    cut = t.index(rnd_bytes(7, 100000)) + 50000
    write(os.path.join(bad, "truncated.tar"), t[:cut])
    # docker-archive whose layer does not match its diff_id
    good, other = small_layer("good"), small_layer("other")
    write(os.path.join(bad, "digest-mismatch.docker.tar"), docker_archive(
        [good], [{"created": iso(T0), "created_by": "ADD"}], "bad:latest",
        ENV[:1], config_diff_ids=["sha256:" + sha256(other)]))
    # manifest Layers naming a path outside the archive
    write(os.path.join(bad, "manifest-escape.docker.tar"), docker_archive(
        [good], [{"created": iso(T0), "created_by": "ADD"}], "bad:latest",
        ENV[:1], layer_paths=["../../../etc/passwd"]))
    write(os.path.join(bad, "manifest-absolute.docker.tar"), docker_archive(
        [good], [{"created": iso(T0), "created_by": "ADD"}], "bad:latest",
        ENV[:1], layer_paths=["/etc/passwd"]))
    # a layer.tar member that is a symlink leading out of the archive
    arch = docker_archive(
        [good], [{"created": iso(T0), "created_by": "ADD"}], "bad:latest",
        ENV[:1], layer_paths=["evil/layer.tar"],
        extra_members=[E("evil/", "dir", mtime=0),
                       E("evil/layer.tar", "symlink",
                         link="../../../../../etc/passwd", mtime=0)])
    write(os.path.join(bad, "symlink-escape.docker.tar"), arch)
    # rootfs tars with escaping names
    write(os.path.join(bad, "dotdot.tar"), tar_bytes([
        E("ok", data="fine\n"), E("../evil", data="evil\n"),
        E("a/", "dir"), E("a/../../evil2", data="evil2\n")], USTAR))
    write(os.path.join(bad, "absolute.tar"), tar_bytes([
        E("ok", data="fine\n"), E("/etc/", "dir"),
        E("/etc/evil", data="evil\n")], USTAR))
    # OCI layouts: a listed blob is absent / a blob does not match its digest
    oci_layout(os.path.join(bad, "missing-blob.oci"),
               [small_layer("base"), small_layer("missing")], drop_blob=1)
    oci_layout(os.path.join(bad, "oci-digest-mismatch.oci"),
               [small_layer("base"), small_layer("corrupted")],
               corrupt_blob=1)


def main(out):
    edge_dir = os.path.join(out, "edge")
    shutil.rmtree(edge_dir, ignore_errors=True)
    layers = edge_layers()
    for i, l in enumerate(layers):
        write(os.path.join(edge_dir, "layer%d.tar" % i), l)
    write(os.path.join(out, "edge.docker.tar"),
          docker_archive(layers, edge_history(len(layers)), "edge:latest",
                         ENV))
    rootfs = tar_bytes(rootfs_entries(), GNU, record_pad=True)
    write(os.path.join(out, "edge-rootfs.tar"), rootfs)
    write(os.path.join(out, "edge-rootfs.tar.gz"), gz(rootfs))
    write(os.path.join(out, "legacy.docker.tar"), legacy_archive())
    bad_fixtures(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
