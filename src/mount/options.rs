//! Pure: the branch options of `layerfs mount-branches`, in AUFS' syntax
//! (`br:/rw=rw:/ro1=ro+wh:...` or `br=...`, as Docker's `MountAUFS` passes
//! them) or overlay's (`lowerdir=A:B:C,upperdir=U,workdir=W`): [`parse`]
//! reads them, [`build`] writes them back.
//!
//! AUFS branches are listed top first. A branch's permission is the suffix
//! after its last `=`: `rw` (and `rw+...` attributes) is writable; `ro`,
//! `rr` and their `+wh`/`+nolwh` forms are read-only. Without a suffix the
//! first branch is `rw` and the others `ro`, as in AUFS. layerfs writes
//! to one branch, which must be the first (top) one; a second `rw` branch is
//! refused. AUFS-only tuning options (`xino=`, `dio`, `dirperm1`, `udba=`,
//! ...) are accepted and ignored.
//!
//! Overlay's `lowerdir` is top first too (`\:` escapes a colon in a path).
//! `upperdir=U` needs `workdir=W`: U is then written in kernel overlayfs'
//! format (0:0 device whiteouts, `trusted.overlay.opaque` xattrs; root
//! only), W holds layerfs' lock and temporaries, so kernel overlayfs can
//! mount the same U afterwards.
//! Overlay-only tuning options (`index=`, `redirect_dir=`, `metacopy=`,
//! `xino=`, `userxattr`) are accepted and ignored; `volatile` is passed on
//! (the daemon's own switch, as for `mount`).

use std::path::{Path, PathBuf};

/// Branches of one mount, and the options left for FUSE.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Branches {
    /// The writable branch, if any: AUFS format, or overlay format when
    /// `work` is given.
    pub upper: Option<PathBuf>,
    /// Overlay's `workdir` (only with an overlay-format `upper`).
    pub work: Option<PathBuf>,
    /// Read-only branches, top first.
    pub lowers: Vec<PathBuf>,
    /// Options that are not about branches (allow_other, ro, ...).
    pub rest: Vec<String>,
    /// fuse-overlayfs' own tuning options, accepted for drop-in use and
    /// ignored (the caller warns, as fuse-overlayfs does for what it does
    /// not know: "unknown argument ignored").
    pub ignored: Vec<String>,
}

/// fuse-overlayfs' options that mean nothing to layerfs (its `fsync=` is
/// the daemon's own switch, and passes on), and SELinux labels, which a
/// FUSE mount on a kernel without SELinux refuses.
fn fuse_overlayfs_only(opt: &str) -> bool {
    let key = opt.split_once('=').map_or(opt, |(k, _)| k);
    matches!(
        key,
        "noacl"
            | "static_nlink"
            | "debug"
            | "threaded"
            | "timeout"
            | "writeback"
            | "xattr_permissions"
            | "max_idle_threads"
            | "plugins"
            | "fast_ino"
            | "redirect_dir_xattr"
            | "context"
            | "fscontext"
            | "defcontext"
            | "rootcontext"
    )
}

/// Options of AUFS and overlayfs that tune the kernel implementations and
/// mean nothing to layerfs.
fn ignored(opt: &str) -> bool {
    let key = opt.split_once('=').map_or(opt, |(k, _)| k);
    matches!(
        key,
        "xino"
            | "noxino"
            | "trunc_xino"
            | "notrunc_xino"
            | "dio"
            | "nodio"
            | "dirperm1"
            | "nodirperm1"
            | "udba"
            | "plink"
            | "noplink"
            | "shwh"
            | "noshwh"
            | "index"
            | "redirect_dir"
            | "metacopy"
            | "userxattr"
            | "nfs_export"
    )
}

/// Splits a colon-separated list, honouring `\:` (and `\\`) escapes.
fn split_colons(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// Is an AUFS branch permission writable? `None` if it is not one.
fn aufs_perm(p: &str) -> Option<bool> {
    let base = p.split('+').next().unwrap_or("");
    match base {
        "rw" => Some(true),
        "ro" | "rr" => Some(false),
        _ => None,
    }
}

/// Parses `-o` options (already split at commas).
pub fn parse(options: &[String]) -> Result<Branches, String> {
    let mut br: Option<&str> = None;
    let (mut lower, mut upper, mut work) = (None, None, None);
    let mut rest = Vec::new();
    let mut skipped = Vec::new();
    for o in options {
        if let Some(v) = o.strip_prefix("br:").or_else(|| o.strip_prefix("br=")) {
            if br.replace(v).is_some() {
                return Err("br given twice".into());
            }
        } else if let Some(v) = o.strip_prefix("lowerdir=") {
            lower = Some(v);
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(v);
        } else if let Some(v) = o.strip_prefix("workdir=") {
            work = Some(v);
        } else if ignored(o) {
            continue;
        } else if fuse_overlayfs_only(o) {
            skipped.push(o.clone());
        } else if !o.is_empty() {
            rest.push(o.clone());
        }
    }
    let mut b = Branches {
        rest,
        ignored: skipped,
        ..Branches::default()
    };
    match (br, lower) {
        (Some(_), Some(_)) => Err("give either br= (AUFS) or lowerdir= (overlay), not both".into()),
        (None, None) => Err(
            "no branches: give -o br=DIR=rw:DIR=ro+wh:... (AUFS) or -o lowerdir=A:B (overlay)"
                .into(),
        ),
        (Some(list), None) => {
            if upper.is_some() || work.is_some() {
                return Err("upperdir=/workdir= are overlay options; with br= the rw branch is the one marked =rw".into());
            }
            for (i, spec) in split_colons(list).into_iter().enumerate() {
                if spec.is_empty() {
                    return Err("empty branch in br=".into());
                }
                let (path, rw) = match spec.rsplit_once('=') {
                    Some((p, perm)) if !p.is_empty() => match aufs_perm(perm) {
                        Some(rw) => (p.to_string(), rw),
                        None => {
                            return Err(format!(
                                "branch {spec:?}: unknown permission {perm:?} (rw, ro, ro+wh, rr)"
                            ))
                        }
                    },
                    _ => (spec.clone(), i == 0),
                };
                if rw {
                    if i != 0 {
                        return Err(format!(
                            "branch {path:?} is rw but not the first: layerfs writes only to the top branch"
                        ));
                    }
                    b.upper = Some(PathBuf::from(path));
                } else {
                    b.lowers.push(PathBuf::from(path));
                }
            }
            Ok(b)
        }
        (None, Some(list)) => {
            match (upper, work) {
                (Some(u), Some(w)) if !u.is_empty() && !w.is_empty() => {
                    b.upper = Some(PathBuf::from(u));
                    b.work = Some(PathBuf::from(w));
                }
                (Some(_), _) => {
                    return Err(
                        "upperdir= needs workdir= (an empty directory on the same filesystem)"
                            .into(),
                    )
                }
                (None, Some(_)) => return Err("workdir= needs upperdir=".into()),
                (None, None) => {}
            }
            for p in split_colons(list) {
                if p.is_empty() {
                    return Err("empty directory in lowerdir=".into());
                }
                b.lowers.push(PathBuf::from(p));
            }
            Ok(b)
        }
    }
}

/// Escapes a path for a colon-separated list ([`split_colons`] undoes it).
fn escape_colons(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

/// The inverse of [`parse`]: `-o` options that [`parse`] turns back into
/// `b` (the branches first, then `b.rest`). An overlay-format upper
/// (`upper` and `work`) is spelled `lowerdir=`/`upperdir=`/`workdir=`,
/// anything else AUFS' `br=` (the upper `=rw`, the lowers `=ro+wh`);
/// colons in lower and AUFS paths are escaped. `mount-branches` hands its
/// resolved branches to the daemon this way.
pub fn build(b: &Branches) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(u), Some(w)) = (&b.upper, &b.work) {
        // Overlay syntax: the upper branch is overlay-format.
        let l: Vec<String> = b.lowers.iter().map(|l| escape_colons(l)).collect();
        out.push(format!("lowerdir={}", l.join(":")));
        out.push(format!("upperdir={}", u.display()));
        out.push(format!("workdir={}", w.display()));
    } else {
        let mut spec: Vec<String> = Vec::new();
        if let Some(u) = &b.upper {
            spec.push(format!("{}=rw", escape_colons(u)));
        }
        spec.extend(
            b.lowers
                .iter()
                .map(|l| format!("{}=ro+wh", escape_colons(l))),
        );
        out.push(format!("br={}", spec.join(":")));
    }
    out.extend(b.rest.iter().cloned());
    out
}

/// Options a mount(8) or fstab line carries that mean nothing to layerfs.
fn mount_only(opt: &str) -> bool {
    matches!(
        opt,
        "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users" | "nouser"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

/// The mount-helper and mount-program calling conventions, turned into
/// `mount-branches MOUNTPOINT -o OPTS`:
/// - `layerfs SOURCE MOUNTPOINT -o OPTS`, what fuse3's `mount.fuse3` runs
///   for `mount -t fuse.layerfs SOURCE MNT -o OPTS` and for an fstab line
///   of type `fuse.layerfs` (SOURCE is ignored: `none`, or anything);
/// - `layerfs -o OPTS MOUNTPOINT`, what containers-storage runs for its
///   `mount_program` (fuse-overlayfs' convention: `lowerdir=` top first,
///   `upperdir=`, `workdir=`, and the caller's other options).
///
/// Both follow what the caller asks, as kernel overlayfs does, not the
/// safe defaults of `layerfs mount`: as root (`root`) the mount is for
/// every user (`allow_other`) and honours setuid bits and devices (`suid`,
/// `dev`) unless the options say `nosuid` / `nodev`. `rw` is dropped when
/// no branch is writable, as mount(8) adds it by default. `None` when
/// `args` (without the program name) is neither shape or names no
/// branches.
pub fn helper_args(args: &[String], root: bool) -> Option<Vec<String>> {
    let (mut pos, mut opts) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-o" {
            opts.extend(it.next()?.split(',').map(str::to_string));
        } else if let Some(o) = a.strip_prefix("-o") {
            opts.extend(o.split(',').map(str::to_string));
        } else if a.starts_with('-') {
            // -n, -s, -v, -f of mount(8): nothing for us to do.
            continue;
        } else {
            pos.push(a.clone());
        }
    }
    let mountpoint = match <[String; 2]>::try_from(pos) {
        Ok([_source, mountpoint]) => mountpoint,
        Err(pos) => <[String; 1]>::try_from(pos).ok()?.into_iter().next()?,
    };
    opts.retain(|o| !mount_only(o) && !o.is_empty());
    let parsed = parse(&opts).ok()?;
    if parsed.upper.is_none() {
        opts.retain(|o| o != "rw");
    }
    if root {
        for (want, unless) in [
            ("allow_other", "allow_other"),
            ("suid", "nosuid"),
            ("dev", "nodev"),
        ] {
            if !opts.iter().any(|x| x == want || x == unless) {
                opts.push(want.to_string());
            }
        }
    }
    Some(vec![
        "mount-branches".into(),
        mountpoint,
        "-o".into(),
        opts.join(","),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }
    fn pb(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn aufs_syntax_as_docker_passes_it() {
        let b = parse(&opts(
            "br:/rw=rw:/ro1=ro+wh:/ro2=ro+wh,xino=/dev/shm/aufs.xino",
        ))
        .unwrap();
        assert_eq!(b.upper, Some(PathBuf::from("/rw")));
        assert_eq!(b.lowers, pb(&["/ro1", "/ro2"]));
        assert!(b.rest.is_empty());
        let b = parse(&opts("br=/a=rw:/b=ro,allow_other,dio")).unwrap();
        assert_eq!(b.upper, Some(PathBuf::from("/a")));
        assert_eq!(b.rest, vec!["allow_other".to_string()]);
    }

    #[test]
    fn aufs_defaults_and_read_only_stacks() {
        // No suffix: the first branch is rw, the others ro.
        let b = parse(&opts("br=/a:/b:/c=rr")).unwrap();
        assert_eq!(b.upper, Some(PathBuf::from("/a")));
        assert_eq!(b.lowers, pb(&["/b", "/c"]));
        let b = parse(&opts("br=/a=ro:/b=ro+wh")).unwrap();
        assert_eq!(b.upper, None);
        assert_eq!(b.lowers, pb(&["/a", "/b"]));
        // '=' inside a path: only the last one is the permission.
        let b = parse(&opts("br=/x=y=ro")).unwrap();
        assert_eq!(b.lowers, pb(&["/x=y"]));
    }

    #[test]
    fn aufs_errors() {
        assert!(parse(&opts("br=/a=ro:/b=rw"))
            .unwrap_err()
            .contains("not the first"));
        assert!(parse(&opts("br=/a=rw:/b=rw"))
            .unwrap_err()
            .contains("not the first"));
        assert!(parse(&opts("br=/a=xx"))
            .unwrap_err()
            .contains("unknown permission"));
        assert!(parse(&opts("br=/a=rw::/b")).unwrap_err().contains("empty"));
        assert!(parse(&opts("br=/a,lowerdir=/b"))
            .unwrap_err()
            .contains("not both"));
        assert!(parse(&opts("allow_other"))
            .unwrap_err()
            .contains("no branches"));
        assert!(parse(&opts("br=/a,upperdir=/u")).is_err());
    }

    #[test]
    fn overlay_syntax() {
        let b = parse(&opts(r"lowerdir=/l1:/l\:2:/l3,index=off,ro")).unwrap();
        assert_eq!(b.upper, None);
        assert_eq!(b.lowers, pb(&["/l1", "/l:2", "/l3"]));
        assert_eq!(b.rest, vec!["ro".to_string()]);
        let b = parse(&opts("lowerdir=/l,upperdir=/u,workdir=/w")).unwrap();
        assert_eq!(b.upper, Some(PathBuf::from("/u")));
        assert_eq!(b.work, Some(PathBuf::from("/w")));
        assert_eq!(b.lowers, pb(&["/l"]));
        let e = parse(&opts("lowerdir=/l,upperdir=/u")).unwrap_err();
        assert!(e.contains("needs workdir"), "{e}");
        assert!(parse(&opts("lowerdir=/l,workdir=/w")).is_err());
        assert!(parse(&opts("lowerdir=/a::/b")).is_err());
    }

    #[test]
    fn build_is_the_inverse_of_parse() {
        let cases = [
            // AUFS: rw branch on top, read-only ones below.
            Branches {
                upper: Some("/rw".into()),
                lowers: pb(&["/ro1", "/ro2"]),
                rest: vec!["allow_other".into(), "uidmapping=0:1000:1".into()],
                ..Branches::default()
            },
            // AUFS, read-only; colons, backslashes and '=' in paths.
            Branches {
                lowers: pb(&[r"/a:b", r"/c\d", "/e=rw", "/f"]),
                ..Branches::default()
            },
            // AUFS, a rw branch alone.
            Branches {
                upper: Some("/u:x".into()),
                ..Branches::default()
            },
            // Overlay: lowerdir= (escaped), upperdir=, workdir=.
            Branches {
                upper: Some("/up:per".into()),
                work: Some("/work".into()),
                lowers: pb(&["/l1", r"/l:2", r"/l\3"]),
                rest: vec!["ro".into(), "volatile".into()],
                ignored: Vec::new(),
            },
        ];
        for b in cases {
            let o = build(&b);
            assert_eq!(parse(&o).as_ref(), Ok(&b), "{o:?}");
        }
        let b = Branches {
            upper: Some("/u".into()),
            work: Some("/w".into()),
            lowers: pb(&["/a", "/b"]),
            ..Branches::default()
        };
        assert_eq!(
            build(&b),
            vec!["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]
        );
    }

    #[test]
    fn mount_helper_convention() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            helper_args(
                &a(&["none", "/mnt", "-o", "rw,br=/u=rw:/l=ro,noauto"]),
                false
            ),
            Some(a(&["mount-branches", "/mnt", "-o", "rw,br=/u=rw:/l=ro"]))
        );
        assert_eq!(
            helper_args(
                &a(&["none", "/mnt", "-n", "-orw,lowerdir=/a:/b,allow_other"]),
                false
            ),
            Some(a(&[
                "mount-branches",
                "/mnt",
                "-o",
                "lowerdir=/a:/b,allow_other"
            ]))
        );
        // Not the helper shape: left to the subcommand parser.
        assert_eq!(helper_args(&a(&["mount", "img", "/mnt"]), false), None);
        assert_eq!(
            helper_args(&a(&["none", "/mnt", "-o", "allow_other"]), false),
            None
        );
        assert_eq!(helper_args(&a(&["images"]), false), None);
        // containers-storage's mount program: `-o OPTS TARGET`, empty
        // options, volatile, its own mountopt; as root, every user may
        // use the mount and setuid bits work unless the caller says not.
        let cs = "lowerdir=/g/l/A:/g/l/B,upperdir=/g/c/diff,workdir=/g/c/work,,volatile,nodev";
        assert_eq!(
            helper_args(&a(&["-o", cs, "/g/c/merged"]), true),
            Some(a(&[
                "mount-branches",
                "/g/c/merged",
                "-o",
                "lowerdir=/g/l/A:/g/l/B,upperdir=/g/c/diff,workdir=/g/c/work,volatile,nodev,allow_other,suid"
            ]))
        );
        assert_eq!(
            helper_args(&a(&["-o", "lowerdir=/a", "/m"]), false),
            Some(a(&["mount-branches", "/m", "-o", "lowerdir=/a"])),
            "not root: nothing added"
        );
        assert_eq!(
            helper_args(&a(&["-o", "lowerdir=/a,nosuid", "/m"]), true),
            Some(a(&[
                "mount-branches",
                "/m",
                "-o",
                "lowerdir=/a,nosuid,allow_other,dev"
            ]))
        );
    }

    #[test]
    fn fuse_overlayfs_options_are_set_aside() {
        let b = parse(&opts(
            "lowerdir=/a,noacl,threaded=1,fsync=0,xattr_permissions=2,context=\"x\",allow_other",
        ))
        .unwrap();
        assert_eq!(b.rest, opts("fsync=0,allow_other"));
        assert_eq!(
            b.ignored,
            opts("noacl,threaded=1,xattr_permissions=2,context=\"x\"")
        );
    }
}
