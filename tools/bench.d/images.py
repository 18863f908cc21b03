"""The benchmark images of tools/bench (Python 3.11 stdlib only).

Every synthetic image is deterministic: names, sizes, contents, modes and
tar header times come from a seeded random.Random and fixed constants, so
the same seed and sizes give byte-identical layer tars (and image ids) on
every machine. The Debian image is made by debootstrap and is only as
reproducible as the mirror it is fetched from.

For each image this module writes:

  WORK/images/NAME/layer-K.tar      the layer tars, bottom first
  WORK/images/NAME/NAME.docker.tar  a docker-archive of them (manifest.json,
                                    config with rootfs.diff_ids, v1 dirs)
  WORK/ovl/NAME/K/                  layer K extracted with GNU tar and its
                                    whiteouts converted to the overlay format
                                    (char device 0:0, trusted.overlay.opaque
                                    and user.overlay.opaque for unprivileged
                                    readers)

Images (full sizes; --quick shrinks the counts):

  synth5     5 layers x 4000 tree files: layer 0 has chmod/ (500 files) and
             tmp/ (empty, 01777); every higher layer overrides 400 lower
             files, whites out 200 lower files and one lower directory, and
             replaces one lower directory by an opaque one. Plus wide/, a
             directory of 10000 entries (2000 per layer).
  depthN     the same 20000 files (N = 1, 16, 64, 128 layers): file i lives
             in layer i % N, so every directory has entries in many layers.
  big1g      a 1 GiB file data/big.bin in layer 0, a small layer 1 on top.
  files100k  100000 small files in 4 layers (for the daemon RSS figure).
  files1m    1000000 empty files in one directory, one layer (issue 14:
             daemon RSS after `ls -f` and `find` of it).
  debian     debootstrap --variant=minbase bookworm, split into 4 layers:
             everything but usr/share, etc and var; usr/share; etc + var;
             a clean-up layer (whiteouts, opaque dirs, an override).
"""

import hashlib
import io
import json
import os
import random
import stat
import subprocess
import tarfile
import time

T = 1700000000          # mtime of every synthetic entry
POOL_SIZE = 1 << 22     # 4 MiB of seeded random bytes: file contents slice it


class Sizes:
    """Counts of the synthetic images; --quick uses Sizes(quick=True)."""

    def __init__(self, quick=False):
        if quick:
            self.synth_layers, self.synth_files = 5, 60
            self.synth_chmod, self.synth_wide = 20, 100
            self.synth_override, self.synth_whiteout = 6, 3
            self.synth_opaque_files = 3
            self.synth_dirs, self.synth_subdirs = 4, 3
            self.depth_files, self.depths = 200, [1, 16, 64, 128]
            self.big_bytes = 8 << 20
            self.many_files, self.many_layers = 1000, 4
            self.flat_files = 1000
            self.create_files = 50
            self.tar_files, self.tar_wide, self.tar_layers = 200, 100, [1, 5]
        else:
            self.synth_layers, self.synth_files = 5, 4000
            self.synth_chmod, self.synth_wide = 500, 10000
            self.synth_override, self.synth_whiteout = 400, 200
            self.synth_opaque_files = 50
            self.synth_dirs, self.synth_subdirs = 20, 10
            self.depth_files, self.depths = 20000, [1, 16, 64, 128]
            self.big_bytes = 1 << 30
            self.many_files, self.many_layers = 100000, 4
            self.flat_files = 1000000
            self.create_files = 5000
            self.tar_files, self.tar_wide = 20000, 10000
            self.tar_layers = [1, 5]


# --------------------------------------------------------------------------
# Writing layer tars

class HashWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def tell(self):
        return self.n


class PatternReader:
    """`size` bytes of the seeded pool repeated, each MiB stamped with its
    index (so no two MiB are equal); a file object for tarfile.addfile."""

    def __init__(self, pool, size):
        self.pool, self.size, self.pos = pool, size, 0

    def read(self, n=-1):
        if n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        out = bytearray()
        while len(out) < n:
            mib, off = divmod(self.pos, 1 << 20)
            take = min((1 << 20) - off, n - len(out))
            chunk = bytearray(self.pool[off:off + take])
            if off < 8:
                stamp = mib.to_bytes(8, "little")[off:]
                chunk[0:len(stamp)] = stamp[:len(chunk)]
            out += chunk
            self.pos += take
        return bytes(out)


class LayerWriter:
    """Writes one layer tar (GNU format, root-owned, fixed mtime) and
    returns its sha256 (the diff id). Parent directories are written as
    explicit entries the first time a path needs them."""

    def __init__(self, path, fmt=tarfile.GNU_FORMAT):
        self.path = path
        self.f = open(path, "wb")
        self.hw = HashWriter(self.f)
        self.tar = tarfile.open(fileobj=self.hw, mode="w", format=fmt)
        self.dirs = set()

    def _info(self, name, typ, mode, size=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = typ, mode, size, T
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]))

    def dir(self, name, mode=0o755):
        if name in self.dirs:
            return
        self.parents(name)
        self.dirs.add(name)
        self.tar.addfile(self._info(name + "/", tarfile.DIRTYPE, mode))

    def file(self, name, data=b"", mode=0o644, reader=None, size=None):
        self.parents(name)
        if reader is not None:
            self.tar.addfile(self._info(name, tarfile.REGTYPE, mode, size),
                             reader)
        else:
            self.tar.addfile(self._info(name, tarfile.REGTYPE, mode,
                                        len(data)), io.BytesIO(data))

    def symlink(self, name, target):
        self.parents(name)
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def whiteout(self, path):
        """Hide lower `path` (a file or a directory)."""
        d, _, base = path.rpartition("/")
        self.file((d + "/" if d else "") + ".wh." + base)

    def opaque(self, dirpath):
        self.dir(dirpath)
        self.file(dirpath + "/.wh..wh..opq")

    def close(self):
        self.tar.close()
        self.f.close()
        return "sha256:" + self.hw.h.hexdigest()


def pool_bytes(seed):
    return random.Random(seed).randbytes(POOL_SIZE)


def content(pool, key, size):
    """Deterministic content for (key, size): a slice of the pool."""
    off = (key * 2654435761) % (POOL_SIZE - size)
    return pool[off:off + size]


# --------------------------------------------------------------------------
# The images

class Image:
    """An image's files on disk: layer tars (bottom first), the archive,
    the overlay-format directories; tag is its layerfs tag."""

    def __init__(self, name, work):
        self.name = name
        self.dir = os.path.join(work, "images", name)
        self.ovl = os.path.join(work, "ovl", name)
        self.ovl_user = None    # see user_copy
        self.tag = "bench-" + name + ":latest"
        self.layers = []      # (tar path, diff id)
        self.archive = os.path.join(self.dir, name + ".docker.tar")
        self.notes = {}

    def layer(self, k, fmt=tarfile.GNU_FORMAT):
        os.makedirs(self.dir, exist_ok=True)
        return LayerWriter(os.path.join(self.dir, "layer-%d.tar" % k), fmt)

    def ovl_for(self, user):
        """The overlay dirs an implementation mounts: the root-owned ones,
        or for an unprivileged user the user's copy if one was made."""
        return self.ovl_user if user and self.ovl_user else self.ovl

    def ovl_dirs(self):
        """Overlay lower dir names relative to self.ovl, top first."""
        return [str(k) for k in reversed(range(len(self.layers)))]

    def to_json(self):
        return {"name": self.name, "tag": self.tag,
                "layers": [d for _, d in self.layers], "notes": self.notes}


def make_synth5(img, sz, seed):
    """5 layers with overrides, whiteouts, opaque dirs and a wide dir."""
    rng = random.Random(seed)
    pool = pool_bytes(seed)
    live = {}        # tree file path -> True (files the merged view shows)
    counter = 0

    def tree_dir():
        return "d%02d/s%02d" % (rng.randrange(sz.synth_dirs),
                                rng.randrange(sz.synth_subdirs))

    def size():
        return rng.randrange(0, 8192)

    files = 0
    for k in range(sz.synth_layers):
        w = img.layer(k)
        n = 0
        if k == 0:
            w.dir("tmp", 0o1777)
            for i in range(sz.synth_chmod):
                w.file("chmod/f%04d" % i, content(pool, 10**7 + i, 4096))
                n += 1
        else:
            # a whole lower directory whited out, another one replaced by
            # an opaque directory; nothing else of this layer goes in them
            dirs = sorted({p.rpartition("/")[0] for p in live})
            gone, opq = rng.sample(dirs, 2)
            w.whiteout(gone)
            w.opaque(opq)
            for p in [p for p in live if p.startswith((gone + "/",
                                                       opq + "/"))]:
                del live[p]
            for i in range(sz.synth_opaque_files):
                p = "%s/o%d_%04d" % (opq, k, i)
                w.file(p, content(pool, counter, size()))
                counter += 1
                live[p] = True
                n += 1
            paths = sorted(p for p in live if not p.startswith(opq + "/"))
            # override lower files: same name, new content
            over = rng.sample(paths, min(sz.synth_override, len(paths)))
            for p in over:
                w.file(p, content(pool, counter, size()))
                counter += 1
                n += 1
            # whiteouts of other lower files
            rest = sorted(set(paths) - set(over))
            for p in rng.sample(rest, min(sz.synth_whiteout, len(rest))):
                w.whiteout(p)
                del live[p]
        avoid = () if k == 0 else (gone, opq)
        while n < sz.synth_files:
            d = tree_dir()
            if d in avoid:
                continue
            p = "%s/f%06d" % (d, counter)
            w.file(p, content(pool, counter, size()))
            counter += 1
            live[p] = True
            n += 1
        per = sz.synth_wide // sz.synth_layers
        for i in range(per):
            w.file("wide/w%d_%05d" % (k, i),
                   content(pool, 10**8 + k * per + i, rng.randrange(257)))
        files += n + per
        img.layers.append((w.path, w.close()))
    img.notes = {"layer_files": files, "merged_tree_files": len(live)
                 + sz.synth_chmod, "wide_entries": sz.synth_wide}


def make_pax(img, sz, seed, n):
    """The second harness's recipe (issue 17), in Python tarfile's PAX
    format, each directory's entries sorted, directories before their
    contents: layer L holds usr/dNN/fL_i for i < tar_files/n in 50
    directories (NN = i mod 50), seeded random contents of
    512 + (i*37 mod 8192) bytes, and big/eL_j for j < tar_wide/n (empty);
    every layer above the bottom overrides one bottom file of usr/d00 and
    whites out another."""
    pool = pool_bytes(seed + 7)
    per, wide = sz.tar_files // n, sz.tar_wide // n
    for k in range(n):
        w = img.layer(k, tarfile.PAX_FORMAT)
        entries = {}            # path -> data (None: directory)
        for i in range(per):
            entries["usr/d%02d/f%d_%d" % (i % 50, k, i)] = \
                content(pool, k * per + i, 512 + (i * 37) % 8192)
        for j in range(wide):
            entries["big/e%d_%d" % (k, j)] = b""
        if k > 0:
            entries["usr/d00/f0_%d" % (50 * k)] = content(pool, 10**6 + k, 600)
            entries["usr/d00/.wh.f0_%d" % (50 * (k + n))] = b""
        for p in list(entries):
            parts = p.split("/")
            for i in range(1, len(parts)):
                entries.setdefault("/".join(parts[:i]), None)

        def key(p):             # a directory's entries sorted, dirs first
            return p.split("/")
        for p in sorted(entries, key=key):
            if entries[p] is None:
                w.dirs.add(p)
                w.tar.addfile(w._info(p + "/", tarfile.DIRTYPE, 0o755))
            else:
                w.file(p, entries[p])
        img.layers.append((w.path, w.close()))
    img.notes = {"layer_files": n * (per + wide)}


def make_depth(img, sz, seed, depth):
    """The same depth_files files, file i in layer i % depth."""
    rng = random.Random(seed + 1)
    pool = pool_bytes(seed)
    sizes = [rng.randrange(0, 8192) for _ in range(sz.depth_files)]
    ndirs = 200 if sz.depth_files >= 2000 else 10
    writers = [img.layer(k) for k in range(depth)]
    for i, s in enumerate(sizes):
        j = i % ndirs
        writers[i % depth].file("d%02d/s%02d/f%06d" % (j // 10, j % 10, i),
                                content(pool, i, s))
    for w in writers:
        img.layers.append((w.path, w.close()))
    img.notes = {"files": sz.depth_files, "layers": depth}


def make_big(img, sz, seed):
    pool = pool_bytes(seed)
    w = img.layer(0)
    w.dir("tmp", 0o1777)
    w.file("etc/hostname", b"bench\n")
    w.file("data/big.bin", reader=PatternReader(pool, sz.big_bytes),
           size=sz.big_bytes)
    img.layers.append((w.path, w.close()))
    w = img.layer(1)
    w.file("etc/hostname", b"bench-top\n")
    w.file("data/README", b"data/big.bin is in the layer below\n")
    img.layers.append((w.path, w.close()))
    img.notes = {"big_bytes": sz.big_bytes}


def make_many(img, sz, seed):
    rng = random.Random(seed + 2)
    pool = pool_bytes(seed)
    per = sz.many_files // sz.many_layers
    ndirs = max(1, sz.many_files // 100)
    for k in range(sz.many_layers):
        w = img.layer(k)
        for i in range(per):
            g = k * per + i
            w.file("d%04d/f%06d" % (g % ndirs, g),
                   content(pool, g, rng.randrange(0, 1024)))
        img.layers.append((w.path, w.close()))
    img.notes = {"files": per * sz.many_layers}


def make_flat(img, sz):
    w = img.layer(0)
    for i in range(sz.flat_files):
        w.file("dir/f%07d" % i)
    img.layers.append((w.path, w.close()))
    img.notes = {"files": sz.flat_files}


def tar_dir(root, out, members, excludes=()):
    """GNU tar of `members` (paths relative to root, './'-prefixed),
    sorted names, numeric owners, xattrs; returns its diff id."""
    cmd = ["tar", "-C", root, "--sort=name", "--numeric-owner", "--xattrs",
           "--xattrs-include=*", "--format=posix",
           "--pax-option=delete=atime,delete=ctime", "-cf", out]
    cmd += ["--exclude=" + e for e in excludes] + list(members)
    subprocess.run(cmd, check=True)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return "sha256:" + h.hexdigest()


def make_debian(img, rootfs):
    """Split a debootstrap rootfs into 4 layers."""
    os.makedirs(img.dir, exist_ok=True)
    L = [os.path.join(img.dir, "layer-%d.tar" % k) for k in range(4)]
    top = sorted("./" + n for n in os.listdir(rootfs))
    base = [m for m in top if m not in ("./etc", "./var")]
    img.layers.append((L[0], tar_dir(rootfs, L[0], base,
                                     excludes=["./usr/share"])))
    img.layers.append((L[1], tar_dir(rootfs, L[1], ["./usr/share"])))
    img.layers.append((L[2], tar_dir(rootfs, L[2], ["./etc", "./var"])))
    # a clean-up layer like `RUN rm -rf ... && apt-get clean`
    w = LayerWriter(L[3])
    w.opaque("usr/share/doc")
    w.file("usr/share/doc/README", b"docs removed\n")
    w.opaque("var/lib/apt/lists")
    for p in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin",
              "var/log/dpkg.log", "var/log/bootstrap.log"):
        if os.path.lexists(os.path.join(rootfs, p)):
            w.whiteout(p)
    osr = os.path.join(rootfs, "usr/lib/os-release")
    if os.path.exists(osr):
        with open(osr, "rb") as f:
            w.file("usr/lib/os-release", f.read() + b"VARIANT=bench\n")
    img.layers.append((L[3], w.close()))
    img.notes = {"rootfs_entries": sum(1 + len(fs) for _, _, fs in
                                       os.walk(rootfs))}


# --------------------------------------------------------------------------
# docker-archive

def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def docker_archive(img):
    """A `docker save` style archive of the image's layer tars."""
    diff_ids = [d for _, d in img.layers]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T))
    config = {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Cmd": ["/bin/sh"], "WorkingDir": "/",
                   "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "history": [{"created": created,
                     "created_by": "tools/bench layer %d" % k}
                    for k in range(len(diff_ids))],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg = canon(config)
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    paths, parent = [], ""

    def meta(name, typ=tarfile.REGTYPE, size=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mtime, ti.mode = typ, size, 0, 0o644
        if typ == tarfile.DIRTYPE:
            ti.mode = 0o755
        return ti

    with tarfile.open(img.archive, "w", format=tarfile.USTAR_FORMAT) as t:
        for path, d in img.layers:
            v1 = hashlib.sha256((parent + " " + d).encode()).hexdigest()
            v1json = {"id": v1, "created": created, "os": "linux",
                      "container_config": {"Cmd": None}}
            if parent:
                v1json["parent"] = parent
            t.addfile(meta(v1 + "/", tarfile.DIRTYPE))
            t.addfile(meta(v1 + "/VERSION", size=3), io.BytesIO(b"1.0"))
            js = canon(v1json)
            t.addfile(meta(v1 + "/json", size=len(js)), io.BytesIO(js))
            with open(path, "rb") as f:
                t.addfile(meta(v1 + "/layer.tar",
                               size=os.fstat(f.fileno()).st_size), f)
            paths.append(v1 + "/layer.tar")
            parent = v1
        manifest = canon([{"Config": cfg_name, "RepoTags": [img.tag],
                           "Layers": paths}])
        name, _, tag = img.tag.rpartition(":")
        repos = canon({name: {tag: parent}})
        for n, data in ((cfg_name, cfg), ("manifest.json", manifest),
                        ("repositories", repos)):
            t.addfile(meta(n, size=len(data)), io.BytesIO(data))
    img.config_digest = cfg_name[:-5]


# --------------------------------------------------------------------------
# overlay-format directories

def extract_cmd(tar_path, dest):
    return ["tar", "-C", dest, "-xpf", tar_path, "--same-owner",
            "--numeric-owner", "--xattrs", "--xattrs-include=*"]


def to_overlay(tar_path, dest):
    """Turn the AUFS whiteouts that `tar_path` put into `dest` into the
    overlay format: `.wh.NAME` -> char device 0:0 NAME,
    `.wh..wh..opq` -> xattr trusted.overlay.opaque=y on its directory."""
    with tarfile.open(tar_path) as t:
        names = [m.name for m in t if "/.wh." in "/" + m.name]
    for name in names:
        name = name[2:] if name.startswith("./") else name
        d, _, base = name.rpartition("/")
        ddir = os.path.join(dest, d)
        os.unlink(os.path.join(ddir, base))
        if base == ".wh..wh..opq":
            os.setxattr(ddir, "trusted.overlay.opaque", b"y")
            # what an unprivileged reader (fuse-overlayfs, layerfs
            # mount-branches as the bench user) can see: trusted.* is
            # root's only
            os.setxattr(ddir, "user.overlay.opaque", b"y")
        elif base.startswith(".wh..wh."):
            pass  # AUFS metadata: dropped
        else:
            target = os.path.join(ddir, base[4:])
            if not os.path.lexists(target):
                os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def extract_overlay(img):
    for k, (path, _) in enumerate(img.layers):
        dest = os.path.join(img.ovl, str(k))
        os.makedirs(dest)
        subprocess.run(extract_cmd(path, dest), check=True)
        to_overlay(path, dest)
    os.makedirs(os.path.join(img.ovl, "empty"))


def root_only(top):
    """How many entries under `top` others may not read (files without
    o+r, directories without o+rx; whiteout devices do not count)."""
    n = 0
    for d, dirs, files in os.walk(top):
        for x in dirs:
            if os.lstat(os.path.join(d, x)).st_mode & 0o005 != 0o005:
                n += 1
        for x in files:
            st = os.lstat(os.path.join(d, x))
            if stat.S_ISREG(st.st_mode) and not st.st_mode & 0o004:
                n += 1
    return n


def user_copy(img, uid, gid):
    """WORK/ovl-user/NAME: a copy of the overlay dirs owned by uid:gid (as
    rootless storage holds layers: the user may read all of it), same
    modes (set-id bits restored after the chown), whiteouts and xattrs."""
    dest = os.path.join(os.path.dirname(os.path.dirname(img.ovl)),
                        "ovl-user", img.name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    subprocess.run(["cp", "-a", img.ovl, dest], check=True)
    for d, dirs, files in os.walk(dest):
        # every entry once: directories when walked, files and symlinks
        # (to directories too) from their parent
        links = [x for x in dirs if os.path.islink(os.path.join(d, x))]
        for p in [d] + [os.path.join(d, x) for x in files + links]:
            st = os.lstat(p)
            os.lchown(p, uid, gid)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
                os.chmod(p, stat.S_IMODE(st.st_mode))
    img.ovl_user = dest


def build(name, work, sz, seed, rootfs=None):
    img = Image(name, work)
    if name == "synth5":
        make_synth5(img, sz, seed)
    elif name.startswith("depth"):
        make_depth(img, sz, seed, int(name[5:]))
    elif name.startswith("pax"):
        make_pax(img, sz, seed, int(name[3:]))
    elif name == "big1g":
        make_big(img, sz, seed)
    elif name == "files100k":
        make_many(img, sz, seed)
    elif name == "files1m":
        make_flat(img, sz)
    elif name == "debian":
        make_debian(img, rootfs)
    else:
        raise ValueError(name)
    docker_archive(img)
    return img


def selftest(out):
    """Builds the --quick synth5, depth16 and pax5 images twice into `out` and
    checks that the bytes are the same (no root needed, no extraction);
    prints the archive paths, one a line."""
    sz = Sizes(quick=True)
    ids = []
    for run in ("a", "b"):
        got = []
        for name in ("synth5", "depth16", "pax5"):
            img = build(name, os.path.join(out, run), sz, 6)
            got.append((img.archive, [d for _, d in img.layers],
                        img.config_digest))
        ids.append(got)
    for (pa, la, ca), (_, lb, cb) in zip(*ids):
        if (la, ca) != (lb, cb):
            raise SystemExit("not deterministic: %s" % pa)
        print(pa)


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 3 or sys.argv[1] != "selftest":
        raise SystemExit("usage: images.py selftest OUTDIR")
    selftest(sys.argv[2])
