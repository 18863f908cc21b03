#!/usr/bin/env python3
"""Applies image layers to a real directory, the way Docker's layer store
does: the plain-directory counterpart of the merged tree that
`oracle_merge.py` describes as JSON. Used by tests/rw_workloads.rs to run
the same workload on a plain directory and on a layerfs mount.

Python standard library only; shares no code with src/ (the archive
parsing, i.e. manifest.json / OCI index reading and decompression, is
borrowed from oracle_merge.py; the layer application below is separate).
Run as root to keep owners and to create devices.

Usage
-----
  apply_layers.py --image ARCHIVE DEST     image (any format oracle_merge.py
                                           reads) applied into DEST
  apply_layers.py DEST LAYER.tar [...]     layers, bottom first
  apply_layers.py --overlay-layers ARCHIVE DEST
                                           each layer extracted into DEST/0,
                                           DEST/1, ... (bottom first) in
                                           kernel overlayfs format: whiteouts
                                           become 0:0 char devices, opaque
                                           markers the trusted.overlay.opaque
                                           xattr; use lowerdir=DEST/N:...:DEST/0

DEST is created if missing (it must be empty). The rules are those in the
docstring of oracle_merge.py: whiteouts and opaque markers hide only lower
layers; later entries of a tar replace earlier ones (a directory over a
directory only updates its metadata); a non-directory replaces a directory
with its subtree and the other way round; directories that only appear as
parents get mode 0755, owner 0:0 and mtime 0 (or keep a lower directory);
AUFS `.wh..wh.*` entries are dropped; a hard link links to its target as it
stands when the entry is applied. Times (with PAX nanoseconds) are set last,
deepest first, so creating children does not disturb them.
"""

import os
import shutil
import stat
import sys
import tarfile
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in tools/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle_merge as om  # noqa: E402  (archive parsing only)


class ApplyError(Exception):
    pass


def classify(path):
    """-> ("entry" | "whiteout" | "opaque" | "aufs", payload)."""
    comps = path.split("/") if path else []
    base = comps[-1] if comps else ""
    if base == ".wh..wh..opq" and not any(
            c.startswith(".wh..wh.") for c in comps[:-1]):
        return "opaque", "/".join(comps[:-1])
    if any(c.startswith(".wh..wh.") for c in comps):
        return "aufs", None
    if base.startswith(".wh."):
        return "whiteout", "/".join(comps[:-1] + [base[4:]])
    return "entry", None


def is_real_dir(p):
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except FileNotFoundError:
        return False


def remove_any(p):
    if is_real_dir(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.unlink(p)


def entry_time(ti):
    pax = ti.pax_headers or {}
    if "mtime" in pax:
        sec, nsec = om.parse_pax_time(pax["mtime"])
    else:
        sec, nsec = int(ti.mtime), 0
    return sec * 1_000_000_000 + nsec


def set_meta(full, ti, symlink=False):
    os.chown(full, ti.uid, ti.gid, follow_symlinks=False)
    if not symlink:
        os.chmod(full, ti.mode & 0o7777)
    for k, v in (ti.pax_headers or {}).items():
        if k.startswith("SCHILY.xattr."):
            os.setxattr(full, k[len("SCHILY.xattr."):],
                        v.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False)


class Applier:
    def __init__(self, dest):
        self.dest = dest
        self.times = {"": 0}  # path -> mtime in ns, set at the end
        os.makedirs(dest, exist_ok=True)
        if os.listdir(dest):
            raise ApplyError("%s is not empty" % dest)
        os.chown(dest, 0, 0)
        os.chmod(dest, 0o755)

    def full(self, rel):
        return os.path.join(self.dest, rel) if rel else self.dest

    def ensure_dir(self, rel):
        if rel == "" or is_real_dir(self.full(rel)):
            return
        self.ensure_dir(os.path.dirname(rel))
        remove_any(self.full(rel))
        os.mkdir(self.full(rel))
        os.chown(self.full(rel), 0, 0)
        os.chmod(self.full(rel), 0o755)
        self.times[rel] = 0

    def apply(self, tf, label):
        members = tf.getmembers()
        recs = []
        for ti in members:
            path = om.norm_path(ti.name)
            kind, payload = classify(path)
            recs.append((path, kind, payload, ti))
        # Phase 1: whiteouts and opaque markers hide lower layers only.
        for path, kind, payload, _ in recs:
            if kind == "whiteout" and payload:
                remove_any(self.full(payload))
            elif kind == "opaque" and is_real_dir(self.full(payload)):
                for name in os.listdir(self.full(payload)):
                    remove_any(os.path.join(self.full(payload), name))
        # Phase 2: the entries, in tar order.
        for path, kind, payload, ti in recs:
            if kind == "aufs":
                continue
            if kind in ("whiteout", "opaque"):
                self.ensure_dir(os.path.dirname(path))
                continue
            full = self.full(path)
            if path == "":
                if not ti.isdir():
                    raise ApplyError("%s: root entry is not a directory"
                                     % label)
                set_meta(full, ti)
                self.times[""] = entry_time(ti)
                continue
            self.ensure_dir(os.path.dirname(path))
            if ti.isdir() and is_real_dir(full):
                set_meta(full, ti)
                self.times[path] = entry_time(ti)
                continue
            if ti.islnk():
                target = om.norm_path(ti.linkname)
                tfull = self.full(target)
                if not os.path.lexists(tfull) or is_real_dir(tfull):
                    raise ApplyError("%s: hard link %r to missing target %r"
                                     % (label, path, target))
                if os.path.lexists(full):
                    if os.path.samefile(full, tfull):
                        continue
                    remove_any(full)
                os.link(tfull, full, follow_symlinks=False)
                self.times[path] = self.times.get(target, 0)
                continue
            remove_any(full)
            if ti.isreg():
                src = tf.extractfile(ti)
                with open(full, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                set_meta(full, ti)
            elif ti.isdir():
                os.mkdir(full)
                set_meta(full, ti)
            elif ti.issym():
                os.symlink(ti.linkname, full)
                set_meta(full, ti, symlink=True)
            elif ti.ischr() or ti.isblk():
                kind_bit = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
                os.mknod(full, kind_bit | 0o600,
                         os.makedev(ti.devmajor, ti.devminor))
                set_meta(full, ti)
            elif ti.isfifo():
                os.mkfifo(full)
                set_meta(full, ti)
            else:
                raise ApplyError("%s: %r: unsupported tar type %r"
                                 % (label, ti.name, ti.type))
            self.times[path] = entry_time(ti)

    def finish(self):
        """Sets every time, deepest first. A hard link's names share one
        inode, so any of them sets it (they were given the same time)."""
        paths = []
        for top, dirs, files in os.walk(self.dest):
            rel_top = os.path.relpath(top, self.dest)
            rel_top = "" if rel_top == "." else rel_top
            for n in dirs + files:
                paths.append(os.path.join(rel_top, n) if rel_top else n)
        paths.append("")
        paths.sort(key=lambda p: (-p.count("/") if p else 1, p))
        for rel in paths:
            t = self.times.get(rel)
            if t is None:
                raise ApplyError("no time recorded for %r" % rel)
            os.utime(self.full(rel), ns=(t, t), follow_symlinks=False)


def open_layer(opener):
    """-> a seekable uncompressed tar file object (spooled to disk)."""
    tmp = tempfile.TemporaryFile()
    with opener() as f:
        shutil.copyfileobj(om.open_maybe_compressed(f), tmp, 1 << 20)
    tmp.seek(0)
    return tmp


def apply_layers(dest, layers):
    """layers: [(label, opener)] bottom first."""
    a = Applier(dest)
    for label, opener in layers:
        with open_layer(opener) as f:
            with tarfile.open(fileobj=f, mode="r:", encoding="utf-8",
                              errors="surrogateescape") as tf:
                a.apply(tf, label)
    a.finish()


def overlay_layers(dest, layers):
    """Each layer on its own in overlayfs format, in DEST/0, DEST/1, ..."""
    os.makedirs(dest, exist_ok=True)
    for i, (label, opener) in enumerate(layers):
        d = os.path.join(dest, str(i))
        a = Applier(d)
        whiteouts, opaques = [], []
        with open_layer(opener) as f:
            with tarfile.open(fileobj=f, mode="r:", encoding="utf-8",
                              errors="surrogateescape") as tf:
                for ti in tf.getmembers():
                    kind, payload = classify(om.norm_path(ti.name))
                    if kind == "whiteout":
                        whiteouts.append(payload)
                    elif kind == "opaque":
                        opaques.append(payload)
                # On its own, a layer's whiteouts hide nothing.
                a.apply(tf, label)
        for p in whiteouts:
            if not os.path.lexists(a.full(p)):
                a.ensure_dir(os.path.dirname(p))
                os.mknod(a.full(p), stat.S_IFCHR | 0o000, os.makedev(0, 0))
                a.times[p] = 0
        for p in opaques:
            os.setxattr(a.full(p), "trusted.overlay.opaque", b"y")
        a.finish()


def main(argv):
    try:
        if len(argv) == 3 and argv[0] == "--image":
            layers = [(l, o) for l, o, _, _ in om.image_layers(argv[1])]
            apply_layers(argv[2], layers)
        elif len(argv) == 3 and argv[0] == "--overlay-layers":
            layers = [(l, o) for l, o, _, _ in om.image_layers(argv[1])]
            overlay_layers(argv[2], layers)
        elif len(argv) >= 2 and not argv[0].startswith("-"):
            apply_layers(argv[0], [(p, (lambda p=p: open(p, "rb")))
                                   for p in argv[1:]])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (ApplyError, om.OracleError, tarfile.TarError, OSError) as e:
        print("apply_layers: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
