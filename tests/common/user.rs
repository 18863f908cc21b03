//! The unprivileged user of the rootless tests.

use std::process::Command;

use super::is_root;

/// The unprivileged user of the rootless tests (`layerfs-test`), created
/// if missing, and its uid; `/dev/fuse` is made 0666 as Debian's udev rule
/// does (machines without udev leave it 0600). `None`, after a SKIP
/// message, when not running as root (only root can set this up).
pub fn unprivileged_user() -> Option<(&'static str, u32)> {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        eprintln!("SKIP: needs root to create the unprivileged test user");
        return None;
    }
    if std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777 != 0o666 {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let user = "layerfs-test";
    if Command::new("id").arg(user).output().unwrap().status.code() != Some(0) {
        let st = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", user])
            .status()
            .unwrap();
        // Another test may have created it in the meantime.
        assert!(
            st.success() || Command::new("id").arg(user).status().unwrap().success(),
            "useradd"
        );
    }
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    let uid = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Some((user, uid))
}
