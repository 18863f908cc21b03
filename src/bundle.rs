//! Pure: an OCI runtime spec (`config.json` of a bundle) made from an image
//! config, shaped like `runc spec` (or `runc spec --rootless`): process
//! args = Entrypoint + Cmd, Env, WorkingDir, User (resolved against the
//! image's `/etc/passwd` and `/etc/group` by [`resolve_user`]), the
//! standard mounts, namespaces, masked and read-only paths.

use serde_json::{json, Value};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the spec needs besides the image config.
#[derive(Clone, Debug, Default)]
pub struct SpecOptions {
    /// Like `runc spec --rootless`: a user namespace mapping container
    /// root to `host_uid`/`host_gid` (size 1), no network namespace, /sys
    /// bind-mounted read-only, no cgroup resources.
    pub rootless: bool,
    /// Host uid that container root maps to in a rootless spec.
    pub host_uid: u32,
    /// Host gid that container root maps to in a rootless spec.
    pub host_gid: u32,
    /// The process user, already resolved (see [`resolve_user`]).
    pub user: User,
    /// Replaces Entrypoint + Cmd when given.
    pub args: Option<Vec<String>>,
    /// The container's hostname (`hostname` of the spec).
    pub hostname: String,
    /// The rootfs is mounted read-only (no rw branch).
    pub readonly: bool,
}

/// A resolved process user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The process uid, as the container sees it.
    pub uid: u32,
    /// The process primary gid.
    pub gid: u32,
    /// Supplementary gids (the groups of `/etc/group` that list the user).
    pub additional_gids: Vec<u32>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `config` object of an image config (Docker: also `container_config`
/// in old images, which we ignore: `config` is what runs).
fn image_cfg(image_config: &Value) -> &Value {
    image_config.get("config").unwrap_or(&Value::Null)
}

/// The mount options of a `--rootless` bundle's rootfs: `options` plus
/// `uidmapping=0:UID:1,gidmapping=0:GID:1` (the image's root shown as the
/// host user the spec maps container root to), unless `options` already
/// say how owners are shown (`uidmapping=`, `gidmapping=`, `squash_to_*`).
pub fn rootless_mount_options(options: &mut Vec<String>, host_uid: u32, host_gid: u32) {
    let owner_opt = |o: &String| {
        o.starts_with("uidmapping=") || o.starts_with("gidmapping=") || o.starts_with("squash_to_")
    };
    if !options.iter().any(owner_opt) {
        options.push(format!("uidmapping=0:{host_uid}:1"));
        options.push(format!("gidmapping=0:{host_gid}:1"));
    }
}

/// The `User` field of an image config ("" if none).
pub fn image_user(image_config: &Value) -> String {
    image_cfg(image_config)
        .get("User")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Resolves an image's `User` (`""`, `user`, `uid`, `user:group`,
/// `uid:gid`, ...) against the image's `/etc/passwd` and `/etc/group`
/// (either may be empty): numeric ids are used as they are; a name must be
/// found. Without a group, the user's primary group from passwd (0 for a
/// numeric uid passwd does not list), plus the groups of `/etc/group` that
/// list the user by name.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let gr: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let u = if u.is_empty() { "0" } else { u };
    let (uid, name, primary) = if let Ok(n) = u.parse::<u32>() {
        match pw.iter().find(|f| f[2].parse() == Ok(n)) {
            Some(f) => (n, Some(f[0]), f[3].parse().unwrap_or(0)),
            None => (n, None, 0),
        }
    } else {
        let f = pw
            .iter()
            .find(|f| f[0] == u)
            .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?;
        let uid = f[2]
            .parse()
            .map_err(|_| format!("/etc/passwd: bad uid for {u:?}"))?;
        (uid, Some(f[0]), f[3].parse().unwrap_or(0))
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (name, g) {
        for f in &gr {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if id != gid && !additional_gids.contains(&id) {
                        additional_gids.push(id);
                    }
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The OCI runtime spec for `image_config` (the image config JSON).
pub fn spec(image_config: &Value, o: &SpecOptions) -> Value {
    let cfg = image_cfg(image_config);
    let args = o.args.clone().unwrap_or_else(|| {
        let mut a = strings(cfg.get("Entrypoint"));
        a.extend(strings(cfg.get("Cmd")));
        if a.is_empty() {
            a.push("sh".into());
        }
        a
    });
    let mut env = strings(cfg.get("Env"));
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    let cwd = cfg
        .get("WorkingDir")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut user = json!({"uid": o.user.uid, "gid": o.user.gid});
    if !o.user.additional_gids.is_empty() {
        user["additionalGids"] = json!(o.user.additional_gids);
    }
    let mut devpts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if !o.rootless {
        devpts.push("gid=5");
    }
    let sys = if o.rootless {
        json!({"destination": "/sys", "type": "none", "source": "/sys",
               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    let mounts = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        sys,
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut linux = json!({
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
            "/proc/sysrq-trigger"],
    });
    if o.rootless {
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": o.host_uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": o.host_gid, "size": 1}]);
    } else {
        namespaces.insert(3, json!({"type": "network"}));
        linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    }
    linux["namespaces"] = json!(namespaces);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": user,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": o.readonly},
        "hostname": o.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\ndaemon:x:1:\nappgrp:x:1001:\nwheel:x:10:app,root\nvideo:x:44:app\n";

    #[test]
    fn rootless_mount_options_map_root_unless_owners_are_given() {
        let mut o = vec!["allow_other".to_string()];
        rootless_mount_options(&mut o, 1000, 1001);
        assert_eq!(
            o,
            ["allow_other", "uidmapping=0:1000:1", "gidmapping=0:1001:1"]
        );
        for given in ["squash_to_uid=5", "uidmapping=0:5:1", "gidmapping=0:5:1"] {
            let mut o = vec![given.to_string()];
            rootless_mount_options(&mut o, 1000, 1001);
            assert_eq!(o, [given]);
        }
    }

    fn image() -> Value {
        json!({"config": {
            "Entrypoint": ["/bin/tini", "--"],
            "Cmd": ["sh", "-c", "echo hi"],
            "Env": ["PATH=/bin", "A=b"],
            "WorkingDir": "/srv",
            "User": "app"
        }})
    }

    #[test]
    fn process_from_the_image_config() {
        let o = SpecOptions {
            hostname: "box".into(),
            user: User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10],
            },
            ..Default::default()
        };
        let s = spec(&image(), &o);
        assert_eq!(
            s["process"]["args"],
            json!(["/bin/tini", "--", "sh", "-c", "echo hi"])
        );
        assert_eq!(s["process"]["env"], json!(["PATH=/bin", "A=b"]));
        assert_eq!(s["process"]["cwd"], "/srv");
        assert_eq!(
            s["process"]["user"],
            json!({"uid": 1000, "gid": 1001, "additionalGids": [10]})
        );
        assert_eq!(s["hostname"], "box");
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "network", "mount"]);
        assert!(s["linux"].get("uidMappings").is_none());
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(s["mounts"][5]["type"], "sysfs");
    }

    #[test]
    fn defaults_for_an_empty_config() {
        let s = spec(&json!({}), &SpecOptions::default());
        assert_eq!(s["process"]["args"], json!(["sh"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["env"], json!([DEFAULT_PATH]));
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
    }

    #[test]
    fn args_override() {
        let o = SpecOptions {
            args: Some(vec!["id".into()]),
            ..Default::default()
        };
        assert_eq!(spec(&image(), &o)["process"]["args"], json!(["id"]));
    }

    #[test]
    fn rootless_like_runc_spec_rootless() {
        let o = SpecOptions {
            rootless: true,
            host_uid: 1234,
            host_gid: 1235,
            readonly: true,
            ..Default::default()
        };
        let s = spec(&image(), &o);
        assert_eq!(
            s["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": 1234, "size": 1}])
        );
        assert_eq!(
            s["linux"]["gidMappings"],
            json!([{"containerID": 0, "hostID": 1235, "size": 1}])
        );
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "user"]);
        assert!(s["linux"].get("resources").is_none());
        assert_eq!(s["mounts"][5]["type"], "none");
        assert_eq!(s["mounts"][5]["source"], "/sys");
        assert_eq!(s["mounts"][5]["options"][0], "rbind");
        assert!(!s["mounts"][2]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("gid=5")));
        assert_eq!(s["root"]["readonly"], true);
    }

    #[test]
    fn users_resolve_against_passwd_and_group() {
        let r = |u: &str| resolve_user(u, PASSWD, GROUP);
        assert_eq!(r("").unwrap(), User::default().with(&[10]));
        assert_eq!(
            r("app").unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10, 44]
            }
        );
        assert_eq!(
            r("1000").unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10, 44]
            }
        );
        assert_eq!(
            r("app:wheel").unwrap(),
            User {
                uid: 1000,
                gid: 10,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            r("4242:77").unwrap(),
            User {
                uid: 4242,
                gid: 77,
                additional_gids: vec![]
            }
        );
        assert_eq!(r("4242").unwrap().gid, 0);
        assert_eq!(r("daemon:1").unwrap().gid, 1);
        assert!(r("nobody").is_err());
        assert!(r("app:nogroup").is_err());
        // Numeric ids need no passwd at all.
        assert_eq!(resolve_user("5:6", "", "").unwrap().uid, 5);
    }

    impl User {
        fn with(mut self, g: &[u32]) -> User {
            self.additional_gids = g.to_vec();
            self
        }
    }
}
