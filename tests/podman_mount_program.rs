//! layerfs as containers-storage's mount program, as podman runs it
//! (`layerfs -o lowerdir=...,upperdir=...,workdir=... MERGED`), as root:
//! the real client, podman from Debian, with its own storage root.
//! `podman mount` / `podman diff` / `podman umount` go through it.

mod common;

use std::path::Path;
use std::process::Command;

use common::debian::debian_minbase_tar;
use common::podman::*;
use common::*;

fn mount_options(mp: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-no", "FSTYPE,OPTIONS"])
        .arg(mp)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn podman_mounts_diffs_and_unmounts_through_layerfs() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let p = Podman::new();
    p.ok(&["load", "-i", fixture("multi.docker.tar").to_str().unwrap()]);
    let c = p.ok(&["create", "--network", "none", "multi", "sh"]);
    let c = c.trim();
    let mp = p.ok(&["mount", c]);
    let mp = Path::new(mp.trim());
    // Mounted by layerfs, for every user of the container, setuid bits
    // honoured (as kernel overlayfs would mount it for podman).
    let opts = mount_options(mp);
    assert!(opts.starts_with("fuse"), "{opts}");
    assert!(
        opts.contains("allow_other") && !opts.contains("nosuid"),
        "{opts}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(mp.join("bin/su-fake")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(mp.join("bin/busybox").is_file());

    std::fs::write(mp.join("newfile"), b"hello\n").unwrap();
    std::fs::remove_file(mp.join("etc/os-release")).unwrap();
    std::fs::create_dir(mp.join("newdir")).unwrap();
    std::fs::remove_dir_all(mp.join("opt")).unwrap();
    // podman's own diff, read from the upper directory layerfs wrote.
    let diff = p.ok(&["diff", c]);
    let mut lines: Vec<&str> = diff.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "A /newdir",
            "A /newfile",
            "C /etc",
            "D /etc/os-release",
            "D /opt"
        ],
        "{diff}"
    );
    p.ok(&["umount", c]);
    assert!(
        mount_options(mp).is_empty(),
        "still mounted after podman umount"
    );

    // Mounted again at once, ten times (podman stops and starts containers
    // back to back): the changes are there each time.
    for i in 0..10 {
        let again = p.ok(&["mount", c]);
        let again = Path::new(again.trim());
        assert_eq!(
            std::fs::read(again.join("newfile")).unwrap(),
            b"hello\n",
            "round {i}"
        );
        assert!(!again.join("etc/os-release").exists());
        p.ok(&["umount", c]);
    }
    p.ok(&["rm", c]);
}

/// What a container's script does to the `multi` image: writes, appends
/// to and deletes lower files, renames lower directories (one of them
/// merged from two layers with an opaque marker), deletes and re-creates
/// a directory, chowns, chmods, makes a fifo, a device, symlinks and hard
/// links (to an upper and to a lower file).
const SCRIPT: &str = "set -e
echo new > /newfile
echo more >> /etc/passwd
rm /etc/os-release
mv /opt/data /opt/data2
mv /usr/share/doc/pkg /pkg
rm -rf /home/user && mkdir /home/user && echo again > /home/user/secret
chown 5:6 /usr/share/doc
chmod 700 /usr/share
mkfifo /fifo
mknod /null2 c 1 3
ln -s ../newfile /usr/sym
ln /newfile /newfile-link
ln /pkg/README /readme-link
mkdir -p /srv/a/b && echo 1 > /srv/a/b/f && mv /srv/a /srv/moved
";

/// The files podman writes itself with per-container content (the
/// container id is in each); their presence and type are still compared.
const PER_CONTAINER: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/run/.containerenv"];

fn comparable(mut listing: Vec<String>) -> Vec<String> {
    for l in &mut listing {
        if let Some(p) = PER_CONTAINER
            .iter()
            .find(|p| l.starts_with(&format!("{p} ")))
        {
            *l = (*p).to_string();
        }
    }
    listing
}

/// `None` after a SKIP; else the turn of this test ([`podman_serial`]).
fn require_root_podman() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !fuse_available() || !podman_available() {
        return None;
    }
    if !is_root() {
        eprintln!("SKIP: podman tests need root to set up their storage and users");
        return None;
    }
    Some(podman_serial())
}

/// What podman shows of a container that ran `script` on the `multi`
/// image: `podman diff` (sorted), `podman export`, a run of its committed
/// image, and `podman export` of a container of that image.
struct Seen {
    diff: Vec<String>,
    export: Vec<String>,
    committed_run: String,
    committed: Vec<String>,
}

fn run_diff_and_commit(p: &Podman, script: &str) -> Seen {
    let fx = p.dir.path().join("multi.docker.tar");
    std::fs::copy(fixture("multi.docker.tar"), &fx).unwrap();
    std::fs::set_permissions(&fx, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    p.ok(&["load", "-q", "-i", fx.to_str().unwrap()]);
    p.ok(&[
        "run",
        "--name",
        "c",
        "--network",
        "none",
        "multi",
        "sh",
        "-c",
        script,
    ]);
    let mut diff: Vec<String> = p.ok(&["diff", "c"]).lines().map(String::from).collect();
    diff.sort();
    let export = comparable(p.export_listing("c"));
    p.ok(&["commit", "-q", "c", "committed"]);
    let committed_run = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "committed",
        "sh",
        "-c",
        "cat /etc/passwd /home/user/secret /srv/moved/b/f; ls /opt /pkg",
    ]);
    p.ok(&["create", "--name", "d", "--network", "none", "committed"]);
    let committed = comparable(p.export_listing("d"));
    Seen {
        diff,
        export,
        committed_run,
        committed,
    }
}

/// `podman run` of a script that changes every kind of entry, `podman
/// diff`, `podman export`, `podman commit` and a run of the committed
/// image: the same as on podman's kernel overlay driver, path by path
/// (and the diff as with fuse-overlayfs).
#[test]
fn podman_run_diff_and_commit_match_the_kernel_overlay_driver() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let fuse = run_diff_and_commit(&Podman::new(), SCRIPT);
    let kernel = run_diff_and_commit(&Podman::kernel(), SCRIPT);
    let fo = run_diff_and_commit(&Podman::fuse_overlayfs(), SCRIPT);
    assert!(
        fuse.diff.contains(&"D /etc/os-release".to_string()),
        "{:?}",
        fuse.diff
    );
    assert!(
        fuse.export.iter().any(|l| l.starts_with("/opt/data2/new ")),
        "{:#?}",
        fuse.export
    );
    // With a mount program podman diffs naively (the merged trees of the
    // container and its image compared), without one it reads overlay's
    // upper directory: a re-created directory is "C" in one and "D" in the
    // other. The oracle of the naive diff is fuse-overlayfs.
    assert_eq!(fuse.diff, fo.diff, "podman diff, against fuse-overlayfs");
    let mut differ: Vec<_> = fuse
        .diff
        .iter()
        .filter(|l| !kernel.diff.contains(l))
        .collect();
    differ.extend(kernel.diff.iter().filter(|l| !fuse.diff.contains(l)));
    assert_eq!(
        differ,
        ["C /home/user", "D /home/user"],
        "podman diff, against the kernel driver"
    );
    assert_eq!(fuse.export, kernel.export, "podman export of the container");
    assert_eq!(
        fuse.committed_run, kernel.committed_run,
        "a run of the committed image"
    );
    assert_eq!(
        fuse.committed, kernel.committed,
        "podman export of the committed image"
    );
    assert_eq!(
        fuse.export, fo.export,
        "podman export, against fuse-overlayfs"
    );
}

/// The same rootless: podman as an unprivileged user with subordinate
/// ids runs layerfs inside its user namespace (uid 0 there, but no
/// `trusted.*` xattrs, no /var/lib), against kernel overlayfs in the user
/// namespace, and its diff against fuse-overlayfs run the same way. No
/// mknod: a user namespace may not make devices.
#[test]
fn rootless_podman_run_diff_and_commit_match_the_kernel_overlay_driver() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let script = SCRIPT.replace("mknod /null2 c 1 3\n", "");
    let p = Podman::rootless(None);
    let info = p.ok(&[
        "info",
        "--format",
        "{{.Host.Security.Rootless}} {{.Store.GraphOptions}}",
    ]);
    assert!(
        info.starts_with("true ") && info.contains("/layerfs"),
        "{info}"
    );
    let fuse = run_diff_and_commit(&p, &script);
    let kernel = run_diff_and_commit(&Podman::rootless(Some(Oracle::Kernel)), &script);
    let fo = run_diff_and_commit(&Podman::rootless(Some(Oracle::FuseOverlayfs)), &script);
    assert!(
        fuse.diff.contains(&"A /opt/data2/new".to_string()),
        "{:?}",
        fuse.diff
    );
    assert!(
        fuse.committed_run.contains("again"),
        "{}",
        fuse.committed_run
    );
    assert_eq!(fuse.diff, fo.diff, "podman diff, against fuse-overlayfs");
    assert_eq!(fuse.export, kernel.export, "podman export of the container");
    assert_eq!(
        fuse.committed_run, kernel.committed_run,
        "a run of the committed image"
    );
    assert_eq!(
        fuse.committed, kernel.committed,
        "podman export of the committed image"
    );
}

/// A static program that prints its real and effective uid, built with
/// the machine's gcc, to check setuid through the mount.
fn euid_program(dir: &Path) {
    std::fs::write(
        dir.join("euid.c"),
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { printf(\"%d %d\\n\", (int)getuid(), (int)geteuid()); return 0; }\n",
    )
    .unwrap();
    run_ok(
        Command::new("gcc")
            .args(["-static", "-O", "-o"])
            .arg(dir.join("euid"))
            .arg(dir.join("euid.c")),
    );
}

/// `podman build` (buildah inside podman) of several RUN steps that
/// rename, delete and re-create directories across layers, then a run of
/// the image as `--user 1000:1000` in which a setuid-root program must get
/// euid 0 (the mount is not nosuid), and `podman export` of it.
fn build_and_run(p: &Podman, extra_run: &[&str]) -> (String, Vec<String>) {
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    euid_program(&ctx);
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM docker.io/library/multi:latest\n\
         COPY euid /euid\n\
         RUN chmod 4755 /euid && mkdir -p /srv/a/b && echo 1 > /srv/a/b/f\n\
         RUN mv /srv/a /srv/moved && mv /opt/data /opt/gone && mv /usr/share/doc /doc\n\
         RUN rm -rf /srv/moved && mkdir -p /srv/moved && echo 2 > /srv/moved/g && rm -r /doc/pkg/a\n\
         RUN chown -R 7:8 /srv && mkfifo /srv/fifo && echo x >> /opt/gone/new\n",
    )
    .unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&ctx));
    let fx = p.dir.path().join("multi.docker.tar");
    std::fs::copy(fixture("multi.docker.tar"), &fx).unwrap();
    std::fs::set_permissions(&fx, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    p.ok(&["load", "-q", "-i", fx.to_str().unwrap()]);
    p.ok(&[
        "build",
        "--pull=never",
        "--network",
        "none",
        "-q",
        "-t",
        "built",
        ctx.to_str().unwrap(),
    ]);
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(extra_run);
    args.extend_from_slice(&[
        "built",
        "sh",
        "-c",
        "/euid; id -u; cat /srv/moved/g /opt/gone/new; echo u > /tmp/by-user; \
         stat -c '%n %u %g %a %F %s' /tmp/*",
    ]);
    let user = p.ok(&args);
    p.ok(&["create", "--name", "d", "--network", "none", "built"]);
    (user, comparable(p.export_listing("d")))
}

/// Root: `podman build` and a setuid run by uid 1000, against the kernel
/// overlay driver.
#[test]
fn podman_build_and_setuid_runs_match_the_kernel_overlay_driver() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let fuse = build_and_run(&Podman::new(), &["--user", "1000:1000"]);
    let kernel = build_and_run(&Podman::kernel(), &["--user", "1000:1000"]);
    assert!(
        fuse.0.starts_with("1000 0\n1000\n"),
        "setuid run as 1000: {}",
        fuse.0
    );
    assert_eq!(fuse.0, kernel.0, "runs as --user 1000:1000");
    assert_eq!(fuse.1, kernel.1, "podman export of the built image");
}

/// Rootless: the same build and setuid run, and a run with
/// `--userns=keep-id` (the user's own uid inside, a multi-range id
/// mapping), against kernel overlayfs in the user namespace.
/// (fuse-overlayfs 1.10 is no oracle here: rootless, its build keeps
/// `/srv/moved/b/f`, which a later step deleted with its directory.)
#[test]
fn rootless_podman_build_and_keep_id_runs_match_the_kernel_overlay_driver() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let mut seen = Vec::new();
    for oracle in [None, Some(Oracle::Kernel)] {
        let p = Podman::rootless(oracle);
        let built = build_and_run(&p, &["--user", "1000:1000"]);
        let keep_id = p.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--userns=keep-id",
            "built",
            "sh",
            "-c",
            "id -u; echo k > /tmp/k; stat -c '%n %u %g %a %F %s' /srv/* /home/user /tmp/k /euid",
        ]);
        seen.push((built, keep_id));
    }
    let (fuse, fo) = (&seen[0], &seen[1]);
    assert!(
        fuse.0 .0.starts_with("1000 0\n1000\n"),
        "setuid run as 1000: {}",
        fuse.0 .0
    );
    assert_eq!(fuse.0 .0, fo.0 .0, "runs as --user 1000:1000");
    assert_eq!(fuse.0 .1, fo.0 .1, "podman export of the built image");
    assert_eq!(fuse.1, fo.1, "a --userns=keep-id run");
}

/// buildah itself: `buildah from`, `buildah run` of the script, `buildah
/// commit`, and `podman export` of a container of the committed image,
/// root and rootless, against the kernel overlay driver.
#[test]
fn buildah_run_and_commit_match_the_kernel_overlay_driver() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let rootless_script = SCRIPT.replace("mknod /null2 c 1 3\n", "");
    let mut seen = Vec::new();
    for (p, script) in [
        (Podman::new(), SCRIPT),
        (Podman::kernel(), SCRIPT),
        (Podman::rootless(None), rootless_script.as_str()),
        (
            Podman::rootless(Some(Oracle::Kernel)),
            rootless_script.as_str(),
        ),
    ] {
        let fx = p.dir.path().join("multi.docker.tar");
        std::fs::copy(fixture("multi.docker.tar"), &fx).unwrap();
        std::fs::set_permissions(&fx, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        p.ok(&["load", "-q", "-i", fx.to_str().unwrap()]);
        let c = p.buildah_ok(&["from", "--pull-never", "docker.io/library/multi:latest"]);
        let c = c.trim();
        p.buildah_ok(&[
            "run",
            "--runtime",
            "runc",
            "--network",
            "none",
            c,
            "sh",
            "-c",
            script,
        ]);
        p.buildah_ok(&["commit", "-q", c, "bcommitted"]);
        p.ok(&["create", "--name", "d", "--network", "none", "bcommitted"]);
        seen.push(comparable(p.export_listing("d")));
    }
    assert!(
        seen[0].iter().any(|l| l.starts_with("/opt/data2/new ")),
        "{:#?}",
        seen[0]
    );
    assert_eq!(
        seen[0], seen[1],
        "root: buildah commit on layerfs and on kernel overlayfs"
    );
    assert_eq!(
        seen[2], seen[3],
        "rootless: buildah commit on layerfs and on kernel overlayfs"
    );
}

/// A container started and stopped 50 times back to back (podman mounts
/// and unmounts its storage each time): every start sees what the last
/// one wrote.
#[test]
fn a_container_started_fifty_times_keeps_its_changes() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let p = Podman::new();
    p.ok(&[
        "load",
        "-q",
        "-i",
        fixture("multi.docker.tar").to_str().unwrap(),
    ]);
    p.ok(&[
        "create",
        "--name",
        "c",
        "--network",
        "none",
        "multi",
        "sh",
        "-c",
        "echo x >> /count; wc -l < /count",
    ]);
    for i in 1..=50 {
        let out = p.run(&["start", "-a", "c"]);
        assert!(
            out.status.success(),
            "start {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            i.to_string(),
            "start {i}"
        );
    }
}

/// What a container does to Debian minbase: writes, appends, deletes a
/// lower tree, purges a package (dpkg rewrites its database by renames
/// and deletes the package's files), renames lower directories (one of
/// them holding those deletions), adds a user (shadow's lock files and
/// renames over /etc/passwd, a home copied from /etc/skel; dated by
/// SOURCE_DATE_EPOCH), `sed -i`, re-creates a deleted directory, chowns,
/// chmods one name of a lower hard-link pair, makes a fifo and links.
const MINBASE_SCRIPT: &str = "set -e
export SOURCE_DATE_EPOCH=1700000000
echo new > /newfile
echo more >> /etc/bash.bashrc
seq 1 100000 > /var/big
rm /etc/issue
rm -r /usr/share/locale
dpkg --purge apt
mv /usr/share/doc /usr/share/doc.moved
mv /etc/apt /etc/apt.moved
useradd -m -u 1234 -s /bin/bash alice
echo hi > /home/alice/note
sed -i 's/^alice:/alice2:/' /etc/group
rm -rf /var/cache/debconf && mkdir /var/cache/debconf && echo x > /var/cache/debconf/new
chown -R 1234:1234 /usr/share/doc.moved/bash
chown 5:6 /etc/motd
chmod 600 /etc/debian_version
chmod 700 /usr/bin/perl5.36.0
mkfifo /var/fifo
ln -s ../newfile /usr/sym
ln /usr/bin/dash /dash-link
dpkg -l | tail -n +6 | wc -l
ls -l /usr/share/doc.moved | wc -l
";

/// See [`minbase_run`].
const MINBASE_VOLATILE: [&str; 2] = ["/var/log/dpkg.log", "/var/cache/ldconfig/aux-cache"];

/// `podman import` of the minbase tar, `dpkg -l` in a container of it,
/// a run of [`MINBASE_SCRIPT`] and `podman export` of that container.
fn minbase_run(p: &Podman, tar: &Path) -> (String, String, Vec<String>) {
    p.ok(&["import", "-q", tar.to_str().unwrap(), "minbase"]);
    let dpkg = p.ok(&["run", "--rm", "--network", "none", "minbase", "dpkg", "-l"]);
    let ran = p.ok(&[
        "run",
        "--name",
        "c",
        "--network",
        "none",
        "minbase",
        "sh",
        "-c",
        MINBASE_SCRIPT,
    ]);
    let mut export = comparable(p.export_listing("c"));
    // Files whose content is dated or holds inode numbers (dpkg's log,
    // ldconfig's cache of the libraries' inodes and ctimes): all but their
    // content is compared.
    for l in &mut export {
        if MINBASE_VOLATILE
            .iter()
            .any(|p| l.starts_with(&format!("{p} ")))
        {
            let at = l.find(" sha256=").unwrap();
            let end = l[at + 1..].find(' ').map_or(l.len(), |e| at + 1 + e);
            l.replace_range(at..end, " sha256=(volatile)");
        }
    }
    (dpkg, ran, export)
}

/// A real distribution: Debian 12 minbase (debootstrap) imported into
/// podman, `dpkg -l` and a script of package, user and file changes run
/// on it, root and rootless; each `dpkg -l`, the script's output and
/// `podman export` of its container equal the same on the kernel overlay
/// driver, path by path.
#[test]
fn debian_minbase_runs_match_the_kernel_overlay_driver() {
    let Some(_turn) = require_root_podman() else {
        return;
    };
    let Some(tar) = debian_minbase_tar() else {
        return;
    };
    for (what, fuse, kernel) in [
        ("root", Podman::new(), Podman::kernel()),
        (
            "rootless",
            Podman::rootless(None),
            Podman::rootless(Some(Oracle::Kernel)),
        ),
    ] {
        let fuse = minbase_run(&fuse, &tar);
        let kernel = minbase_run(&kernel, &tar);
        for pkg in ["dpkg", "bash", "coreutils", "apt"] {
            assert!(
                fuse.0
                    .lines()
                    .any(|l| l.starts_with(&format!("ii  {pkg} "))),
                "{what}: dpkg -l lists no {pkg}:\n{}",
                fuse.0
            );
        }
        assert!(
            fuse.2
                .iter()
                .any(|l| l.starts_with("/usr/share/doc.moved/bash ")),
            "{what}: {:#?}",
            fuse.2
        );
        assert_eq!(fuse.0, kernel.0, "{what}: dpkg -l");
        assert_eq!(fuse.1, kernel.1, "{what}: the script's output");
        let (f, k): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
            (fuse.2.iter().collect(), kernel.2.iter().collect());
        let differ: Vec<String> = f
            .difference(&k)
            .map(|l| format!("layerfs: {l}"))
            .chain(k.difference(&f).map(|l| format!("kernel:  {l}")))
            .collect();
        // KNOWN DIFFERENCE (reported with issue 12, not a test artefact):
        // `chmod 700 /usr/bin/perl5.36.0`, one name of a hard-link pair of
        // the image. layerfs copies a hard-linked lower file up as one inode
        // for all its names (ARCHITECTURE.md, copy-up step 4: the other
        // names are link()ed to the copy), so both names turn 700; podman's
        // kernel overlay mounts without `index=on` and splits the pair at
        // copy-up: /usr/bin/perl stays 755, no longer a hard link. Anything
        // else differing fails the test.
        let paths: std::collections::BTreeSet<&str> = f
            .symmetric_difference(&k)
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let known = ["/usr/bin/perl", "/usr/bin/perl5.36.0"];
        assert!(
            paths == known.into_iter().collect()
                && f.iter()
                    .filter(|l| known.iter().any(|p| l.starts_with(&format!("{p} "))))
                    .all(|l| l.contains(" 700 ")
                        && l.ends_with(" links=/usr/bin/perl,/usr/bin/perl5.36.0"))
                && k.iter()
                    .any(|l| l.starts_with("/usr/bin/perl Regular 755 ")),
            "{what}: podman export of the container differs from the kernel overlay driver's \
             (other than the known split of a copied-up hard-link pair):\n{}",
            differ.join("\n")
        );
    }
}
