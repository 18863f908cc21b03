#!/usr/bin/env python3
"""Extract an image's layers into real directories, independently of layerfs.

Python standard library only; uses `oracle_merge.py` (next to this file) to
find an archive's layers and to normalize names, and otherwise applies the
same Docker/OCI layer rules as its docstring describes. Must run as root
(owners, device nodes, `trusted.*` xattrs).

Usage
-----
  oracle_extract.py --image ARCHIVE --merged DIR
      The merged tree of all layers, applied bottom first into DIR (created;
      must not exist): the "plain directory" oracle.
  oracle_extract.py --image ARCHIVE --overlay-layers DIR
      Each layer into DIR/0, DIR/1, ... (bottom first), in kernel overlayfs
      lower-layer format: `.wh.NAME` becomes a character device 0:0 `NAME`,
      `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its
      directory, other `.wh..wh.*` (AUFS metadata) are dropped. Prints the
      layer directories, bottom first, one a line.
  oracle_extract.py --image ARCHIVE --layer-tars DIR
      Each layer's uncompressed tar as DIR/0.tar, DIR/1.tar, ... (bottom
      first), for `oracle_merge.py LAYER.tar...`.
  oracle_extract.py --pack DIR --out LAYER.tar [--exclude NAME ...]
      The reverse: a real directory (e.g. a read-write branch in AUFS
      layer-diff format) as a PAX layer tar, root entry "./" included,
      names sorted, hard links as link entries, exact mtimes (PAX "mtime"
      with nanoseconds), xattrs other than trusted.* as SCHILY.xattr.*;
      top-level entries named NAME are left out with their subtree.

--merged, --overlay-layers and --layer-tars may be given in one call.
Layer digests are checked against the config's rootfs.diff_ids.

Rules applied (as oracle_merge.py): within a layer, whiteouts and opaque
markers act on lower layers only (applied before the layer's entries); a
later entry of a path replaces an earlier one (a directory over a directory
only updates its metadata); a non-directory replaces a directory with its
subtree and vice versa; a directory that only appears as a parent is created
0755 0:0 mtime 0 (or keeps the lower directory); a hard link names the inode
of its target (the latest earlier entry of that name in the layer, else the
lower merged path). Directory mtimes are set last, deepest first, so that
creating children does not change them.
"""

import argparse
import hashlib
import os
import posixpath
import shutil
import stat
import sys
import tarfile

sys.dont_write_bytecode = True  # no tools/__pycache__ from the import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle_merge as om  # noqa: E402


def rm_rf(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def read_records(data, label):
    """Layer tar bytes -> list of (path, kind, TarInfo, payload), tar order.

    kind: "entry", "link" (payload: target path), "whiteout" (payload: the
    hidden path), "opaque" (payload: the directory); AUFS metadata dropped.
    """
    import io
    out = []
    tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:",
                      encoding="utf-8", errors="surrogateescape")
    for ti in tf:
        path = om.norm_path(ti.name)
        comps = path.split("/") if path else []
        base = comps[-1] if comps else ""
        aufs = any(c.startswith(".wh..wh.") for c in comps[:-1])
        if base == ".wh..wh..opq" and not aufs:
            out.append((path, "opaque", ti, "/".join(comps[:-1]), None))
        elif aufs or base.startswith(".wh..wh."):
            continue  # AUFS metadata (.wh..wh.plnk/ ...): never shown
        elif base.startswith(".wh."):
            out.append((path, "whiteout", ti,
                        "/".join(comps[:-1] + [base[4:]]), None))
        elif ti.islnk():
            out.append((path, "link", ti, om.norm_path(ti.linkname), None))
        else:
            content = tf.extractfile(ti).read() if ti.isreg() else None
            out.append((path, "entry", ti, None, content))
    return out


class Extractor:
    def __init__(self, root):
        self.root = root
        self.dir_times = {}  # rel path -> (sec, nsec), applied at the end

    def full(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def ensure_dir(self, rel):
        full = self.full(rel)
        try:
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                return
            os.unlink(full)
        except FileNotFoundError:
            pass
        if rel:
            self.ensure_dir(posixpath.dirname(rel))
        os.mkdir(full)
        os.chmod(full, 0o755)
        os.lchown(full, 0, 0)
        self.dir_times[rel] = (0, 0)

    def meta(self, full, ti, is_link=False):
        os.lchown(full, ti.uid, ti.gid)
        if not is_link:
            os.chmod(full, ti.mode & 0o7777)  # after chown: it clears setuid
        pax = ti.pax_headers or {}
        for k, v in pax.items():
            if k.startswith("SCHILY.xattr."):
                os.setxattr(full, k[len("SCHILY.xattr."):],
                            v.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
        sec, nsec = (om.parse_pax_time(pax["mtime"]) if "mtime" in pax
                     else (int(ti.mtime), 0))
        if ti.isdir():
            return sec, nsec
        ns = sec * 1_000_000_000 + nsec
        os.utime(full, ns=(ns, ns), follow_symlinks=False)
        return sec, nsec

    def put_entry(self, path, ti, content, lower_root=None):
        """Creates one tar entry (kind "entry") at `path`."""
        full = self.full(path)
        if path == "":
            self.dir_times[""] = self.meta(full, ti)
            return
        self.ensure_dir(posixpath.dirname(path))
        try:
            cur = os.lstat(full)
        except FileNotFoundError:
            cur = None
        if cur is not None and not (ti.isdir() and stat.S_ISDIR(cur.st_mode)):
            rm_rf(full)
        if ti.isreg():
            with open(full, "wb") as f:
                f.write(content)
        elif ti.isdir():
            if cur is None or not stat.S_ISDIR(cur.st_mode):
                os.mkdir(full)
        elif ti.issym():
            os.symlink(ti.linkname, full)
        elif ti.ischr() or ti.isblk():
            kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
            os.mknod(full, kind | 0o600, os.makedev(ti.devmajor, ti.devminor))
        elif ti.isfifo():
            os.mkfifo(full, 0o600)
        else:
            raise om.OracleError("%s: unsupported tar type %r"
                                 % (path, ti.type))
        t = self.meta(full, ti, is_link=ti.issym())
        if ti.isdir():
            self.dir_times[path] = t

    def put_link(self, path, target, fallback_root=None):
        full = self.full(path)
        self.ensure_dir(posixpath.dirname(path))
        rm_rf(full)
        src = self.full(target)
        if os.path.lexists(src):
            os.link(src, full, follow_symlinks=False)
        elif fallback_root is not None:
            # overlay layer dirs: a hard link to a lower layer's file cannot
            # be one inode across layer directories; a copy is what a
            # layer-per-directory driver (docker overlay2) does too.
            shutil.copy2(os.path.join(fallback_root, target), full,
                         follow_symlinks=False)
        else:
            raise om.OracleError("hard link %r to missing %r" % (path, target))

    def finish(self):
        for rel in sorted(self.dir_times, key=lambda p: -p.count("/")
                          - (1 if p else 0)):
            full = self.full(rel)
            if os.path.isdir(full) and not os.path.islink(full):
                sec, nsec = self.dir_times[rel]
                ns = sec * 1_000_000_000 + nsec
                os.utime(full, ns=(ns, ns))


def layer_bytes(spec):
    out = []
    for label, opener, _blob, diff_id in om.image_layers(spec):
        with opener() as f:
            data = om.open_maybe_compressed(f).read()
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if diff_id and got != diff_id:
            raise om.OracleError("%s: diff id mismatch (%s)" % (label, got))
        out.append((label, data))
    return out


def extract_merged(layers, dest):
    os.mkdir(dest)
    os.chmod(dest, 0o755)
    os.lchown(dest, 0, 0)
    ex = Extractor(dest)
    ex.dir_times[""] = (0, 0)
    for label, data in layers:
        recs = read_records(data, label)
        # Phase 1: whiteouts and opaque markers hide lower entries only.
        for path, kind, ti, payload, _ in recs:
            if kind == "whiteout" and payload:
                rm_rf(ex.full(payload))
            elif kind == "opaque":
                d = ex.full(payload)
                if os.path.isdir(d) and not os.path.islink(d):
                    for n in os.listdir(d):
                        rm_rf(os.path.join(d, n))
        # Phase 2: entries in tar order.
        for path, kind, ti, payload, content in recs:
            if kind in ("whiteout", "opaque"):
                ex.ensure_dir(posixpath.dirname(path))
            elif kind == "link":
                ex.put_link(path, payload)
            else:
                ex.put_entry(path, ti, content)
    ex.finish()


def extract_overlay_layers(layers, dest):
    os.mkdir(dest)
    dirs = []
    merged_so_far = os.path.join(dest, "merged.tmp")
    for i, (label, data) in enumerate(layers):
        d = os.path.join(dest, str(i))
        os.mkdir(d)
        os.chmod(d, 0o755)
        ex = Extractor(d)
        recs = read_records(data, label)
        created = set()
        for path, kind, ti, payload, content in recs:
            if kind == "link":
                ex.put_link(path, payload, fallback_root=merged_so_far)
                created.add(path)
            elif kind == "entry":
                ex.put_entry(path, ti, content)
                created.add(path)
        for path, kind, ti, payload, _ in recs:
            if kind == "whiteout" and payload:
                full = ex.full(payload)
                if payload in created:
                    # hides only lower entries: a directory of this layer
                    # then shows only its own children (opaque)
                    if os.path.isdir(full) and not os.path.islink(full):
                        os.setxattr(full, "trusted.overlay.opaque", b"y")
                    continue
                ex.ensure_dir(posixpath.dirname(payload))
                os.mknod(full, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            elif kind == "opaque":
                ex.ensure_dir(payload)
                os.setxattr(ex.full(payload), "trusted.overlay.opaque", b"y")
        ex.finish()
        dirs.append(d)
        # the merge so far, for hard links into lower layers
        rm_rf(merged_so_far)
        extract_merged(layers[:i + 1], merged_so_far)
    rm_rf(merged_so_far)
    return dirs


def pack(src, out, exclude):
    seen = {}  # (st_dev, st_ino) -> name of its first entry
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tf:
        stack = [""]
        while stack:
            rel = stack.pop()
            full = os.path.join(src, rel) if rel else src
            st = os.lstat(full)
            m = st.st_mode
            ti = tarfile.TarInfo(rel or ".")
            ti.uid, ti.gid = st.st_uid, st.st_gid
            ti.uname = ti.gname = ""
            ti.mode = stat.S_IMODE(m)
            sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
            ti.mtime = sec
            pax = {"mtime": "%d.%09d" % (sec, nsec)}
            for n in sorted(os.listxattr(full, follow_symlinks=False)):
                if n.startswith("trusted."):
                    continue
                v = os.getxattr(full, n, follow_symlinks=False)
                pax["SCHILY.xattr." + n] = v.decode("utf-8",
                                                    "surrogateescape")
            ti.pax_headers = pax
            data = None
            if stat.S_ISREG(m):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = seen[key]
                else:
                    seen[key] = rel
                    ti.type = tarfile.REGTYPE
                    ti.size = st.st_size
                    data = open(full, "rb")
            elif stat.S_ISDIR(m):
                ti.type = tarfile.DIRTYPE
                names = sorted(os.listdir(full), reverse=True)
                for n in names:
                    if not rel and n in exclude:
                        continue
                    stack.append(posixpath.join(rel, n) if rel else n)
            elif stat.S_ISLNK(m):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(full)
            elif stat.S_ISFIFO(m):
                ti.type = tarfile.FIFOTYPE
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
                ti.devmajor = os.major(st.st_rdev)
                ti.devminor = os.minor(st.st_rdev)
            else:
                raise om.OracleError("%s: cannot pack this file type" % full)
            try:
                tf.addfile(ti, data)
            finally:
                if data is not None:
                    data.close()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image")
    ap.add_argument("--merged", metavar="DIR")
    ap.add_argument("--overlay-layers", metavar="DIR")
    ap.add_argument("--layer-tars", metavar="DIR")
    ap.add_argument("--pack", metavar="DIR")
    ap.add_argument("--out", metavar="LAYER.tar")
    ap.add_argument("--exclude", action="append", default=[], metavar="NAME")
    args = ap.parse_args(argv)
    if args.pack:
        if not args.out or args.image:
            ap.error("--pack DIR needs --out LAYER.tar (and no --image)")
        try:
            pack(args.pack, args.out, set(args.exclude))
        except (om.OracleError, tarfile.TarError, OSError) as e:
            print("oracle_extract: error: %s" % e, file=sys.stderr)
            return 2
        return 0
    if not args.image or not (args.merged or args.overlay_layers
                              or args.layer_tars):
        ap.error("give --image ARCHIVE and --merged DIR, --overlay-layers "
                 "DIR and/or --layer-tars DIR (or --pack)")
    if os.geteuid() != 0:
        print("oracle_extract: must run as root", file=sys.stderr)
        return 2
    os.umask(0)
    try:
        layers = layer_bytes(args.image)
        if args.merged:
            extract_merged(layers, args.merged)
        if args.overlay_layers:
            for d in extract_overlay_layers(layers, args.overlay_layers):
                print(d)
        if args.layer_tars:
            os.mkdir(args.layer_tars, 0o755)
            for i, (_label, data) in enumerate(layers):
                with open(os.path.join(args.layer_tars, "%d.tar" % i),
                          "wb") as f:
                    f.write(data)
    except (om.OracleError, tarfile.TarError, OSError) as e:
        print("oracle_extract: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
