//! End to end: an unprivileged user imports the busybox-based `multi`
//! fixture, makes a rootless OCI bundle with `layerfs bundle --rootless`
//! and runs it with runc (Debian's `runc` and `uidmap`). As root the test
//! creates the user, its /etc/subuid and /etc/subgid lines and makes
//! /dev/fuse usable; everything else runs as that user through `runuser`.
//! Plus, as root: owner mapping (`-o uidmapping`, `gidmapping`,
//! `squash_to_root`) both ways, and the init layer of a mount.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const USER: &str = "layerfs-runc";

/// The test user ([`ensure_user`]), with subordinate ids.
fn ensure_runc_user() -> (u32, u32) {
    let ids = ensure_user(USER);
    // Rootless runc needs no subordinate ids for a size-1 mapping, but
    // newuidmap-based tools (podman) do: give the user a range.
    for f in ["/etc/subuid", "/etc/subgid"] {
        let s = std::fs::read_to_string(f).unwrap_or_default();
        if !s.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
            let mut s = s;
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&format!("{USER}:300000:65536\n"));
            std::fs::write(f, s).unwrap();
        }
    }
    ids
}

/// What a rootless run needs, set up as root: FUSE usable, `runtime`
/// installed (its absence fails under CI), /dev/fuse 0666 and the test
/// user with subordinate ids; its (uid, gid), or `None` after a SKIP.
fn rootless_setup(runtime: &str) -> Option<(u32, u32)> {
    if !fuse_available() {
        return None;
    }
    if !is_root() {
        eprintln!("SKIP: needs root to create the unprivileged test user");
        return None;
    }
    if !have(runtime) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{runtime} is missing and CI is set (.ci/run installs it)"
        );
        eprintln!("SKIP: {runtime} is not installed");
        return None;
    }
    open_dev_fuse();
    Some(ensure_runc_user())
}

/// `ARGS` as the test user, with `env`: the output, whatever the status.
fn as_user(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_as(USER, env, args)
}

/// Cleans up whatever a failed run leaves: the container, the bundle's
/// mount (as the user, then lazily as root).
struct Cleanup {
    runtime: &'static str,
    exe: PathBuf,
    store: PathBuf,
    bundle: PathBuf,
    runc_root: PathBuf,
    id: &'static str,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = as_user(
            &[
                self.runtime,
                "--root",
                self.runc_root.to_str().unwrap(),
                "delete",
                "-f",
                self.id,
            ],
            &[],
        );
        let out = as_user(
            &[
                self.exe.to_str().unwrap(),
                "--root",
                self.store.to_str().unwrap(),
                "bundle",
                "--umount",
                self.bundle.to_str().unwrap(),
            ],
            &[],
        );
        let rootfs = self.bundle.join("rootfs");
        if std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .contains(&format!(" {} ", rootfs.display()))
        {
            eprintln!(
                "bundle --umount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = Command::new("umount").arg("-l").arg(&rootfs).status();
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The acceptance run: `id; ls /; echo hi > /tmp/x; cat
/// /etc/os-release` in a rootless runc container on a layerfs bundle.
#[test]
fn rootless_runc_runs_an_imported_image() {
    rootless_run("runc");
}

/// The same with crun. crun 1.8 refuses hybrid cgroup v1/v2 hosts (these
/// machines) outright ("cgroups in hybrid mode not supported"), so the
/// test gives it what a unified-cgroup host has: a private mount namespace
/// (made as root) whose /sys/fs/cgroup is a cgroup2 mount; the container
/// still runs as the unprivileged user, on the user's layerfs mount.
#[test]
fn rootless_crun_runs_an_imported_image() {
    rootless_run("crun");
}

fn rootless_run(runtime: &'static str) {
    let Some((uid, gid)) = rootless_setup(runtime) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(work.path())
        .status()
        .unwrap()
        .success());
    let w = work.path();
    let exe = w.join("layerfs");
    std::fs::copy(bin(), &exe).unwrap();
    let fx = w.join("multi.docker.tar");
    std::fs::copy(fixture("multi.docker.tar"), &fx).unwrap();
    let store = w.join("store");
    let bundle = w.join("bundle");
    let rw = w.join("rw");
    let runc_root = w.join("runc");
    let xdg = w.join("xdg");
    for d in [&runc_root, &xdg] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let lfs = |args: &[&str]| {
        let mut a = vec![exe.to_str().unwrap(), "--root", store.to_str().unwrap()];
        a.extend_from_slice(args);
        succeeded(&format!("layerfs {args:?}"), as_user(&a, &[]))
    };
    let id = lfs(&["import", fx.to_str().unwrap()]).trim().to_string();
    let _cleanup = Cleanup {
        runtime,
        exe: exe.clone(),
        store: store.clone(),
        bundle: bundle.clone(),
        runc_root: runc_root.clone(),
        id: "layerfs-e2e",
    };
    lfs(&[
        "bundle",
        &id,
        bundle.to_str().unwrap(),
        "--rw",
        rw.to_str().unwrap(),
        "--rootless",
        "--init-layer",
        "--",
        "sh",
        "-c",
        "id; ls /; echo hi > /tmp/x; cat /etc/os-release",
    ]);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], uid);
    assert_eq!(spec["linux"]["gidMappings"][0]["hostID"], gid);
    assert_eq!(
        spec["process"]["env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LAYERFS_FIXTURE=multi"
        ])
    );
    let run = [
        runtime,
        "--root",
        runc_root.to_str().unwrap(),
        "run",
        "-b",
        bundle.to_str().unwrap(),
        "layerfs-e2e",
    ];
    let xdg_env = ("XDG_RUNTIME_DIR", xdg.to_str().unwrap());
    let out = if runtime == "crun" {
        let script = format!(
            "mount -t cgroup2 none /sys/fs/cgroup && exec runuser -u {USER} -- env {}={} {}",
            xdg_env.0,
            xdg_env.1,
            run.join(" ")
        );
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap()
    } else {
        as_user(&run, &[xdg_env])
    };
    let stdout = succeeded(&format!("{runtime} run"), out);
    eprintln!("{runtime} output:\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("uid=0(root) gid=0(root)"), "{stdout}");
    for name in [
        "bin", "etc", "home", "opt", "tmp", "usr", "proc", "sys", "dev",
    ] {
        assert!(lines.contains(&name), "ls / lacks {name}: {stdout}");
    }
    assert!(stdout.contains("NAME=\"layerfs-fixture\""), "{stdout}");
    // The write landed in the branch, owned by the container's root
    // (recorded, since the daemon is rootless).
    assert_eq!(std::fs::read_to_string(rw.join("tmp/x")).unwrap(), "hi\n");
    let xattr = Command::new("getfattr")
        .args(["--only-values", "-n", "user.containers.override_stat"])
        .arg(rw.join("tmp/x"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&xattr.stdout), "0:0:0644:file");
    // The init layer's entries are not in the branch.
    for p in [".dockerenv", "proc", "sys", "dev", "etc"] {
        assert!(!rw.join(p).exists(), "{p} was written to the branch");
    }
    lfs(&["bundle", "--umount", bundle.to_str().unwrap()]);
    assert!(!bundle.join("config.json").exists());
    assert!(!std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(&format!(" {} ", bundle.join("rootfs").display())));
}

fn stat_ids(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// `-o uidmapping=...,gidmapping=...`: stat shows mapped owners (unmapped:
/// 65534); chown and new files map back to the stored ids.
#[test]
fn owner_mapping_both_ways() {
    let Some((s, id)) = fuse_store("multi.docker.tar").filter(|_| is_root()) else {
        return;
    };
    let branch = tempfile::tempdir().unwrap();
    let rw = branch.path().join("rw");
    {
        let m = Mount::new(
            &s,
            &id,
            &[
                "--rw",
                rw.to_str().unwrap(),
                "-o",
                "uidmapping=0:5000:1:1000:6000:10,gidmapping=0:5000:1:1000:6000:10",
            ],
        );
        assert_eq!(stat_ids(&m.path("etc/passwd")), (5000, 5000));
        // home/user is 1000:1000 in the image.
        assert_eq!(stat_ids(&m.path("home/user")), (6000, 6000));
        // chown to a shown id stores the mapped-back id.
        std::os::unix::fs::lchown(m.path("etc/group"), Some(6003), Some(5000)).unwrap();
        assert_eq!(stat_ids(&m.path("etc/group")), (6003, 5000));
        assert_eq!(stat_ids(&rw.join("etc/group")), (1003, 0));
        // An id no range maps cannot be stored.
        let e = std::os::unix::fs::lchown(m.path("etc/group"), Some(42), None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // A new file by root (unmapped: shown 0 is not in any range) gets
        // the overflow id; by a mapped creator, its stored id.
        std::fs::write(m.path("tmp/new"), b"x").unwrap();
        assert_eq!(stat_ids(&rw.join("tmp/new")), (65534, 65534));
    }
    {
        let m = Mount::new(&s, &id, &["-o", "uidmapping=0:5000:1,gidmapping=0:5000:1"]);
        // Stored 1000 is outside the only range: overflow id.
        assert_eq!(stat_ids(&m.path("home/user")), (65534, 65534));
        assert_eq!(stat_ids(&m.path("bin/busybox")), (5000, 5000));
    }
    {
        let m = Mount::new(&s, &id, &["-o", "squash_to_root"]);
        assert_eq!(stat_ids(&m.path("home/user/secret")), (0, 0));
    }
    let e = s.fails(&["mount", &id, "/tmp", "-o", "uidmapping=0:1"]);
    assert!(e.contains("CONTAINER:HOST:COUNT"), "{e}");
}

/// `--init-layer`: the Docker init layer's entries show on top of the
/// image, read-only, and reach the branch only when changed.
#[test]
fn init_layer_shows_and_copies_up_only_when_changed() {
    let Some((s, id)) = fuse_store("multi.docker.tar").filter(|_| is_root()) else {
        return;
    };
    let branch = tempfile::tempdir().unwrap();
    let rw = branch.path().join("rw");
    let m = Mount::new(&s, &id, &["--rw", rw.to_str().unwrap(), "--init-layer"]);
    for d in ["proc", "sys", "dev/pts", "dev/shm"] {
        assert!(m.path(d).is_dir(), "{d}");
    }
    for f in [
        ".dockerenv",
        "etc/resolv.conf",
        "etc/hosts",
        "etc/hostname",
        "dev/console",
    ] {
        let md = std::fs::symlink_metadata(m.path(f)).unwrap();
        assert!(md.is_file() && md.len() == 0, "{f}");
        // As Docker's setupInitLayer makes them.
        assert_eq!(md.mode() & 0o7777, 0o755, "{f}");
    }
    assert_eq!(
        std::fs::read_link(m.path("etc/mtab")).unwrap(),
        Path::new("/proc/mounts")
    );
    // The image's own /etc is still there, with its metadata.
    assert!(m.path("etc/os-release").exists());
    let etc = std::fs::metadata(m.path("etc")).unwrap();
    assert_eq!(etc.mtime(), 1_700_000_000);
    assert!(!rw.join("proc").exists() && !rw.join(".dockerenv").exists());
    std::fs::write(m.path("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(rw.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    assert!(!rw.join("etc/resolv.conf").exists());
}

/// `bundle` without --rootless writes a `runc spec`-like config from the
/// image config; `--umount` cleans up.
#[test]
fn bundle_writes_config_and_umount_cleans_up() {
    let Some((s, id)) = fuse_store("multi.docker.tar").filter(|_| is_root()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    s.ok(&["bundle", &id, b.to_str().unwrap()]);
    struct Umount<'a>(&'a TestStore, PathBuf);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = self
                .0
                .run(&["bundle", "--umount", self.1.to_str().unwrap()]);
        }
    }
    let guard = Umount(&s, b.clone());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["/bin/sh"]));
    assert_eq!(spec["process"]["cwd"], "/");
    assert_eq!(spec["root"]["readonly"], true);
    assert!(spec["linux"].get("uidMappings").is_none());
    assert!(b.join("rootfs/bin/busybox").exists());
    s.ok(&["bundle", "--umount", b.to_str().unwrap()]);
    std::mem::forget(guard);
    assert!(!b.join("config.json").exists());
    assert!(!b.join("rootfs/bin").exists());
}

/// `podman run --rootfs` on a layerfs mount, as the unprivileged user
/// (`--network none`: slirp4netns needs /dev/net/tun, which containers
/// like CI's often lack).
#[test]
fn rootless_podman_runs_on_a_mount() {
    let Some((uid, gid)) = rootless_setup("podman") else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = w.join("layerfs");
    std::fs::copy(bin(), &exe).unwrap();
    std::fs::copy(fixture("multi.docker.tar"), w.join("multi.docker.tar")).unwrap();
    for d in ["xdg", "mnt"] {
        std::fs::create_dir(w.join(d)).unwrap();
    }
    std::fs::set_permissions(w.join("xdg"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(w)
        .status()
        .unwrap()
        .success());
    let (xdg, home) = (w.join("xdg"), w.to_path_buf());
    let env = [
        ("XDG_RUNTIME_DIR", xdg.to_str().unwrap()),
        ("HOME", home.to_str().unwrap()),
    ];
    let store = w.join("store");
    let (mnt, rw) = (w.join("mnt"), w.join("rw"));
    let lfs = |args: &[&str]| {
        let mut a = vec![exe.to_str().unwrap(), "--root", store.to_str().unwrap()];
        a.extend_from_slice(args);
        succeeded(&format!("layerfs {args:?}"), as_user(&a, &env))
    };
    let id = lfs(&["import", w.join("multi.docker.tar").to_str().unwrap()])
        .trim()
        .to_string();
    struct Down<'a>(&'a [(&'a str, &'a str)], &'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            // podman's pause process keeps a copy of the mount in its own
            // namespace: stop it, or the daemon never sees the unmount.
            let _ = as_user(&["podman", "system", "migrate"], self.0);
            if !std::fs::read_to_string("/proc/mounts")
                .unwrap_or_default()
                .contains(&format!(" {} ", self.1.display()))
            {
                return;
            }
            let _ = Command::new("fusermount3").arg("-uz").arg(self.1).status();
            let _ = Command::new("umount").arg("-l").arg(self.1).status();
        }
    }
    let maps = format!("uidmapping=0:{uid}:1,gidmapping=0:{gid}:1");
    lfs(&[
        "mount",
        &id,
        mnt.to_str().unwrap(),
        "--rw",
        rw.to_str().unwrap(),
        "--init-layer",
        "-o",
        &maps,
    ]);
    let _down = Down(&env, &mnt);
    let out = as_user(
        &[
            "podman",
            // podman picks crun when it is installed, and crun 1.8 refuses
            // these hybrid-cgroup machines (see the crun test).
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--network",
            "none",
            "--rootfs",
            mnt.to_str().unwrap(),
            "sh",
            "-c",
            "id; echo hi > /tmp/x; cat /etc/os-release",
        ],
        &env,
    );
    let stdout = succeeded("podman run --rootfs", out);
    eprintln!("podman output:\n{stdout}");
    assert!(stdout.starts_with("uid=0(root) gid=0(root)"), "{stdout}");
    assert!(stdout.contains("NAME=\"layerfs-fixture\""), "{stdout}");
    assert_eq!(std::fs::read_to_string(rw.join("tmp/x")).unwrap(), "hi\n");
    let _ = as_user(&["podman", "system", "migrate"], &env);
    lfs(&["umount", mnt.to_str().unwrap()]);
}
