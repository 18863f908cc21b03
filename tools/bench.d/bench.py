#!/usr/bin/env python3
"""layerfs side-by-side benchmark (run through tools/bench; stdlib only).

Builds the benchmark images (images.py), imports them into a private
layerfs store (and the unprivileged user's own store), extracts the same
layers into directories for kernel overlayfs, fuse-overlayfs (1.x and,
if given, 2.x) and `layerfs mount-branches` (layerfs-dirs), then runs
every workload in alternated rounds over the columns (layerfs,
layerfs-dirs, overlay, fuse-overlayfs, fuse-overlayfs2, then layerfs,
layerfs-dirs, fuse-overlayfs and fuse-overlayfs2 as the user
layerfs-bench, layerfs, ...), and podman run / build with each as the
overlay driver's mount program (overlay: the kernel driver). Every timed
run gets a fresh mount: "cold" drops the kernel caches (sync; echo 3 >
/proc/sys/vm/drop_caches) after mounting, "warm" runs the workload once
untimed first. Prints tables of medians, spread and
ratios (root, unprivileged), and writes every sample as JSON.
"""

import argparse
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import images  # noqa: E402

ROOT_IMPLS = ["layerfs", "layerfs-dirs", "overlay", "fuse-overlayfs",
              "fuse-overlayfs2"]
USER_IMPLS = ["layerfs-user", "layerfs-dirs-user", "fuse-overlayfs-user",
              "fuse-overlayfs2-user"]
IMPLS = ROOT_IMPLS + USER_IMPLS
BENCH_USER = "layerfs-bench"


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr,
          flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


# --------------------------------------------------------------------------
# The unprivileged user


# The Debian rootfs tar's name in a cache directory, shared with the tests.
DEBIAN_TAR = "debian-minbase-bookworm.tar"


def prune_rootfs(root):
    """What the tests leave out of the debootstrap rootfs, as Debian's own
    container images do: the downloaded .debs, apt's lists and /dev's
    device nodes (tests/common/debian.rs, debian_minbase_tar)."""
    for d in ("var/cache/apt/archives", "var/lib/apt/lists", "dev"):
        top = os.path.join(root, d)
        for name in os.listdir(top):
            p = os.path.join(top, name)
            if os.path.isdir(p) and not os.path.islink(p):
                if name != "partial":
                    shutil.rmtree(p)
            else:
                os.remove(p)

class Skip(Exception):
    """An implementation cannot run a workload; the message says why."""


class User:
    """The unprivileged user of the *-user columns (created like
    tests/rootless_run.rs does: useradd, /etc/subuid and /etc/subgid lines,
    /dev/fuse 0666 for fusermount3). `call` runs a function as that user in
    a forked child (setgroups, setgid, setuid: what setpriv does), so the
    root harness keeps mounting bookkeeping, cache drops and clean-up, and
    only the workload itself (and the user's mounts) run unprivileged."""

    def __init__(self, b, name=BENCH_USER):
        self.name = name
        self.skip = None
        self.dir = os.path.join(b.work, "user")
        try:
            self._setup()
        except Skip as e:
            self.skip = str(e)
            return
        os.makedirs(self.dir, exist_ok=True)
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o755)
        self.store = os.path.join(self.dir, "store")
        try:     # also checks that the user can reach the work dir
            self.call(lambda: os.makedirs(self.store, exist_ok=True))
        except RuntimeError as e:
            self.skip = "skipped: %s cannot use the work dir %s: %s" % (
                name, b.work, e)

    def _setup(self):
        import pwd
        if not shutil.which("fusermount3"):
            raise Skip("skipped: fusermount3 not installed (fuse3)")
        try:
            pw = pwd.getpwnam(self.name)
        except KeyError:
            if not shutil.which("useradd"):
                raise Skip("skipped: no user %s and no useradd" % self.name)
            log("creating the unprivileged user", self.name)
            run(["useradd", "--create-home", "--shell", "/bin/sh",
                 self.name], stdout=subprocess.DEVNULL)
            pw = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        if self.uid == 0:
            raise Skip("skipped: user %s is root" % self.name)
        for f in ("/etc/subuid", "/etc/subgid"):
            try:
                with open(f) as fh:
                    lines = fh.read().splitlines()
            except FileNotFoundError:
                lines = []
            if any(x.startswith(self.name + ":") for x in lines):
                continue
            top = 100000
            for x in lines:
                p = x.split(":")
                if len(p) == 3 and p[1].isdigit() and p[2].isdigit():
                    top = max(top, int(p[1]) + int(p[2]))
            with open(f, "a") as fh:
                fh.write("%s:%d:65536\n" % (self.name, top))
        mode = os.stat("/dev/fuse").st_mode & 0o777
        if mode != 0o666:
            log("chmod 0666 /dev/fuse (was %o) for fusermount3, as "
                "tests/rootless_run.rs does" % mode)
            os.chmod("/dev/fuse", 0o666)

    def chown(self, path):
        os.chown(path, self.uid, self.gid)

    def call(self, fn):
        """fn() as the user, in a forked child; its JSON-able result, or
        RuntimeError with the child's exception."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                os.chdir("/")
                for k in ("XDG_RUNTIME_DIR", "SUDO_USER", "SUDO_UID",
                          "SUDO_GID", "SUDO_COMMAND", "LAYERFS_ROOT"):
                    os.environ.pop(k, None)
                os.environ.update(HOME=self.home, USER=self.name,
                                  LOGNAME=self.name)
                try:
                    out = {"ok": fn()}
                except BaseException as e:  # noqa: B036 (child reports all)
                    if isinstance(e, subprocess.CalledProcessError) and \
                            e.stderr:
                        e = "%s: %s" % (e, e.stderr.decode(
                            "utf-8", "replace").strip()[-300:])
                    out = {"err": str(e)}
                os.write(w, json.dumps(out).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        data = b""
        try:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            _, status = os.waitpid(pid, 0)
        except BaseException:
            # interrupted: stop the child before its mount goes away
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        if not data:
            raise RuntimeError("child as %s died (status %d)" % (
                self.name, status))
        out = json.loads(data)
        if "err" in out:
            raise RuntimeError("as %s: %s" % (self.name, out["err"]))
        return out["ok"]


# --------------------------------------------------------------------------
# Implementations: each mounts an image read-only or with a write branch

class Mount:
    def __init__(self, impl, path, upper=None):
        self.impl, self.path, self.upper = impl, path, upper
        self.seconds = None     # mount command (+ first readdir if timed)


class Impl:
    name = "?"
    skip = None          # reason the implementation is not available
    rw_skip = None       # reason it cannot mount writable
    quiet = False        # mount command's stderr to /dev/null

    def __init__(self, b, user=None):
        self.b, self.user = b, user
        if user:
            self.name += "-user"
            if user.skip:
                self.skip = user.skip
                return
        base = user.dir if user else b.work
        self.base = base
        self.mnt = os.path.join(base, "mnt", self.name)
        self.mkdir(self.mnt)

    def mkdir(self, path):
        """mkdir -p, owned by the implementation's user."""
        missing = []
        p = path
        while not os.path.exists(p):
            missing.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, exist_ok=True)
        if self.user:
            for p in missing:
                self.user.chown(p)

    def call(self, fn):
        """fn() as this implementation's user (or here, as root)."""
        return self.user.call(fn) if self.user else fn()

    def squash(self):
        """Owner options of an unprivileged FUSE mount: every file shows
        as the user (as a rootless container's root sees the image), so
        that it may write and chmod lower files."""
        return ["squash_to_uid=%d" % self.user.uid,
                "squash_to_gid=%d" % self.user.gid] if self.user else []

    def fresh_upper(self):
        up = os.path.join(self.base, "upper", self.name)
        if os.path.exists(up):
            shutil.rmtree(up)
        self.mkdir(up)
        return up

    def mount(self, img, rw=False, timed=False):
        """Mounts `img`; with `timed`, m.seconds is the time of the mount
        command plus a readdir of the root, taken as the mounting user."""
        if self.skip:
            raise Skip(self.skip)
        if rw and self.rw_skip:
            raise Skip(self.rw_skip)
        cmd, cwd, path, upper = self._mount_cmd(img, rw)

        def go():
            # the daemons do not keep this stderr: layerfs pipes its
            # daemon's, fuse-overlayfs daemonizes onto /dev/null
            t = time.perf_counter()
            r = subprocess.run(cmd, cwd=cwd, stderr=subprocess.PIPE,
                               timeout=300)
            if timed:
                os.listdir(path)
            dt = time.perf_counter() - t
            err = r.stderr.decode("utf-8", "replace").strip()
            if r.returncode != 0:
                raise RuntimeError("%s mount failed (exit %d): %s" % (
                    os.path.basename(cmd[0]), r.returncode, err[-400:]))
            if err and not self.quiet:
                print(err, file=sys.stderr)
            return dt
        m = Mount(self, path, upper)
        try:
            m.seconds = self.call(go)
        except BaseException:
            if mounted(path):
                self.b.live.append(m)
                self.umount(m)
            raise
        self.b.live.append(m)
        return m

    def umount(self, m):
        try:
            self._umount(m)
        finally:
            if m in self.b.live:
                self.b.live.remove(m)

    def _umount(self, m):
        # root unmounts the user's FUSE mounts too
        run(["umount", m.path])

    def daemon_pid(self, m):
        return None


class Layerfs(Impl):
    """layerfs mounting an image of its store (the root store; the user
    column imports the images into the user's own store)."""
    name = "layerfs"

    def __init__(self, b, user=None):
        super().__init__(b, user)
        self.bin = b.args.layerfs
        if not os.access(self.bin, os.X_OK):
            self.skip = "layerfs binary %s not found" % self.bin
            return
        if self.skip:
            return
        self.store = user.store if user else b.store
        h = run([self.bin, "mount", "--help"], capture_output=True,
                text=True).stdout
        if "--rw" not in h:
            self.rw_skip = "skipped: layerfs build has no --rw"

    def cmd(self, *a):
        return [self.bin, "--root", self.store] + list(a)

    def new_mountpoint(self):
        # A daemon takes a while (~2 s here) to exit after its unmount:
        # each mount gets its own mountpoint, and the exits are waited for
        # before memory is measured and at the end (see wait_exits), not
        # after every run.
        self.b.serial += 1
        mnt = "%s-%d" % (self.mnt, self.b.serial)
        self.mkdir(mnt)
        return mnt

    def _mount_cmd(self, img, rw):
        mnt = self.new_mountpoint()
        cmd = self.cmd("mount", img.tag, mnt)
        upper = None
        if rw:
            upper = self.fresh_upper()
            cmd += ["--rw", upper]
        opts = self.squash() if self.user else []
        opts += extra_opts()
        if opts:
            cmd += ["-o", ",".join(opts)]
        return cmd, None, mnt, upper

    def _umount(self, m):
        pid = self.daemon_pid(m)
        # what `layerfs umount` does as root, without waiting for the exit
        r = run(["umount", m.path], check=False, capture_output=True)
        if r.returncode != 0 and mounted(m.path):
            run(self.cmd("umount", m.path), check=False)
        if pid:
            self.b.exiting.append(pid)
        self.b.wait_exits(0)

    def daemon_pid(self, m):
        for rec in glob.glob(os.path.join(self.store, "mounts", "*.json")):
            try:
                with open(rec) as f:
                    j = json.load(f)
            except (OSError, ValueError):
                continue
            if os.path.realpath(j.get("mountpoint", "")) == \
                    os.path.realpath(m.path):
                return j["pid"]
        return None


def extra_opts():
    """LAYERFS_BENCH_OPTS: more -o options for every layerfs mount (an
    A/B of one option, e.g. passthrough=off), comma-separated."""
    return [o for o in os.environ.get("LAYERFS_BENCH_OPTS", "").split(",")
            if o]


def esc_branch(p):
    return p.replace("\\", "\\\\").replace(":", "\\:")


class LayerfsDirs(Layerfs):
    """`layerfs mount-branches` of the very directories overlayfs and
    fuse-overlayfs mount (overlay-format whiteouts). Writes: as root an
    overlay-format upperdir/workdir, like the overlays; as the user (no
    mknod for 0:0 whiteouts) an AUFS-format rw branch, `br=U=rw:L=ro+wh`."""
    name = "layerfs-dirs"

    def __init__(self, b, user=None):
        super().__init__(b, user)
        if self.skip:
            return
        h = run([self.bin, "--help"], capture_output=True, text=True).stdout
        if "mount-branches" not in h:
            self.skip = "skipped: layerfs build has no mount-branches"
            return
        h = run([self.bin, "mount-branches", "--help"], capture_output=True,
                text=True).stdout
        if not user and "upperdir" not in h:
            self.rw_skip = "skipped: layerfs mount-branches has no upperdir"

    def _mount_cmd(self, img, rw):
        mnt = self.new_mountpoint()
        lower = img.ovl_dirs()      # relative to ovl, top first
        upper = None
        if rw:
            upper = self.fresh_upper()
            if self.user:
                opts = ["br=" + ":".join(
                    ["%s=rw" % esc_branch(upper + "/u")] +
                    ["%s=ro+wh" % d for d in lower])]
                self.mkdir(upper + "/u")
            else:
                self.mkdir(upper + "/u")
                self.mkdir(upper + "/w")
                opts = ["lowerdir=" + ":".join(lower),
                        "upperdir=" + esc_branch(upper + "/u"),
                        "workdir=" + esc_branch(upper + "/w")]
        else:
            opts = ["lowerdir=" + ":".join(lower)]
        opts += self.squash() + extra_opts()
        cmd = self.cmd("mount-branches", mnt, "-o", ",".join(opts))
        return cmd, img.ovl_for(self.user), mnt, upper


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


class Overlay(Impl):
    name = "overlay"

    def __init__(self, b, user=None):
        super().__init__(b, user)
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                r = run(["modprobe", "overlay"], check=False,
                        capture_output=True)
                if r.returncode != 0:
                    self.skip = "kernel has no overlayfs"

    def _mount_cmd(self, img, rw):
        lower = img.ovl_dirs()
        if not rw and len(lower) == 1:
            # overlayfs needs two lower dirs when it has no upper dir
            lower = lower + ["empty"]
        # relative lower dirs: 128 absolute paths exceed the one-page
        # mount option limit
        opts = "lowerdir=" + ":".join(lower)
        upper = None
        if rw:
            upper = self.fresh_upper()
            os.makedirs(upper + "/u")
            os.makedirs(upper + "/w")
            opts += ",upperdir=%s/u,workdir=%s/w" % (upper, upper)
        return (["mount", "-t", "overlay", "overlay", "-o", opts, self.mnt],
                img.ovl, self.mnt, upper)


class FuseOverlayfs(Impl):
    """Debian's fuse-overlayfs (C, 1.x)."""
    name = "fuse-overlayfs"
    quiet = True        # "unknown argument ignored: lazytime"

    def __init__(self, b, user=None):
        super().__init__(b, user)
        self.bin = shutil.which("fuse-overlayfs")
        if not self.bin:
            self.skip = "skipped: fuse-overlayfs not installed"

    def _mount_cmd(self, img, rw):
        opts = ["lowerdir=" + ":".join(img.ovl_dirs())]
        upper = None
        if rw:
            upper = self.fresh_upper()
            self.mkdir(upper + "/u")
            self.mkdir(upper + "/w")
            opts += ["upperdir=%s/u" % upper, "workdir=%s/w" % upper]
        opts += self.squash()
        return ([self.bin, "-o", ",".join(opts), self.mnt],
                img.ovl_for(self.user),
                self.mnt, upper)

    def _umount(self, m):
        run(["umount", m.path])
        # the daemon exits once unmounted; wait so the next mount is clean
        for _ in range(200):
            if not self.daemon_pid(m):
                break
            time.sleep(0.01)

    def daemon_pid(self, m):
        want = os.path.realpath(m.path).encode()
        name = os.path.basename(self.bin).encode()
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(name) and want in argv:
                return int(p)
        return None


def fuse_overlayfs2_bin():
    """fuse-overlayfs 2.x (the Rust rewrite on fuser), not packaged by
    Debian: $FUSE_OVERLAYFS2, else fuse-overlayfs2 on PATH; (path,
    version line) or (None, why not)."""
    path = os.environ.get("FUSE_OVERLAYFS2") or \
        shutil.which("fuse-overlayfs2")
    if not path:
        return None, ("skipped: fuse-overlayfs 2 not found (set "
                      "FUSE_OVERLAYFS2=/path/to/its/fuse-overlayfs or put "
                      "fuse-overlayfs2 on PATH; see README \"Benchmark\")")
    try:
        out = subprocess.run([path, "--version"], capture_output=True,
                             text=True, timeout=30).stdout
    except OSError as e:
        return None, "skipped: fuse-overlayfs 2 %s: %s" % (path, e)
    v = [x for x in out.splitlines() if x.startswith("fuse-overlayfs")]
    if not v or "version 2." not in v[0]:
        return None, ("skipped: %s is not fuse-overlayfs 2.x (--version: "
                      "%r)" % (path, out.strip()[:80]))
    return path, v[0]


class FuseOverlayfs2(FuseOverlayfs):
    """fuse-overlayfs 2.x: the same command line as 1.x (-o lowerdir=,
    upperdir=, workdir=, squash_to_uid=, ...; daemonizes once mounted)."""
    name = "fuse-overlayfs2"
    quiet = False

    def __init__(self, b, user=None):
        Impl.__init__(self, b, user)
        self.bin, why = fuse_overlayfs2_bin()
        if not self.bin and not self.skip:
            self.skip = why


def make_impls(b, names):
    """The implementations selected by --impl, in table order."""
    user = None
    if any(n in USER_IMPLS for n in names):
        user = User(b)
        b.user = user
        if user.skip:
            log("unprivileged columns: %s" % user.skip)
    out = []
    for cls in (Layerfs, LayerfsDirs, Overlay, FuseOverlayfs,
                FuseOverlayfs2):
        if cls.name in names:
            out.append(cls(b))
    for cls in (Layerfs, LayerfsDirs, FuseOverlayfs, FuseOverlayfs2):
        if cls.name + "-user" in names:
            out.append(cls(b, user))
    return out


# --------------------------------------------------------------------------
# podman (issue 12): its overlay driver with a mount program, or kernel
# overlayfs

# the columns of the podman rows: the mount program each one names
PODMAN_IMPLS = ["layerfs", "overlay", "fuse-overlayfs", "fuse-overlayfs2"]
PODMAN_IMAGE = "docker.io/library/multi:latest"   # fixtures/multi.docker.tar


def podman_runs(args):
    return 2 if args.quick else 5


CONTAINERFILE = """FROM %s
RUN busybox mkdir /d && i=0 && while [ $i -lt 500 ]; do \\
    echo $i > /d/f$i; i=$((i+1)); done
RUN busybox dd if=/dev/zero of=/big bs=1M count=16 2>/dev/null
RUN echo more >> /etc/passwd && busybox rm -rf /opt/data && \\
    busybox mv /usr/share/doc/pkg /pkg
""" % PODMAN_IMAGE
# what a container of the built image shows, and its command
BUILT_CHECK = "cat /d/f0 /d/f499; busybox wc -c < /big; " \
    "busybox tail -1 /etc/passwd; ls /opt /pkg"
BUILT_EXPECT = "0\n499\n16777216\nmore\n/opt:\n\n/pkg:\nREADME\na\n" \
    "a-link\ncopyright\n"


class Podman:
    """Root podman with its own storage (WORKDIR/podman/COLUMN: graphroot,
    runroot, tmp_dir), the fixture image loaded, a first run checking
    that the container's root is the mount it should be (fuse for a mount
    program, overlay for the kernel driver); `reset` removes containers,
    mounts and images."""

    def __init__(self, b, impl):
        self.b, self.impl = b, impl
        self.dir = os.path.join(b.work, "podman", impl.name)
        os.makedirs(self.dir, exist_ok=True)
        if impl.name == "layerfs":
            program = os.path.abspath(b.args.layerfs)
        elif impl.name == "overlay":
            program = None
        else:
            program = os.path.abspath(impl.bin)
        self.program = program
        st = os.path.join(self.dir, "storage.conf")
        with open(st, "w") as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\n'
                    'runroot = "%s/run"\n' % (self.dir, self.dir))
            if program:
                f.write('[storage.options.overlay]\nmount_program = "%s"\n'
                        % program)
        # as tests/common/podman.rs: runc (crun 1.8 refuses the hybrid
        # cgroup layout), ulimits under the sandbox's hard limit, a
        # tmp_dir of its own (podman's default /run/libpod is shared)
        cc = os.path.join(self.dir, "containers.conf")
        with open(cc, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=1024:1024", '
                    '"nproc=1024:1024"]\n[engine]\nruntime = "runc"\n'
                    'tmp_dir = "%s/libpod-tmp"\n' % self.dir)
        self.env = dict(os.environ, CONTAINERS_STORAGE_CONF=st,
                        CONTAINERS_CONF=cc)
        self.ctx = os.path.join(self.dir, "ctx")
        os.makedirs(self.ctx, exist_ok=True)
        with open(os.path.join(self.ctx, "Containerfile"), "w") as f:
            f.write(CONTAINERFILE)
        self.root_mount = None

    def setup(self, fixture):
        self.podman("load", "-q", "-i", fixture)
        out = self.podman("run", "--rm", "--network", "none", PODMAN_IMAGE,
                          "cat", "/proc/self/mountinfo")
        root = [x.split(" - ", 1)[1].split()[:2] for x in out.splitlines()
                if x.split()[4] == "/" and " - " in x]
        self.root_mount = " ".join(root[0]) if root else None
        want = "overlay" if self.program is None else "fuse"
        if not root or not root[0][0].startswith(want):
            raise RuntimeError("container root is %r, not %s" % (
                self.root_mount, want))

    def podman(self, *args, check=True):
        r = subprocess.run(["podman"] + list(args), env=self.env,
                           cwd=self.dir, capture_output=True, timeout=600)
        if check and r.returncode != 0:
            raise RuntimeError("podman %s failed (exit %d): %s" % (
                " ".join(args[:3]), r.returncode,
                r.stderr.decode("utf-8", "replace").strip()[-400:]))
        return r.stdout.decode("utf-8", "replace")

    def time_runs(self, n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            self.podman("run", "--rm", "--network", "none", PODMAN_IMAGE,
                        "/bin/busybox", "true")
            out.append(time.perf_counter() - t)
        return out

    def time_build(self):
        t = time.perf_counter()
        self.podman("build", "--no-cache", "--pull=never", "--network",
                    "none", "-q", "-t", "bench-built", "-f",
                    os.path.join(self.ctx, "Containerfile"), self.ctx)
        dt = time.perf_counter() - t
        got = self.podman("run", "--rm", "--network", "none", "bench-built",
                          "sh", "-c", BUILT_CHECK)
        if got != BUILT_EXPECT:
            raise RuntimeError("built image shows %r, not %r" % (
                got, BUILT_EXPECT))
        self.podman("rmi", "-f", "bench-built")
        self.podman("image", "prune", "-f")
        return dt

    def reset(self):
        """Containers, their mounts, images; then anything still mounted
        under the storage (the kernel driver's private bind mount of
        graph/overlay)."""
        for a in (("rm", "--all", "--force"), ("umount", "--all", "--force"),
                  ("rmi", "--all", "--force")):
            try:
                self.podman(*a, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                log("cleanup: podman %s (%s): %s" % (a[0], self.impl.name,
                                                     e))
        with open("/proc/self/mountinfo") as f:
            left = sorted((x.split()[4] for x in f if x.split()[4]
                           .startswith(self.dir + "/")), reverse=True)
        for m in left:
            if subprocess.run(["umount", m], stderr=subprocess.DEVNULL)\
                    .returncode != 0:
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# Workloads

def sh(cmd, pipefail=False):
    def op(mnt):
        # pipefail: bash, so that a failure left of a pipe is one
        argv = ["bash", "-o", "pipefail", "-c", cmd] if pipefail else \
            ["sh", "-c", cmd]
        r = subprocess.run(argv, cwd=mnt, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if r.returncode not in (0,):
            raise RuntimeError("%s failed (%d): %s" % (
                cmd, r.returncode, r.stderr.decode()[-300:]))
    op.desc = cmd
    return op


WALK = sh("find . -printf '%y %m %U %G %s %p\\n' >/dev/null")
# a file tar cannot read makes it fail (exit 2), not just warn
READ_ALL = sh("tar -cf - . | cat >/dev/null", pipefail=True)


def ls_wide(times):
    return sh("for i in $(seq %d); do ls -l --color=never wide >/dev/null;"
              " done" % times)


SEQ_READ = sh("dd if=data/big.bin of=/dev/null bs=1M status=none")


def append_byte(mnt):
    with open(os.path.join(mnt, "data/big.bin"), "ab") as f:
        f.write(b"x")


def check_append(size):
    def check(mnt):
        st = os.stat(os.path.join(mnt, "data/big.bin"))
        if st.st_size != size + 1:
            raise RuntimeError("data/big.bin has %d bytes after the append,"
                               " not %d" % (st.st_size, size + 1))
    return check


def check_empty_tmp(mnt):
    left = os.listdir(os.path.join(mnt, "tmp"))
    if left:
        raise RuntimeError("tmp/ not empty after unlinking: %d left"
                           % len(left))


def check_chmod(n):
    def check(mnt):
        for i in (0, n - 1):
            mode = os.stat("%s/chmod/f%04d" % (mnt, i)).st_mode & 0o7777
            if mode != 0o600:
                raise RuntimeError("chmod/f%04d has mode %o" % (i, mode))
    return check


def create_unlink(n):
    def op(mnt):
        d = os.path.join(mnt, "tmp")
        payload = b"x" * 64
        for i in range(n):
            fd = os.open("%s/c%05d" % (d, i),
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, payload)
            os.close(fd)
        for i in range(n):
            os.unlink("%s/c%05d" % (d, i))
    op.desc = "create (64 bytes) then unlink %d files in tmp/" % n
    return op


def chmod_lower(n):
    def op(mnt):
        for i in range(n):
            os.chmod("%s/chmod/f%04d" % (mnt, i), 0o600)
    op.desc = "chmod 0600 %d lower files chmod/f*" % n
    return op


def prime_chmod(n):
    def op(mnt):
        for i in range(n):
            with open("%s/chmod/f%04d" % (mnt, i), "rb") as f:
                f.read()
    return op


class Workload:
    def __init__(self, name, image, op, temp, desc, rw=False, prime=None,
                 check=None):
        self.name, self.image, self.op, self.temp = name, image, op, temp
        self.desc, self.rw, self.check = desc, rw, check
        self.prime = prime or (op if temp == "warm" else None)


def workloads(sz):
    W = Workload
    ws = [
        W("walk-cold", "synth5", WALK, "cold",
          "`find -printf` walk, cold (%d layers x %d files + a %d-entry "
          "dir)" % (sz.synth_layers, sz.synth_files, sz.synth_wide)),
        W("walk-warm", "synth5", WALK, "warm", "`find -printf` walk, warm"),
        W("ls-l-wide", "synth5", ls_wide(5), "warm",
          "`ls -l` of the %d-entry dir, 5 times, warm" % sz.synth_wide),
        W("read-all-cold", "synth5", READ_ALL, "cold",
          "read every file (`tar -c` piped to `cat`), cold"),
        W("read-all-warm", "synth5", READ_ALL, "warm",
          "read every file, warm"),
        # the same reads on writable mounts (an empty upper dir), where
        # containers run: layerfs --rw, upperdir= for the others
        W("walk-cold-rw", "synth5", WALK, "cold",
          "`find -printf` walk, cold, writable mount", rw=True),
        W("walk-warm-rw", "synth5", WALK, "warm",
          "`find -printf` walk, warm, writable mount", rw=True),
        W("ls-l-wide-rw", "synth5", ls_wide(5), "warm",
          "`ls -l` of the %d-entry dir, 5 times, warm, writable mount"
          % sz.synth_wide, rw=True),
        W("read-all-cold-rw", "synth5", READ_ALL, "cold",
          "read every file, cold, writable mount", rw=True),
        W("read-all-warm-rw", "synth5", READ_ALL, "warm",
          "read every file, warm, writable mount", rw=True),
        W("seq-read-cold", "big1g", SEQ_READ, "cold",
          "%s sequential read (dd bs=1M), cold" % human(sz.big_bytes)),
        W("seq-read-warm", "big1g", SEQ_READ, "warm",
          "%s sequential read, warm" % human(sz.big_bytes)),
        W("append-copyup", "big1g", append_byte, "write",
          "append 1 byte to a %s lower file (copy-up)" % human(sz.big_bytes),
          rw=True, prime=SEQ_READ, check=check_append(sz.big_bytes)),
        W("create-unlink", "synth5", create_unlink(sz.create_files),
          "write", "create + unlink %d files" % sz.create_files, rw=True,
          prime=sh("ls -l tmp >/dev/null"), check=check_empty_tmp),
        W("chmod-copyup", "synth5", chmod_lower(sz.synth_chmod), "write",
          "chmod %d lower files (copy-up)" % sz.synth_chmod, rw=True,
          prime=prime_chmod(sz.synth_chmod),
          check=check_chmod(sz.synth_chmod)),
    ]
    for d in sz.depths:
        ws.append(W("walk-cold-depth%d" % d, "depth%d" % d, WALK, "cold",
                    "cold walk, same %d files in %d layer%s" % (
                        sz.depth_files, d, "s" if d > 1 else "")))
    for n in sz.tar_layers:
        # issue 17's second harness: Python tarfile (PAX) layers
        for rw in (False, True):
            ws.append(W("walk-cold-pax%d%s" % (n, "-rw" if rw else ""),
                        "pax%d" % n, WALK, "cold",
                        "cold walk, %d tarfile-made layer%s (%d files + a "
                        "%d-entry dir)%s" % (
                            n, "s" if n > 1 else "", sz.tar_files,
                            sz.tar_wide, ", writable" if rw else ""),
                        rw=rw))
    ws += [
        W("debian-walk-cold", "debian", WALK, "cold",
          "Debian minbase rootfs (4 layers): walk, cold"),
        W("debian-walk-warm", "debian", WALK, "warm",
          "Debian rootfs: walk, warm"),
        W("debian-read-all-cold", "debian", READ_ALL, "cold",
          "Debian rootfs: read every file, cold"),
    ]
    return ws


SPECIAL = ["mount-128", "mount-100k", "podman-run", "podman-build", "import-1g", "rss-100k",
           "rss-1m", "pull", "debian-tree-why"]

# issue 16's goal for the debugging commands on the Debian image
TREE_WHY_GOAL_S = 0.1
TREE_WHY_PATHS = ["/etc/passwd", "/usr/bin/ls"]


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if n == int(n) else \
                ("%.1f %s" % (n, unit))
        n /= 1024


# --------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.store = os.path.join(self.work, "store")
        self.sz = images.Sizes(quick=args.quick)
        self.live = []          # mounts to undo on any exit
        self.images = {}
        self.skipped = {}       # what -> reason
        self.results = {}
        self.extra = {}
        self.consistency = {}
        self.user = None        # User of the *-user columns
        self.serial = 0         # layerfs mountpoints: one per mount
        self.exiting = []       # pids of layerfs daemons unmounted, maybe
        self.t_start = time.time()  # not gone yet
        self.load_start = os.getloadavg()

    # ---- images ----------------------------------------------------------

    def debian_rootfs(self):
        if self.args.quick:
            raise Skip("skipped: Debian image is not built in --quick")
        if not shutil.which("debootstrap"):
            raise Skip("skipped: debootstrap not installed")
        # One rootfs tar for the bench and the tests (tests/common/debian.rs
        # writes the same name, made the same way): --cache DIR, else the
        # tests' cache ($LAYERFS_TEST_CACHE, else /var/tmp/layerfs-test-cache).
        dirs = [d for d in (self.args.cache, os.environ.get("LAYERFS_TEST_CACHE"),
                            "/var/tmp/layerfs-test-cache") if d]
        cache = self.args.cache and os.path.join(self.args.cache, DEBIAN_TAR)
        root = os.path.join(self.work, "debootstrap")
        for found in (os.path.join(d, DEBIAN_TAR) for d in dirs):
            if os.path.exists(found):
                log("Debian rootfs from cache", found)
                os.makedirs(root)
                run(images.extract_cmd(found, root))
                return root
        mirror = self.args.mirror
        log("debootstrap --variant=minbase bookworm from", mirror,
            "(a minute or two)")
        t = time.time()
        r = run(["debootstrap", "--variant=minbase", "bookworm", root,
                 mirror], check=False, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
            raise Skip("skipped: debootstrap failed (exit %d): %s" % (
                r.returncode, " | ".join(tail)))
        self.extra["debootstrap_seconds"] = round(time.time() - t, 1)
        prune_rootfs(root)
        if cache:
            os.makedirs(self.args.cache, exist_ok=True)
            images.tar_dir(root, cache, ["."])
        return root

    def image(self, name):
        if name in self.images:
            return self.images[name]
        if name in self.skipped:
            raise Skip(self.skipped[name])
        try:
            rootfs = self.debian_rootfs() if name == "debian" else None
        except Skip as e:
            self.skipped[name] = str(e)
            log(name + ":", e)
            raise
        t = time.time()
        img = images.build(name, self.work, self.sz, self.args.seed, rootfs)
        t_build = time.time() - t
        names = [i.name for i in self.impls if not i.skip]
        t = time.time()
        if "layerfs" in names:
            run([self.args.layerfs, "--root", self.store, "import",
                 img.archive], stdout=subprocess.DEVNULL)
        t_imp = time.time() - t
        t = time.time()
        if "layerfs-user" in names:
            # the user's own store, imported by the user
            u = self.user
            u.call(lambda: run([self.args.layerfs, "--root", u.store,
                                "import", img.archive],
                               stdout=subprocess.DEVNULL) and None)
        t_uimp = time.time() - t
        t = time.time()
        images.extract_overlay(img)
        t_ext = time.time() - t
        if self.user and not self.user.skip and any(
                n in names for n in ("layerfs-dirs-user",
                                     "fuse-overlayfs-user",
                                     "fuse-overlayfs2-user")):
            n = images.root_only(img.ovl)
            if n:
                # what rootless storage holds: the user's own copy
                log("image %s: %d entries only root may read: the "
                    "unprivileged columns mount a copy owned by %s" % (
                        name, n, self.user.name))
                images.user_copy(img, self.user.uid, self.user.gid)
                img.notes["user_copy_root_only_entries"] = n
        if rootfs:
            shutil.rmtree(rootfs)
        img.notes.update(build_s=round(t_build, 2), import_s=round(t_imp, 2),
                         user_import_s=round(t_uimp, 2),
                         extract_s=round(t_ext, 2))
        log("image %s: %d layers, built %.1fs, imported %.1fs (user %.1fs),"
            " extracted %.1fs" % (name, len(img.layers), t_build, t_imp,
                                  t_uimp, t_ext))
        self.images[name] = img
        self.check_same(img)
        return img

    def check_same(self, img):
        """The implementations must show the same tree: compare a listing
        (type, mode, owner, size of non-directories, path, link target)."""
        listing, res = {}, {}
        for impl in self.impls:
            try:
                m = impl.mount(img)
            except Skip:
                continue
            except (OSError, RuntimeError,
                    subprocess.CalledProcessError) as e:
                log("WARNING: %s cannot mount %s: %s" % (impl.name, img.name,
                                                         e))
                res[impl.name] = {"error": "mount: %s" % e}
                continue

            def find(path=m.path):
                r = subprocess.run(
                    ["find", ".", "-printf", "%y %m %U %G %s %p %l\\n"],
                    cwd=path, capture_output=True)
                if r.returncode != 0:
                    raise RuntimeError("find failed (%d): %s" % (
                        r.returncode, r.stderr.decode("utf-8", "replace")
                        .strip().splitlines()[:3]))
                return r.stdout.decode("utf-8", "replace")
            try:
                out = impl.call(find)
            except RuntimeError as e:
                log("WARNING: listing %s on %s failed: %s" % (
                    img.name, impl.name, e))
                res[impl.name] = {"error": "listing: %s" % e}
                continue
            finally:
                impl.umount(m)
            lines = []
            for line in out.splitlines():
                f = line.split(" ")
                if f[0] == "d":
                    f[4] = "-"
                lines.append(" ".join(f))
            listing[impl.name] = sorted(lines)
        ref = listing.get("overlay")
        for name, lines in listing.items():
            res[name] = {"entries": len(lines)}
            if ref is not None and name.endswith("-user"):
                # the user's mounts show every file as the user
                # (squash_to_uid/gid): compare without owners
                def strip(ls):
                    return sorted(" ".join(x.split(" ")[:2] +
                                           x.split(" ")[4:]) for x in ls)
                lines, ref_cmp = strip(lines), strip(ref)
            else:
                ref_cmp = ref
            if ref is not None and name != "overlay" and lines != ref_cmp:
                a, b = set(lines), set(ref_cmp)
                diff = sorted(a ^ b)
                res[name]["differs_from_overlay"] = len(diff)
                log("WARNING: %s shows %s differently from overlay (%d "
                    "lines), e.g.:" % (name, img.name, len(diff)))
                for d in diff[:6]:
                    log("   %s %s" % ("+" if d in a else "-", d))
        self.consistency[img.name] = res

    # ---- timing ----------------------------------------------------------

    def measure(self, w, impl, img):
        m = impl.mount(img, rw=w.rw)
        try:
            if w.temp == "cold":
                drop_caches()       # root's job, before the user's part

            def body():             # as the implementation's user
                if w.temp != "cold" and w.prime:
                    w.prime(m.path)
                    os.sync()
                t = time.perf_counter()
                w.op(m.path)
                dt = time.perf_counter() - t
                if w.check:
                    w.check(m.path)
                return dt
            return impl.call(body)
        finally:
            impl.umount(m)
            if m.upper:
                if isinstance(impl, Layerfs):
                    self.wait_exits()   # it holds a lock in the rw dir
                shutil.rmtree(m.upper)

    def wait_exits(self, timeout=10):
        """Forget layerfs daemons that have exited; wait up to `timeout`
        seconds for the others; the pids still running."""
        deadline = time.time() + timeout
        while True:
            self.exiting = [p for p in self.exiting if alive(p)]
            if not self.exiting or time.time() >= deadline:
                return self.exiting
            time.sleep(0.02)

    def run_workload(self, w):
        try:
            img = self.image(w.image)
        except Skip as e:
            self.results[w.name] = {"desc": w.desc, "skipped": str(e)}
            return
        res = {"desc": w.desc, "image": w.image, "temp": w.temp,
               "impls": {}}
        samples = {i.name: [] for i in self.impls}
        for r in range(self.args.rounds):
            for impl in self.impls:
                if impl.name in res["impls"]:
                    continue        # skipped
                try:
                    dt = self.measure(w, impl, img)
                except Skip as e:
                    res["impls"][impl.name] = {"skipped": str(e)}
                    continue
                except (OSError, RuntimeError,
                        subprocess.CalledProcessError) as e:
                    log("%s on %s FAILED: %s" % (w.name, impl.name, e))
                    res["impls"][impl.name] = {"skipped": "error: %s" % e}
                    continue
                samples[impl.name].append(dt)
            log("%s round %d: %s" % (w.name, r + 1, "  ".join(
                "%s %.3fs" % (k, v[-1]) for k, v in samples.items() if v)))
        for name, s in samples.items():
            if s and name not in res["impls"]:
                res["impls"][name] = stats(s)
        self.results[w.name] = res

    # ---- special measurements --------------------------------------------

    def mount_time(self, name=None, key="mount-128"):
        """Mount time of image `name` (default the deepest depthN) as row
        `key`: the mount command plus a readdir of the root, cold."""
        name = name or "depth%d" % max(self.sz.depths)
        try:
            img = self.image(name)
        except Skip as e:
            self.results[key] = {"skipped": str(e)}
            return
        what = ("the %d-layer image" % len(img.layers) if key == "mount-128"
                else "the %s image, %d layers," % (name, len(img.layers)))
        res = {"desc": "mount %s (command + first readdir"
               " of the root), cold" % what, "image": name,
               "temp": "cold", "impls": {}}
        samples = {i.name: [] for i in self.impls}
        for r in range(self.args.rounds):
            for impl in self.impls:
                if impl.skip:
                    res["impls"][impl.name] = {"skipped": impl.skip}
                    continue
                drop_caches()
                try:
                    m = impl.mount(img, timed=True)
                except (OSError, RuntimeError,
                        subprocess.CalledProcessError) as e:
                    log("%s on %s FAILED: %s" % (key, impl.name, e))
                    res["impls"][impl.name] = {"skipped": "error: %s" % e}
                    continue
                samples[impl.name].append(m.seconds)
                impl.umount(m)
        for n, s in samples.items():
            if s:
                res["impls"][n] = stats(s)
        self.results[key] = res

    def import_time(self):
        """layerfs import of the 1 GiB docker-archive into an empty store
        vs GNU tar -x of the same layer tars into directories."""
        try:
            img = self.image("big1g")
        except Skip as e:
            self.extra["import"] = {"skipped": str(e)}
            return
        s = {"layerfs import": [], "layerfs import + sync": [],
             "tar -x": [], "tar -x + sync": []}
        for r in range(self.args.rounds):
            root = os.path.join(self.work, "import-store")
            drop_caches()
            t = time.perf_counter()
            run([self.args.layerfs, "--root", root, "import", img.archive],
                stdout=subprocess.DEVNULL)
            t1 = time.perf_counter()
            os.sync()
            t2 = time.perf_counter()
            s["layerfs import"].append(t1 - t)
            s["layerfs import + sync"].append(t2 - t)
            shutil.rmtree(root)
            dest = os.path.join(self.work, "import-dirs")
            drop_caches()
            t = time.perf_counter()
            for k, (path, _) in enumerate(img.layers):
                d = os.path.join(dest, str(k))
                os.makedirs(d)
                run(images.extract_cmd(path, d))
            t1 = time.perf_counter()
            os.sync()
            t2 = time.perf_counter()
            s["tar -x"].append(t1 - t)
            s["tar -x + sync"].append(t2 - t)
            shutil.rmtree(dest)
            log("import round %d: %s" % (r + 1, "  ".join(
                "%s %.2fs" % (k, v[-1]) for k, v in s.items())))
        self.extra["import"] = {
            "desc": "import of the %s docker-archive (%d layers) into an "
            "empty store vs tar -x of the same layer tars, cold source" % (
                human(self.sz.big_bytes), len(img.layers)),
            "samples": {k: stats(v) for k, v in s.items()}}

    def tree_why_time(self):
        """`layerfs tree` and `layerfs why PATH` on the Debian image, warm
        (one untimed run first), as absolute times against issue 16's goal
        (dive has no non-interactive equivalent to time)."""
        try:
            img = self.image("debian")
        except Skip as e:
            self.extra["tree_why"] = {"skipped": str(e)}
            return
        cmds = {"tree": ["tree", img.tag],
                "tree --json": ["tree", img.tag, "--json"]}
        for p in TREE_WHY_PATHS:
            cmds["why " + p] = ["why", img.tag, p]
        s = {k: [] for k in cmds}
        for k, c in cmds.items():
            run([self.args.layerfs, "--root", self.store] + c,
                stdout=subprocess.DEVNULL)
        # what the timed runs print: the tree's entries, why's lines
        lines = {k: len(run([self.args.layerfs, "--root", self.store] + c,
                            capture_output=True, text=True)
                        .stdout.splitlines())
                 for k, c in cmds.items() if k != "tree --json"}
        log("output lines:", ", ".join("%s %d" % kv for kv in lines.items()))
        for r in range(max(self.args.rounds, 5)):
            for k, c in cmds.items():
                t = time.perf_counter()
                run([self.args.layerfs, "--root", self.store] + c,
                    stdout=subprocess.DEVNULL)
                s[k].append(time.perf_counter() - t)
        for k, v in s.items():
            med = statistics.median(v)
            log("%s: median %.4fs (min %.4fs, max %.4fs) %s" % (
                k, med, min(v), max(v),
                "under" if med < TREE_WHY_GOAL_S else "OVER"),
                "the %.1fs goal" % TREE_WHY_GOAL_S)
        self.extra["tree_why"] = {
            "desc": "layerfs tree / why PATH on the Debian minbase image "
            "(%d layers), warm, whole command (process start included); "
            "goal under %.1f s (issue 16)" % (len(img.layers),
                                               TREE_WHY_GOAL_S),
            "goal_s": TREE_WHY_GOAL_S, "output_lines": lines,
            "samples": {k: stats(v) for k, v in s.items()}}

    def pull_time(self):
        """layerfs pull vs podman pull vs skopeo copy to a docker-archive +
        layerfs import, of the Debian and a 10-layer image put (gzip) into
        a local docker-registry by skopeo (issue 13). Each round pulls into
        an empty store; the registry's files are warm."""
        need = [t for t in ("docker-registry", "skopeo")
                if not shutil.which(t)]
        if need:
            self.extra["pull"] = {"skipped": "not installed: " +
                                  ", ".join(need)}
            return
        import socket
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        rdir = os.path.join(self.work, "registry")
        os.makedirs(rdir, exist_ok=True)
        cfg = os.path.join(rdir, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n"
                    "    disabled: true\nstorage:\n  filesystem:\n"
                    "    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%d\n"
                    % (os.path.join(rdir, "data"), port))
        dn = subprocess.DEVNULL
        proc = subprocess.Popen(["docker-registry", "serve", cfg],
                                stdout=dn, stderr=dn)
        try:
            deadline = time.time() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        self.extra["pull"] = {
                            "skipped": "error: docker-registry did not start"}
                        return
                    time.sleep(0.05)
            res = {"desc": "pull from a local docker-registry (gzip layers "
                   "as skopeo pushes them) into an empty store", "images": {}}
            podman = shutil.which("podman")
            for name in ("debian", "depth10"):
                try:
                    img = self.image(name)
                except Skip as e:
                    res["images"][name] = {"skipped": str(e)}
                    continue
                ref = "127.0.0.1:%d/bench/%s:1" % (port, name)
                run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                     "docker-archive:" + img.archive, "docker://" + ref])
                s = {"layerfs pull": [], "podman pull": [],
                     "skopeo copy + import": []}
                root = os.path.join(self.work, "pull-store")
                arch = os.path.join(self.work, "pull.tar")
                for r in range(self.args.rounds):
                    t = time.perf_counter()
                    run([self.args.layerfs, "--root", root, "pull", "-q",
                         "--tls-verify=false", ref], stdout=dn)
                    s["layerfs pull"].append(time.perf_counter() - t)
                    shutil.rmtree(root)
                    t = time.perf_counter()
                    run(["skopeo", "copy", "-q", "--src-tls-verify=false",
                         "docker://" + ref, "docker-archive:" + arch])
                    run([self.args.layerfs, "--root", root, "import", arch],
                        stdout=dn)
                    s["skopeo copy + import"].append(time.perf_counter() - t)
                    shutil.rmtree(root)
                    os.unlink(arch)
                    if podman:
                        subprocess.run(["podman", "rmi", "-f", ref],
                                       stdout=dn, stderr=dn)
                        t = time.perf_counter()
                        run(["podman", "pull", "-q", "--tls-verify=false",
                             ref], stdout=dn)
                        s["podman pull"].append(time.perf_counter() - t)
                        subprocess.run(["podman", "rmi", "-f", ref],
                                       stdout=dn, stderr=dn)
                    log("pull %s round %d: %s" % (name, r + 1, "  ".join(
                        "%s %.2fs" % (k, v[-1]) for k, v in s.items() if v)))
                res["images"][name] = {
                    "layers": len(img.layers),
                    "samples": {k: stats(v) for k, v in s.items() if v}}
            self.extra["pull"] = res
        finally:
            proc.kill()
            proc.wait()

    def podman_time(self, which):
        """Issue 12: `podman run` and `podman build` on podman's overlay
        driver with each FUSE column's binary as its mount program, and
        on the kernel overlay driver (the overlay column), each with a
        private storage.conf and containers.conf as
        tests/common/podman.rs writes them. `which`: the rows to run."""
        descs = {
            "podman-run": "`podman run --rm --network none` of the 3-layer "
            "fixture image (`/bin/busybox true`), per run, %d runs a round"
            % podman_runs(self.args),
            "podman-build": "`podman build --no-cache` of a Containerfile "
            "FROM that image, 3 RUN steps writing files (500 small, 16 MiB,"
            " edits and removals of lower files)",
        }
        why = None
        if not shutil.which("podman"):
            why = "skipped: podman not installed"
        elif not shutil.which("runc"):
            why = "skipped: runc not installed (the runtime the private " \
                "containers.conf names)"
        fixture = os.path.join(self.args.repo, "fixtures", "multi.docker.tar")
        if not why and not os.path.exists(fixture):
            why = "skipped: %s missing" % fixture
        cols = [i for i in self.impls if i.name in PODMAN_IMPLS]
        if not why and not cols:
            why = "skipped: no podman column selected (%s)" % ", ".join(
                PODMAN_IMPLS)
        if why:
            for w in which:
                self.results[w] = {"desc": descs[w], "skipped": why}
            return
        res = {w: {"desc": descs[w], "image": "multi.docker.tar (fixture)",
                   "temp": "warm", "impls": {}} for w in which}
        samples = {w: {i.name: [] for i in cols} for w in which}
        pods = {}
        try:
            for impl in cols:
                if impl.skip:
                    for w in which:
                        res[w]["impls"][impl.name] = {"skipped": impl.skip}
                    continue
                try:
                    pods[impl.name] = Podman(self, impl)
                    pods[impl.name].setup(fixture)
                except (OSError, RuntimeError,
                        subprocess.SubprocessError) as e:
                    log("podman on %s FAILED: %s" % (impl.name, e))
                    for w in which:
                        res[w]["impls"][impl.name] = {
                            "skipped": "error: %s" % e}
            for r in range(self.args.rounds):
                for w in which:
                    for impl in cols:
                        p = pods.get(impl.name)
                        if not p or impl.name in res[w]["impls"]:
                            continue
                        try:
                            if w == "podman-run":
                                samples[w][impl.name] += p.time_runs(
                                    podman_runs(self.args))
                            else:
                                samples[w][impl.name].append(p.time_build())
                        except (OSError, RuntimeError,
                                subprocess.SubprocessError) as e:
                            log("%s on %s FAILED: %s" % (w, impl.name, e))
                            res[w]["impls"][impl.name] = {
                                "skipped": "error: %s" % e}
                    log("%s round %d: %s" % (w, r + 1, "  ".join(
                        "%s %.3fs" % (k, statistics.median(v))
                        for k, v in samples[w].items() if v)))
        finally:
            for p in pods.values():
                p.reset()
        for w in which:
            for name, s in samples[w].items():
                if s and name not in res[w]["impls"]:
                    res[w]["impls"][name] = stats(s)
            # the container's root mount (type, source), as it saw it
            res[w]["root_mounts"] = {n: p.root_mount
                                     for n, p in pods.items()}
            self.results[w] = res[w]

    def rss(self):
        """Daemon RSS after a walk of the 100k-file image."""
        try:
            img = self.image("files100k")
        except Skip as e:
            self.extra["rss"] = {"skipped": str(e)}
            return
        res = {"desc": "daemon VmRSS / VmHWM after `find -printf` of the "
               "%d-file image" % img.notes["files"], "impls": {}}
        self.wait_exits()
        for impl in self.impls:
            if impl.name == "overlay":
                continue
            try:
                m = impl.mount(img)
            except Skip as e:
                res["impls"][impl.name] = {"skipped": str(e)}
                continue
            except (OSError, RuntimeError,
                    subprocess.CalledProcessError) as e:
                log("rss-100k on %s FAILED: %s" % (impl.name, e))
                res["impls"][impl.name] = {"skipped": "error: %s" % e}
                continue
            try:
                drop_caches()
                try:
                    impl.call(lambda: WALK(m.path))
                except (OSError, RuntimeError) as e:
                    log("rss-100k on %s FAILED: %s" % (impl.name, e))
                    res["impls"][impl.name] = {"skipped": "error: %s" % e}
                    continue
                pid = impl.daemon_pid(m)
                st = {}
                if pid:
                    with open("/proc/%d/status" % pid) as f:
                        for line in f:
                            k, _, v = line.partition(":")
                            if k in ("VmRSS", "VmHWM"):
                                st[k] = int(v.split()[0]) * 1024
                            elif k == "Uid":
                                st["uid"] = int(v.split()[0])
                res["impls"][impl.name] = {"pid": pid, **st}
            finally:
                impl.umount(m)
        self.extra["rss"] = res

    def rss_1m(self):
        """Daemon RSS after `ls -f` of a 1,000,000-entry directory and after
        `find` of it (each on a fresh mount), and after the kernel then
        forgets its cached inodes (issue 14: forgotten nodes are freed)."""
        try:
            img = self.image("files1m")
        except Skip as e:
            self.extra["rss-1m"] = {"skipped": str(e)}
            return
        walks = [("ls -f", sh("ls -f dir >/dev/null")),
                 ("find", sh("find . -printf '%s\\n' >/dev/null"))]
        res = {"desc": "daemon VmRSS / VmHWM after each walk of the %d-entry "
               "directory, then after `echo 2 > drop_caches` (the kernel "
               "forgets its inodes)" % img.notes["files"], "impls": {}}
        self.wait_exits()

        def status(pid):
            st = {}
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM", "RssAnon"):
                        st[k] = int(v.split()[0]) * 1024
            return st
        for impl in self.impls:
            if impl.name == "overlay":
                continue
            out = {}
            for name, walk in walks:
                try:
                    m = impl.mount(img)
                except Skip as e:
                    out = {"skipped": str(e)}
                    break
                except (OSError, RuntimeError,
                        subprocess.CalledProcessError) as e:
                    log("rss-1m on %s FAILED: %s" % (impl.name, e))
                    out = {"skipped": "error: %s" % e}
                    break
                try:
                    drop_caches()
                    t = time.time()
                    impl.call(lambda: walk(m.path))
                    secs = time.time() - t
                    pid = impl.daemon_pid(m)
                    if not pid:
                        out[name] = {"secs": secs}
                        continue
                    after = status(pid)
                    with open("/proc/sys/vm/drop_caches", "w") as f:
                        f.write("2\n")
                    time.sleep(2)   # FORGETs are queued, then answered
                    out[name] = {"secs": secs, "after": after,
                                 "forgotten": status(pid)}
                except (OSError, RuntimeError) as e:
                    log("rss-1m on %s FAILED: %s" % (impl.name, e))
                    out[name] = {"skipped": "error: %s" % e}
                finally:
                    impl.umount(m)
            res["impls"][impl.name] = out
        self.extra["rss-1m"] = res

    # ---- main ------------------------------------------------------------

    def run(self):
        os.umask(0o022)     # the unprivileged user reads the work dir
        self.impls = make_impls(self, self.args.impl)
        for i in self.impls:
            if i.skip:
                log("%s: %s" % (i.name, i.skip))
                self.skipped[i.name] = i.skip
            elif i.rw_skip:
                log("%s: %s (write workloads)" % (i.name, i.rw_skip))
        lf = [i for i in self.impls if isinstance(i, Layerfs)]
        if lf and all(i.skip for i in lf) and lf[0].skip.startswith(
                "layerfs binary"):
            raise SystemExit("bench: " + lf[0].skip)
        os.makedirs(self.store, exist_ok=True)
        sel = self.args.only
        for w in workloads(self.sz):
            if sel and w.name not in sel:
                continue
            log("workload %s: %s" % (w.name, w.desc))
            self.run_workload(w)
        if not sel or "mount-128" in sel:
            log("mount time of the %d-layer image" % max(self.sz.depths))
            self.mount_time()
        if not sel or "mount-100k" in sel:
            log("mount time of the files100k image")
            self.mount_time("files100k", "mount-100k")
        pod = [w for w in ("podman-run", "podman-build")
               if not sel or w in sel]
        if pod:
            log("podman run / build on each storage driver setup")
            self.podman_time(pod)
        if not sel or "import-1g" in sel:
            log("import vs tar -x")
            self.import_time()
        if not sel or "pull" in sel:
            log("pull from a local registry")
            self.pull_time()
        if not sel or "debian-tree-why" in sel:
            log("layerfs tree / why on the Debian image")
            self.tree_why_time()
        if not sel or "rss-100k" in sel:
            log("daemon RSS after walking the many-file image")
            self.rss()
        if not sel or "rss-1m" in sel:
            log("daemon RSS after ls -f / find of a 1,000,000-entry directory")
            self.rss_1m()

    def cleanup(self):
        for m in list(reversed(self.live)):
            try:
                m.impl.umount(m)
            except Exception as e:  # keep going: unmount all we can
                log("cleanup: umount %s: %s" % (m.path, e))
        if self.wait_exits():
            log("cleanup: layerfs daemons still running:", self.exiting)

    def report(self):
        meta = machine(self.args)
        meta["seconds"] = round(time.time() - self.t_start, 1)
        meta["loadavg_start"] = self.load_start
        out = {"meta": meta, "results": self.results, "extra": self.extra,
               "skipped": self.skipped, "consistency": self.consistency,
               "images": {k: v.to_json() for k, v in self.images.items()}}
        table = render(out)
        print(table)
        if self.args.json:
            os.makedirs(os.path.dirname(os.path.abspath(self.args.json)),
                        exist_ok=True)
            with open(self.args.json, "w") as f:
                json.dump(out, f, indent=1, sort_keys=True)
                f.write("\n")
            with open(os.path.splitext(self.args.json)[0] + ".md", "w") as f:
                f.write(table + "\n")
            log("results written to", self.args.json, "and",
                os.path.splitext(self.args.json)[0] + ".md")


def stats(s):
    med = statistics.median(s)
    return {"samples": [round(x, 4) for x in s], "median": med,
            "min": min(s), "max": max(s),
            "spread": (max(s) - min(s)) / med if med > 0 else 0.0}


def machine(args):
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except Exception:
            return None
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    fo = [x for x in (cmd(["fuse-overlayfs", "--version"]) or "").splitlines()
          if x.startswith("fuse-overlayfs")]
    fo2 = fuse_overlayfs2_bin()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "mem_bytes": mem, "loadavg_end": os.getloadavg(),
        "layerfs_bin": args.layerfs,
        "layerfs_git": cmd(["git", "-C", args.repo, "describe", "--always",
                            "--dirty"]),
        "fuse_overlayfs": fo[0] if fo else None,
        "fuse_overlayfs2": "%s (%s)" % (
            fo2[1].replace("fuse-overlayfs:", "fuse-overlayfs2:", 1), fo2[0])
        if fo2[0] else "fuse-overlayfs2: none",
        "command": args.command, "rounds": args.rounds, "quick": args.quick,
        "impls": args.impl, "user": BENCH_USER,
        "seed": args.seed,
    }


def cell(r):
    if r is None:
        return "-"
    if "skipped" in r:
        return "error" if r["skipped"].startswith("error") else "skipped"
    return "%.3f ±%.0f%%" % (r["median"], 50 * r["spread"])


def ratio(a, b):
    if not a or not b or "median" not in a or "median" not in b \
            or b["median"] <= 0:
        return "-"
    return "%.2f" % (a["median"] / b["median"])


def short(name):
    """Column title: the -user suffix is said by the section."""
    return name[:-5] if name.endswith("-user") else name


def table(results, cols, ratios):
    """Markdown rows: a workload per line, `cols` then the ratios (a, b)
    of their medians; b may be a column of another section."""
    head = ["workload"] + [short(c) for c in cols] + [
        "%s/%s" % (short(a), b if b == "overlay" else short(b))
        for a, b in ratios]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for name, r in results.items():
        if "skipped" in r:
            lines.append("| %s | %s |%s" % (r["desc"], r["skipped"],
                                             " |" * (len(head) - 2)))
            continue
        im = r["impls"]
        if not any(c in im for c in cols):
            continue
        row = [r["desc"]] + [cell(im.get(c)) for c in cols] + [
            ratio(im.get(a), im.get(b)) for a, b in ratios]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(out):
    m = out["meta"]
    lines = [
        "layerfs benchmark: %s, %s CPUs (%s), %s RAM, kernel %s; %s round%s"
        " alternated, every run on a fresh mount" % (
            m["date"], m["cpus"], m["cpu"], human(m["mem_bytes"]),
            m["kernel"], m["rounds"], "" if m["rounds"] == 1 else "s"),
        "layerfs binary %s, bench tools of %s; %s; %s; load average %s at "
        "start, %s at end; %.0f s" % (
            m["layerfs_bin"], m["layerfs_git"], m["fuse_overlayfs"],
            m.get("fuse_overlayfs2", "fuse-overlayfs2: none"),
            " ".join("%.1f" % x for x in m.get("loadavg_start", ())),
            " ".join("%.1f" % x for x in m["loadavg_end"]),
            m.get("seconds", 0)),
        "command: %s" % m["command"],
        "",
        "Seconds, median ±half the range (max-min)/2 as % of the median.",
    ]
    notes = []
    sel = m.get("impls", ["layerfs", "overlay", "fuse-overlayfs"])
    # no timed workloads (--only rss-100k, ...): no empty tables
    root = [i for i in ROOT_IMPLS if i in sel and out["results"]]
    user = [i for i in USER_IMPLS if i in sel and out["results"]]
    if root:
        ratios = [(a, b) for a in ("layerfs", "layerfs-dirs")
                  for b in ("overlay", "fuse-overlayfs", "fuse-overlayfs2")
                  if a in root and b in root]
        lines += ["", "As root:", ""]
        lines += table(out["results"], root, ratios)
    if user:
        # ratios to the root overlay column of the same run, and layerfs
        # vs fuse-overlayfs, both unprivileged
        ratios = [(a, "overlay") for a in user if "overlay" in root]
        ratios += [(a, b) for b in ("fuse-overlayfs-user",
                                    "fuse-overlayfs2-user")
                   for a in ("layerfs-user", "layerfs-dirs-user")
                   if a in user and b in user]
        lines += ["", "Unprivileged (user %s: its own layerfs store, "
                  "fusermount3, no passthrough; every file shown as the "
                  "user with squash_to_uid/gid; overlay is the root column "
                  "above):" % m.get("user", BENCH_USER), ""]
        lines += table(out["results"], user, ratios)
    for name, r in out["results"].items():
        if r.get("root_mounts"):
            notes.append("%s: the container's root mount (type source): %s"
                         % (name, ", ".join("%s %s" % kv for kv in
                                            r["root_mounts"].items())))
        for impl, v in r.get("impls", {}).items():
            if "skipped" in v:
                notes.append("%s / %s: %s" % (name, impl, v["skipped"]))
    imp = out["extra"].get("import")
    if imp:
        lines += ["", "Import vs extraction:", ""]
        if "skipped" in imp:
            lines.append(imp["skipped"])
        else:
            lines.append(imp["desc"] + ":")
            lines.append("")
            s = imp["samples"]
            lines += ["| | layerfs import | tar -x | tar -x / import |",
                      "|---|---|---|---|"]
            for suffix in ("", " + sync"):
                a, b = s["layerfs import" + suffix], s["tar -x" + suffix]
                lines.append("| %s | %s | %s | %s |" % (
                    "until the command returns" if not suffix else
                    "including sync", cell(a), cell(b), ratio(b, a)))
    tw = out["extra"].get("tree_why")
    if tw:
        lines += ["", "Debugging commands:", ""]
        if "skipped" in tw:
            lines.append(tw["skipped"])
        else:
            lines += [tw["desc"] + ":", "", "| command | median | goal |",
                      "|---|---|---|"]
            for k, v in tw["samples"].items():
                lines.append("| layerfs %s | %s | %s |" % (
                    k, cell(v), "met" if v["median"] < tw["goal_s"]
                    else "NOT met"))
    pull = out["extra"].get("pull")
    if pull:
        lines += ["", "Pull from a registry:", ""]
        if "skipped" in pull:
            lines.append(pull["skipped"])
        else:
            lines += [pull["desc"] + ":", "",
                      "| image | layerfs pull | podman pull | skopeo copy + "
                      "import | podman / layerfs |", "|---|---|---|---|---|"]
            for name, v in pull["images"].items():
                if "skipped" in v:
                    lines.append("| %s | skipped: %s | | | |" % (
                        name, v["skipped"]))
                    continue
                s = v["samples"]
                lp, pp = s["layerfs pull"], s.get("podman pull")
                lines.append("| %s (%d layers) | %s | %s | %s | %s |" % (
                    name, v["layers"], cell(lp), cell(pp),
                    cell(s["skopeo copy + import"]), ratio(pp, lp)))
    rss = out["extra"].get("rss")
    if rss:
        lines += ["", "Daemon memory:", ""]
        if "skipped" in rss:
            lines.append(rss["skipped"])
        else:
            lines.append(rss["desc"] + ":")
            for impl, v in rss["impls"].items():
                if "skipped" in v:
                    lines.append("- %s: %s" % (impl, v["skipped"]))
                elif "VmRSS" in v:
                    lines.append("- %s: VmRSS %.1f MiB, VmHWM %.1f MiB%s" % (
                        impl, v["VmRSS"] / 2**20, v["VmHWM"] / 2**20,
                        " (daemon uid %d)" % v["uid"] if v.get("uid")
                        else ""))
                else:
                    lines.append("- %s: daemon pid not found" % impl)
    r1m = out["extra"].get("rss-1m")
    if r1m:
        lines += ["", r1m.get("desc", "rss-1m") + ":", ""]
        if "skipped" in r1m:
            lines.append(r1m["skipped"])
        mib = lambda st, k: "%.0f" % (st[k] / 2**20) if k in st else "-"
        for impl, walks in r1m.get("impls", {}).items():
            if "skipped" in walks:
                lines.append("- %s: %s" % (impl, walks["skipped"]))
                continue
            for name, v in walks.items():
                if "after" not in v:
                    lines.append("- %s, %s: %s" % (
                        impl, name, v.get("skipped", "daemon pid not found")))
                    continue
                a, f = v["after"], v["forgotten"]
                lines.append(
                    "- %s, %s (%.1f s): VmRSS %s MiB (anon %s), VmHWM %s MiB;"
                    " after forgetting: VmRSS %s MiB (anon %s)" % (
                        impl, name, v["secs"], mib(a, "VmRSS"),
                        mib(a, "RssAnon"), mib(a, "VmHWM"), mib(f, "VmRSS"),
                        mib(f, "RssAnon")))
    for k, v in out["skipped"].items():
        notes.append("%s: %s" % (k, v))
    for k, v in out["consistency"].items():
        for impl, x in v.items():
            if "error" in x:
                notes.append("WARNING: %s could not list image %s: %s" % (
                    impl, k, x["error"]))
    bad = {k: v for k, v in out["consistency"].items()
           if any("differs_from_overlay" in x for x in v.values())}
    if bad:
        for k, v in bad.items():
            for impl, x in v.items():
                if "differs_from_overlay" in x:
                    notes.append("WARNING: %s shows image %s differently from"
                                 " overlay (%d listing lines differ)" % (
                                     impl, k, x["differs_from_overlay"]))
    if notes:
        lines += ["", "Notes:"] + ["- " + n for n in dict.fromkeys(notes)]
    return "\n".join(lines)


def main():
    names = [w.name for w in workloads(images.Sizes())] + SPECIAL
    p = argparse.ArgumentParser(
        prog="tools/bench", description=__doc__,
        epilog="environment: LAYERFS_BIN (use this layerfs binary instead "
        "of building one),\nCARGO_TARGET_DIR (where tools/bench builds; "
        "default ./target),\nLAYERFS_BENCH_OPTS (more -o options for every "
        "layerfs mount, comma-separated:\nan A/B of one option, e.g. "
        "passthrough=off),\nFUSE_OVERLAYFS2 (fuse-overlayfs 2.x for the "
        "fuse-overlayfs2 columns; else\nfuse-overlayfs2 on PATH; else "
        "they are skipped)",
        formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny images, 1 round, no Debian image")
    p.add_argument("--only", action="append", default=[],
                   metavar="WORKLOAD",
                   help="run only these (repeatable or comma-separated): "
                   + ", ".join(names))
    p.add_argument("--impl", action="append", default=[],
                   metavar="IMPL",
                   help="measure only these columns (repeatable or comma-"
                   "separated; default all): " + ", ".join(IMPLS))
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="rounds per workload (default 3, --quick 1)")
    p.add_argument("--workdir", default="/var/tmp/layerfs-bench",
                   metavar="DIR", help="images, store, mounts (default "
                   "%(default)s; removed at the end unless --keep)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="results file (default /var/tmp/layerfs-bench-"
                   "results/<UTC time>.json; a .md table next to it)")
    p.add_argument("--seed", type=int, default=6,
                   help="seed of the synthetic images (default %(default)s)")
    p.add_argument("--mirror", default="http://deb.debian.org/debian",
                   metavar="URL", help="Debian mirror for debootstrap "
                   "(tools/bench passes the one apt uses)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the debootstrap rootfs as a tar here (%s, "
                   "as the tests name it) and reuse it; without it the "
                   "tests' cache is reused if there" % DEBIAN_TAR)
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (handled by tools/bench)")
    p.add_argument("--layerfs", required=True, help=argparse.SUPPRESS)
    p.add_argument("--repo", default=".", help=argparse.SUPPRESS)
    p.add_argument("--command", default="tools/bench", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.only = [x for o in args.only for x in o.split(",") if x]
    for o in args.only:
        if o not in names:
            p.error("unknown workload %r; known: %s" % (o, ", ".join(names)))
    args.impl = [x for o in args.impl for x in o.split(",") if x]
    for o in args.impl:
        if o not in IMPLS:
            p.error("unknown implementation %r; known: %s" % (
                o, ", ".join(IMPLS)))
    args.impl = [i for i in IMPLS if not args.impl or i in args.impl]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.json is None:
        args.json = "/var/tmp/layerfs-bench-results/%s%s.json" % (
            time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "-quick" if args.quick else "")
    args.workdir = os.path.abspath(args.workdir)

    b = Bench(args)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt("signal %d" % sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    rc = 0
    try:
        b.run()
    except KeyboardInterrupt as e:
        log("interrupted", e)
        rc = 130
    except Exception:
        import traceback
        traceback.print_exc()
        log("FAILED; the results so far follow")
        rc = 1
    finally:
        b.cleanup()
    b.report()
    return rc


if __name__ == "__main__":
    sys.exit(main())
