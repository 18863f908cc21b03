#!/usr/bin/env python3
"""Independent oracle for layerfs: the merged tree of image layers, as JSON.

Python standard library only (zstd blobs are decompressed with the `zstd`
command when it is installed). Shares no code or logic with src/.

Usage
-----
  oracle_merge.py LAYER.tar [LAYER.tar ...]      layers bottom first; each
                                                 may be plain, gzip or zstd
                                                 (told by magic bytes)
  oracle_merge.py --image ARCHIVE                docker-archive (manifest.json;
                                                 first manifest, or --tag T),
                                                 legacy v1 docker archive
                                                 (repositories + <id>/json),
                                                 OCI layout dir or oci-archive
                                                 (ARCHIVE[:REF] selects the
                                                 manifest by ref name)
  oracle_merge.py --snapshot DIR                 the same JSON for a real
                                                 directory tree (lstat, no
                                                 symlink following)
  oracle_merge.py --compare A.json B.json [--ignore FIELD[@GLOB] ...]
                  [--ignore-path GLOB ...]       readable diff; exit 1 if
                                                 they differ, 0 if identical
                                                 (FIELD@GLOB: skip FIELD only
                                                 for paths matching GLOB)

With --image, digests are verified: OCI blobs against their descriptors,
uncompressed layers against the config's rootfs.diff_ids (docker-archive and
OCI); a mismatch, a missing blob/member, a corrupt or truncated tar or a ".."
name is an error (message on stderr, exit 2).

Layer rules (Docker / AUFS / OCI image-spec "whiteouts")
--------------------------------------------------------
* Layers apply bottom to top; the top layer wins.
* Within one tar a later entry for a path replaces the earlier one (a
  directory over a directory only replaces the directory's metadata).
* Names are normalized: leading "/" and "./", empty and "." components and
  trailing "/" are dropped; the root directory is "" (a "./" entry sets the
  root's metadata). A ".." component is an error (exit 2).
* `.wh.NAME` hides NAME (and its subtree) of the LOWER layers; whiteouts are
  never shown and do not hide entries of their own layer.
* A directory containing `.wh..wh..opq` hides all lower entries below it
  (entries of its own layer stay).
* Any other entry with a path component starting with `.wh..wh.` (AUFS
  metadata: `.wh..wh.plnk/`, `.wh..wh.aufs`, `.wh..wh.orph/`) is dropped with
  its subtree (it may still serve as a hard-link target in its own layer).
* A non-directory replaces a lower directory of the same name with its whole
  subtree, and a directory replaces a lower non-directory.
* A directory that only appears as the parent of deeper entries (or of a
  whiteout) exists; it keeps the metadata of the lower directory if there is
  one, else mode 0755, uid 0, gid 0, mtime 0.
* A hard link entry names the same inode as its target, the latest entry of
  that name earlier in the same tar (else the path in the lower merged tree).
  The hard link header's own metadata is ignored.

JSON format (identical for the merge and for --snapshot)
-------------------------------------------------------
One object mapping every path (relative, no leading "./" or "/"; the root is
"") to an object with:
  type        "file" | "dir" | "symlink" | "char" | "block" | "fifo"
              (--snapshot may also say "socket")
  mode        permission bits incl. setuid/setgid/sticky (st_mode & 0o7777);
              symlinks are always 0o777 (as on any Linux filesystem)
  uid, gid    numeric owner
  mtime       integer seconds (floor), mtime_nsec 0..999999999
  size        files only: byte size
  sha256      files only: hex digest of the content
  nlink       files only: number of names of this inode in the tree
  link_group  files with nlink > 1 only: the smallest path of the group
  target      symlinks only: the link target, verbatim
  rdev        char/block devices only: [major, minor]
  xattrs      object xattr name -> hex of the value; omitted if none
Numbers are JSON integers. Paths are sorted. In the merge, PAX
`SCHILY.xattr.NAME` (and `LIBARCHIVE.xattr.NAME`) records give xattrs and a
PAX `mtime` record gives nanoseconds.
"""

import argparse
import base64
import fnmatch
import gzip
import hashlib
import io
import json
import os
import posixpath
import stat
import subprocess
import sys
import tarfile
import zlib

DEFAULT_DIR = dict(mode=0o755, uid=0, gid=0, mtime=0, mtime_nsec=0)


class OracleError(Exception):
    pass


# --------------------------------------------------------------------------
# Reading tars

def norm_path(name):
    """Tar member name -> normalized relative path ("" for the root)."""
    if name.startswith("/"):
        print("oracle: warning: absolute path %r treated as relative" % name,
              file=sys.stderr)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OracleError("path with '..' component: %r" % name)
    return "/".join(parts)


def parse_pax_time(s):
    """'1700000000.123456789' -> (sec, nsec), exactly (no float)."""
    s = s.strip()
    neg = s.startswith("-")
    if neg or s.startswith("+"):
        s = s[1:]
    whole, _, frac = s.partition(".")
    sec = int(whole or "0")
    nsec = int((frac + "000000000")[:9]) if frac else 0
    if neg:
        sec = -sec
        if nsec:
            sec -= 1
            nsec = 1_000_000_000 - nsec
    return sec, nsec


class Node:
    """One inode: hard links share the object."""
    __slots__ = ("type", "mode", "uid", "gid", "mtime", "mtime_nsec", "size",
                 "sha256", "target", "rdev", "xattrs")

    def __init__(self, **kw):
        self.size = self.sha256 = self.target = self.rdev = None
        self.xattrs = {}
        for k, v in kw.items():
            setattr(self, k, v)

    def copy_meta_from(self, other):
        for k in ("mode", "uid", "gid", "mtime", "mtime_nsec", "xattrs"):
            setattr(self, k, getattr(other, k))


class PrefixReader:
    """Bytes already read, then the rest of the stream."""

    def __init__(self, prefix, f):
        self.prefix, self.f = prefix, f

    def read(self, n=-1):
        if not self.prefix:
            return self.f.read(n)
        if n is None or n < 0:
            b, self.prefix = self.prefix + self.f.read(), b""
            return b
        b, self.prefix = self.prefix[:n], self.prefix[n:]
        if len(b) < n:
            b += self.f.read(n - len(b))
        return b


def open_maybe_compressed(f):
    """Binary stream -> binary stream of its decompressed bytes."""
    magic = b""
    while len(magic) < 4:
        b = f.read(4 - len(magic))
        if not b:
            break
        magic += b
    f = PrefixReader(magic, f)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")
    if magic == b"\x28\xb5\x2f\xfd":
        data = f.read()
        try:
            out = subprocess.run(["zstd", "-dc"], input=data, check=True,
                                 stdout=subprocess.PIPE).stdout
        except FileNotFoundError:
            raise OracleError("zstd layer but no `zstd` command installed")
        except subprocess.CalledProcessError:
            raise OracleError("corrupt zstd data")
        return io.BytesIO(out)
    return f


def read_layer(f, label):
    """Reads one layer tar stream -> list of records, in tar order.

    A record is (path, kind, payload): kind "entry" (payload Node),
    "link" (payload Node, the shared inode), "whiteout" (payload: hidden
    path), "opaque" (payload: the opaque dir), "aufs" (dropped).
    """
    records = []
    by_name = {}  # tar-local: latest Node of each name (incl. AUFS entries)
    try:
        tf = tarfile.open(fileobj=f, mode="r|", encoding="utf-8",
                          errors="surrogateescape")
    except tarfile.TarError as e:
        raise OracleError("%s: not a tar: %s" % (label, e))
    try:
        for ti in tf:
            path = norm_path(ti.name)
            comps = path.split("/") if path else []
            base = comps[-1] if comps else ""
            if ti.islnk():
                target = norm_path(ti.linkname)
                node = by_name.get(target)
                if node is None:
                    node = ("lower", target)  # resolved against the merge
                by_name[path] = node
                if any(c.startswith(".wh..wh.") for c in comps):
                    records.append((path, "aufs", None))
                else:
                    records.append((path, "link", node))
                continue
            if base == ".wh..wh..opq" and not any(
                    c.startswith(".wh..wh.") for c in comps[:-1]):
                records.append((path, "opaque", "/".join(comps[:-1])))
                continue
            if any(c.startswith(".wh..wh.") for c in comps):
                node = make_node(tf, ti, label)
                by_name[path] = node
                records.append((path, "aufs", None))
                continue
            if base.startswith(".wh."):
                hidden = "/".join(comps[:-1] + [base[4:]])
                records.append((path, "whiteout", hidden))
                continue
            node = make_node(tf, ti, label)
            by_name[path] = node
            records.append((path, "entry", node))
    except tarfile.TarError as e:
        raise OracleError("%s: bad tar: %s" % (label, e))
    except (EOFError, OSError, zlib.error) as e:
        raise OracleError("%s: truncated or corrupt: %s" % (label, e))
    return records


def make_node(tf, ti, label):
    pax = ti.pax_headers or {}
    if "mtime" in pax:
        mtime, nsec = parse_pax_time(pax["mtime"])
    else:
        mtime, nsec = int(ti.mtime), 0
    xattrs = {}
    for k, v in pax.items():
        if k.startswith("SCHILY.xattr."):
            xattrs[k[len("SCHILY.xattr."):]] = v.encode(
                "utf-8", "surrogateescape").hex()
        elif k.startswith("LIBARCHIVE.xattr."):
            name = base64.urlsafe_b64decode(_pad(k[len("LIBARCHIVE.xattr."):]))
            val = base64.b64decode(_pad(v))
            xattrs.setdefault(name.decode("utf-8", "surrogateescape"),
                              val.hex())
    n = Node(mode=ti.mode & 0o7777, uid=ti.uid, gid=ti.gid, mtime=mtime,
             mtime_nsec=nsec, xattrs=xattrs)
    if ti.isreg():
        if ti.type == tarfile.GNUTYPE_SPARSE or ti.issparse():
            raise OracleError("%s: sparse file %r not supported"
                              % (label, ti.name))
        n.type = "file"
        h = hashlib.sha256()
        size = 0
        src = tf.extractfile(ti)
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
        if size != ti.size:
            raise OracleError("%s: %r: short data" % (label, ti.name))
        n.size = size
        n.sha256 = h.hexdigest()
    elif ti.isdir():
        n.type = "dir"
    elif ti.issym():
        n.type = "symlink"
        n.mode = 0o777
        n.target = ti.linkname
    elif ti.ischr():
        n.type = "char"
        n.rdev = [ti.devmajor, ti.devminor]
    elif ti.isblk():
        n.type = "block"
        n.rdev = [ti.devmajor, ti.devminor]
    elif ti.isfifo():
        n.type = "fifo"
    else:
        raise OracleError("%s: %r: unsupported tar type %r"
                          % (label, ti.name, ti.type))
    return n


def _pad(s):
    return s + "=" * (-len(s) % 4)


# --------------------------------------------------------------------------
# The merged tree

class Tree:
    def __init__(self):
        self.nodes = {"": Node(type="dir", **DEFAULT_DIR)}
        self.children = {"": set()}

    def remove(self, path):
        if path not in self.nodes:
            return
        for c in list(self.children.get(path, ())):
            self.remove(c)
        self.children.pop(path, None)
        del self.nodes[path]
        if path:
            self.children[posixpath.dirname(path)].discard(path)

    def clear_children(self, path):
        for c in list(self.children.get(path, ())):
            self.remove(c)

    def put(self, path, node):
        self.nodes[path] = node
        if path:
            self.children[posixpath.dirname(path)].add(path)
        if node.type == "dir":
            self.children.setdefault(path, set())

    def ensure_dir(self, path):
        """Makes `path` an (implicit, if new) directory."""
        cur = self.nodes.get(path)
        if cur is not None and cur.type == "dir":
            return
        if path:
            self.ensure_dir(posixpath.dirname(path))
        self.remove(path)
        self.put(path, Node(type="dir", **DEFAULT_DIR))

    def apply_layer(self, records, label):
        # Phase 1: whiteouts and opaque markers act on the lower layers only.
        for path, kind, payload in records:
            if kind == "whiteout":
                if payload:
                    self.remove(payload)
            elif kind == "opaque":
                cur = self.nodes.get(payload)
                if cur is not None and cur.type == "dir":
                    self.clear_children(payload)
        # Resolve hard links whose target is not in this tar.
        lower = dict(self.nodes)
        # Phase 2: the layer's entries, in tar order.
        for path, kind, payload in records:
            if kind == "aufs":
                continue
            if kind in ("whiteout", "opaque"):
                parent = posixpath.dirname(path)
                self.ensure_dir(parent)
                continue
            node = payload
            if isinstance(node, tuple):
                node = lower.get(node[1])
                if node is None:
                    raise OracleError("%s: hard link %r to missing target %r"
                                      % (label, path, payload[1]))
            if kind == "link" and node.type == "dir":
                raise OracleError("%s: hard link %r to a directory"
                                  % (label, path))
            if path == "":
                if node.type != "dir":
                    raise OracleError("%s: root entry is not a directory"
                                      % label)
                self.nodes[""].copy_meta_from(node)
                continue
            self.ensure_dir(posixpath.dirname(path))
            cur = self.nodes.get(path)
            if cur is not None and cur.type == "dir" and node.type == "dir":
                cur.copy_meta_from(node)
                continue
            self.remove(path)
            if node.type == "dir" and kind == "entry":
                # a fresh object: later metadata updates must not alias
                fresh = Node(type="dir")
                fresh.copy_meta_from(node)
                node = fresh
            self.put(path, node)

    def to_json(self):
        groups = {}
        for path, node in self.nodes.items():
            groups.setdefault(id(node), []).append(path)
        out = {}
        for path in sorted(self.nodes):
            node = self.nodes[path]
            e = {"type": node.type, "mode": node.mode, "uid": node.uid,
                 "gid": node.gid, "mtime": node.mtime,
                 "mtime_nsec": node.mtime_nsec}
            if node.type == "file":
                names = groups[id(node)]
                e["size"] = node.size
                e["sha256"] = node.sha256
                e["nlink"] = len(names)
                if len(names) > 1:
                    e["link_group"] = min(names)
            elif node.type == "symlink":
                e["target"] = node.target
            elif node.type in ("char", "block"):
                e["rdev"] = list(node.rdev)
            if node.xattrs:
                e["xattrs"] = dict(sorted(node.xattrs.items()))
            out[path] = e
        return out


class HashReader:
    """Read-through sha256 of a binary stream."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()

    def read(self, n=-1):
        b = self.f.read(n)
        self.h.update(b)
        return b

    def drain(self):
        while self.read(1 << 20):
            pass
        return "sha256:" + self.h.hexdigest()


def merge_layers(layers):
    """layers: list of (label, opener, blob digest or None, diff id or None);
    opener() returns a seekable binary file. Digests given are verified."""
    tree = Tree()
    for label, opener, blob_digest, diff_id in layers:
        with opener() as f:
            raw = HashReader(f)
            stream = HashReader(open_maybe_compressed(raw))
            records = read_layer(stream, label)
            try:
                got_diff = stream.drain()
            except (EOFError, OSError, zlib.error) as e:
                raise OracleError("%s: corrupt: %s" % (label, e))
            got_blob = raw.drain()
        if blob_digest and got_blob != blob_digest:
            raise OracleError("%s: blob digest mismatch: content is %s"
                              % (label, got_blob))
        if diff_id and got_diff != diff_id:
            raise OracleError("%s: diff id mismatch: config says %s, the "
                              "uncompressed layer is %s"
                              % (label, diff_id, got_diff))
        tree.apply_layer(records, label)
    return tree.to_json()


# --------------------------------------------------------------------------
# Images

def image_layers(spec, tag=None):
    """Returns [(label, opener)] of an image's layers, bottom first."""
    ref = None
    path = spec
    if not os.path.exists(path) and ":" in spec:
        path, _, ref = spec.partition(":")
    if os.path.isdir(path):
        return oci_layout_layers(DirSource(path), ref or tag)
    src = TarSource(path)
    names = src.names()
    if "manifest.json" in names:
        return docker_archive_layers(src, tag)
    if "index.json" in names and "oci-layout" in names:
        return oci_layout_layers(src, ref or tag)
    if "repositories" in names:
        return legacy_layers(src, tag)
    raise OracleError("%s: not a docker-archive, legacy archive or OCI image"
                      % spec)


class DirSource:
    def __init__(self, root):
        self.root = root

    def read(self, name):
        with self.open(name) as f:
            return f.read()

    def open(self, name):
        p = os.path.join(self.root, name)
        if not os.path.isfile(p):
            raise OracleError("%s: missing %s" % (self.root, name))
        return open(p, "rb")


class TarSource:
    def __init__(self, path):
        self.path = path
        self.tf = tarfile.open(path, "r:*")
        self.members = {}
        for m in self.tf.getmembers():
            self.members[norm_path(m.name)] = m

    def names(self):
        return self.members

    def read(self, name):
        with self.open(name) as f:
            return f.read()

    def open(self, name):
        m = self.members.get(norm_path(name))
        seen = 0
        while m is not None and m.issym() and seen < 16:
            m = self.members.get(norm_path(posixpath.join(
                posixpath.dirname(norm_path(name)), m.linkname)))
            seen += 1
        if m is None or not m.isreg():
            raise OracleError("%s: missing member %s" % (self.path, name))
        return self.tf.extractfile(m)


def docker_archive_layers(src, tag):
    manifest = json.loads(src.read("manifest.json"))
    if not manifest:
        raise OracleError("empty manifest.json")
    entry = manifest[0]
    if tag:
        matches = [m for m in manifest if tag in (m.get("RepoTags") or [])]
        if not matches:
            raise OracleError("no manifest entry tagged %s" % tag)
        entry = matches[0]
    config = json.loads(src.read(entry["Config"]))
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(entry["Layers"]):
        raise OracleError("%d layers but %d diff_ids"
                          % (len(entry["Layers"]), len(diff_ids)))
    return [(name, _opener(src, name), None, d)
            for name, d in zip(entry["Layers"], diff_ids)]


def legacy_layers(src, tag):
    repos = json.loads(src.read("repositories"))
    top = None
    for repo, tags in sorted(repos.items()):
        for t, v1id in sorted(tags.items()):
            if tag in (None, "%s:%s" % (repo, t)):
                top = v1id
                break
        if top:
            break
    if top is None:
        raise OracleError("no image in repositories")
    chain = []
    cur = top
    while cur:
        if cur in chain:
            raise OracleError("parent loop in legacy archive")
        chain.append(cur)
        cur = json.loads(src.read("%s/json" % cur)).get("parent")
    chain.reverse()
    return [("%s/layer.tar" % i, _opener(src, "%s/layer.tar" % i), None, None)
            for i in chain]


def oci_layout_layers(src, ref):
    index = json.loads(src.read("index.json"))
    mans = index.get("manifests") or []
    if ref:
        mans = [m for m in mans if (m.get("annotations") or {}).get(
            "org.opencontainers.image.ref.name") == ref]
    if not mans:
        raise OracleError("no manifest%s in index.json"
                          % (" named %s" % ref if ref else ""))
    desc = mans[0]
    while True:
        blob = json.loads(_read_blob(src, desc))
        if "layers" in blob:
            break
        if "manifests" in blob and blob["manifests"]:  # nested index
            desc = blob["manifests"][0]
            continue
        raise OracleError("unsupported manifest %s" % desc["digest"])
    config = json.loads(_read_blob(src, blob["config"]))
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(blob["layers"]):
        raise OracleError("%d layers but %d diff_ids"
                          % (len(blob["layers"]), len(diff_ids)))
    return [(l["digest"], _opener(src, _blob(l)), l["digest"], d)
            for l, d in zip(blob["layers"], diff_ids)]


def _read_blob(src, desc):
    data = src.read(_blob(desc))
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if desc["digest"].startswith("sha256:") and got != desc["digest"]:
        raise OracleError("blob %s: content is %s" % (desc["digest"], got))
    return data


def _blob(desc):
    algo, _, hexd = desc["digest"].partition(":")
    return "blobs/%s/%s" % (algo, hexd)


def _opener(src, name):
    def opener():
        # tar members: copy into memory so the stream is seekable and the
        # outer tar is not read concurrently
        f = src.open(name)
        if isinstance(src, TarSource):
            data = f.read()
            f.close()
            return io.BytesIO(data)
        return f
    return opener


# --------------------------------------------------------------------------
# Snapshot of a real directory tree

def snapshot(root):
    out = {}
    inodes = {}
    st_root = os.lstat(root)
    stack = [""]
    entries = []
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        st = os.lstat(full) if rel else st_root
        entries.append((rel, full, st))
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(full)):
                stack.append(posixpath.join(rel, name) if rel else name)
    for rel, full, st in entries:
        m = st.st_mode
        e = {"mode": stat.S_IMODE(m), "uid": st.st_uid, "gid": st.st_gid}
        sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        e["mtime"] = sec
        e["mtime_nsec"] = nsec
        if stat.S_ISREG(m):
            e["type"] = "file"
            e["size"] = st.st_size
            e["sha256"] = _hash_file(full)
            e["nlink"] = st.st_nlink
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif stat.S_ISDIR(m):
            e["type"] = "dir"
        elif stat.S_ISLNK(m):
            e["type"] = "symlink"
            e["target"] = os.fsdecode(os.readlink(full))
        elif stat.S_ISCHR(m):
            e["type"] = "char"
            e["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        elif stat.S_ISBLK(m):
            e["type"] = "block"
            e["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        elif stat.S_ISFIFO(m):
            e["type"] = "fifo"
        elif stat.S_ISSOCK(m):
            e["type"] = "socket"
        x = _xattrs(full)
        if x:
            e["xattrs"] = x
        out[rel] = e
    for paths in inodes.values():
        if len(paths) > 1:
            g = min(paths)
            for p in paths:
                out[p]["link_group"] = g
    return {k: out[k] for k in sorted(out)}


def _hash_file(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
    except OSError as e:
        return "unreadable: %s" % e.strerror
    return h.hexdigest()


def _xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False).hex()
        except OSError as e:
            out[n] = "unreadable: %s" % e.strerror
    return out


# --------------------------------------------------------------------------
# Compare

def compare(a_path, b_path, ignore, ignore_paths=()):
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    for g in ignore_paths:
        a = {p: e for p, e in a.items() if not fnmatch.fnmatchcase(p, g)}
        b = {p: e for p, e in b.items() if not fnmatch.fnmatchcase(p, g)}
    rules = []  # (field, glob or None)
    for i in ignore:
        field, at, glob = i.partition("@")
        rules.append((field, glob if at else None))  # "f@" = the root only

    def ignored(field, path):
        return any(f == field and (g is None or fnmatch.fnmatchcase(path, g))
                   for f, g in rules)

    lines = []
    for p in sorted(set(a) - set(b)):
        lines.append("- %s: only in %s (%s)" % (p or "/", a_path,
                                               a[p].get("type")))
    for p in sorted(set(b) - set(a)):
        lines.append("+ %s: only in %s (%s)" % (p or "/", b_path,
                                               b[p].get("type")))
    for p in sorted(set(a) & set(b)):
        ea, eb = a[p], b[p]
        for field in sorted(set(ea) | set(eb)):
            if ignored(field, p):
                continue
            va, vb = ea.get(field), eb.get(field)
            if va != vb:
                lines.append("~ %s: %s: %s != %s" % (
                    p or "/", field, _show(field, va), _show(field, vb)))
    if lines:
        print("%d difference(s) between %s (-) and %s (+):"
              % (len(lines), a_path, b_path))
        for l in lines:
            print(l)
        return 1
    print("identical: %d paths" % len(a))
    return 0


def _show(field, v):
    if v is None:
        return "(absent)"
    if field == "mode" and isinstance(v, int):
        return "0o%o" % v
    return json.dumps(v, sort_keys=True)


# --------------------------------------------------------------------------

def main(argv):
    ap = argparse.ArgumentParser(
        description="Merged tree of image layers as JSON (see docstring).")
    ap.add_argument("layers", nargs="*", help="layer tars, bottom first")
    ap.add_argument("--image", help="docker-archive / legacy / OCI image")
    ap.add_argument("--tag", help="with --image: which tagged image")
    ap.add_argument("--snapshot", metavar="DIR")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"))
    ap.add_argument("--ignore", action="append", default=[],
                    metavar="FIELD[@GLOB]",
                    help="with --compare: skip FIELD (for paths matching "
                         "GLOB only, if given); repeatable")
    ap.add_argument("--ignore-path", action="append", default=[],
                    metavar="GLOB",
                    help="with --compare: skip paths matching GLOB (fnmatch, "
                         "'*' also matches '/'); repeatable")
    args = ap.parse_args(argv)
    modes = sum(bool(x) for x in (args.layers, args.image, args.snapshot,
                                  args.compare))
    if modes != 1:
        ap.error("give layers, or one of --image, --snapshot, --compare")
    try:
        if args.compare:
            return compare(args.compare[0], args.compare[1], args.ignore,
                           args.ignore_path)
        if args.snapshot:
            result = snapshot(args.snapshot)
        elif args.image:
            result = merge_layers(image_layers(args.image, args.tag))
        else:
            for p in args.layers:
                if not os.path.isfile(p):
                    raise OracleError("%s: not a file" % p)
            result = merge_layers([(p, (lambda p=p: open(p, "rb")), None,
                                    None) for p in args.layers])
    except (OracleError, tarfile.TarError, OSError, ValueError,
            KeyError, zlib.error) as e:
        print("oracle: error: %s" % e, file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
