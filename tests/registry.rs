//! `layerfs pull` and `push` against real registries: Debian's
//! `docker-registry` (the distribution project's `registry`) started here
//! on 127.0.0.1, once over plain HTTP, once with TLS (a CA and server
//! certificate made by openssl) and htpasswd Basic auth; images put there
//! and read back by skopeo and podman, the oracles. A tiny fake registry (Python)
//! serves Bearer token challenges, a blob whose bytes do not match its
//! digest and blobs that stall halfway; another takes pushes and keeps
//! only half of one chunk.
//!
//! Long file: every registry case shares the servers this file starts
//! (plain, TLS with htpasswd, the fake Bearer and misbehaving ones); and
//! each file of tests/ is a test binary of its own, so a split would be one
//! more binary to build and link in CI.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, fuse_available, run_ok, snapshot, Mount, TestStore};

/// The tools these tests need; without them the tests are skipped with a
/// message, except under CI, where that is a failure.
fn tools_available() -> bool {
    let missing: Vec<&str> = [
        "docker-registry",
        "skopeo",
        "openssl",
        "htpasswd",
        "python3",
        "umoci",
    ]
    .into_iter()
    .filter(|t| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?} and CI is set: the registry tests must run in CI");
    }
    eprintln!("SKIP: missing {missing:?} (set CI=1 to make this a failure)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "the registry exited ({st}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the registry did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A registry process, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// With TLS and auth: (user, password).
    creds: Option<(&'static str, &'static str)>,
}

impl Registry {
    /// Plain HTTP, anonymous.
    fn plain() -> Registry {
        Registry::start(false)
    }

    /// HTTPS with a certificate of the test's own CA (`ca.pem`), and
    /// htpasswd Basic auth for user `tester`.
    fn tls_auth() -> Registry {
        Registry::start(true)
    }

    fn start(tls: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-registry")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("data").display()
        );
        let mut creds = None;
        if tls {
            let ssl = |args: &[&str]| {
                run_ok(Command::new("openssl").current_dir(d).args(args));
            };
            ssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=layerfs test CA",
            ]);
            ssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]);
            std::fs::write(
                d.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            ssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ]);
            run_ok(
                Command::new("htpasswd")
                    .current_dir(d)
                    .args(["-Bbc", "htpasswd", "tester", "s3cret"]),
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: layerfs-test\n    path: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display(),
                d.join("htpasswd").display()
            ));
            creds = Some(("tester", "s3cret"));
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = d.join("registry.log");
        let mut child = Command::new("docker-registry")
            .args(["serve", d.join("config.yml").to_str().unwrap()])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("registry.err")).unwrap())
            .spawn()
            .expect("starting docker-registry");
        wait_for_port(port, &mut child, &d.join("registry.err"));
        Registry {
            child,
            port,
            dir,
            creds,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn creds_arg(&self) -> String {
        let (u, p) = self.creds.expect("a registry with auth");
        format!("{u}:{p}")
    }

    /// skopeo's flags for this registry (TLS unverified, the credentials).
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut f = vec![format!("--{prefix}tls-verify=false")];
        if self.creds.is_some() {
            f.push(format!("--{prefix}creds={}", self.creds_arg()));
        }
        f
    }

    /// `skopeo copy docker-archive:FIXTURE docker://HOST/REPO` with extra
    /// flags (compression).
    fn put(&self, fixture_name: &str, repo: &str, extra: &[&str]) {
        self.put_from(
            &format!("docker-archive:{}", fixture(fixture_name).display()),
            repo,
            extra,
        );
    }

    /// `skopeo copy SOURCE docker://HOST/REPO` (SOURCE in skopeo's
    /// transport syntax).
    fn put_from(&self, source: &str, repo: &str, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q"])
            .args(self.skopeo_flags("dest-"))
            .args(extra);
        c.arg(source);
        c.arg(format!("docker://{}/{repo}", self.host()));
        run_ok(&mut c);
    }

    /// The raw manifest of `repo` as skopeo reads it.
    fn raw_manifest(&self, repo: &str) -> Vec<u8> {
        let out = Command::new("skopeo")
            .arg("inspect")
            .args(self.skopeo_flags(""))
            .arg("--raw")
            .arg(format!("docker://{}/{repo}", self.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Blob downloads by layerfs so far, from the registry's access log.
    fn layerfs_blob_gets(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .chain(
                std::fs::read_to_string(self.dir.path().join("registry.err"))
                    .unwrap_or_default()
                    .lines(),
            )
            .filter(|l| {
                l.contains("\"GET /v2/") && l.contains("/blobs/sha256:") && l.contains("layerfs/")
            })
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The config digest (the image id) of a manifest.
fn config_digest(manifest: &[u8]) -> String {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    m["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string()
}

/// The image at `id` in `a` mounts to the same tree as `id` in `b`.
fn same_mounted_tree(a: &TestStore, b: &TestStore, id: &str) {
    let ma = Mount::new(a, id, &[]);
    let mb = Mount::new(b, id, &[]);
    common::assert_same_tree(id, &snapshot(&mb.dir), &snapshot(&ma.dir), &[]);
}

fn store_tmp_is_empty(s: &TestStore) -> bool {
    std::fs::read_dir(s.root().join("tmp"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

#[test]
fn pulls_of_each_compression_match_import_and_a_second_pull_downloads_nothing() {
    if !tools_available() || !fuse_available() {
        return;
    }
    let reg = Registry::plain();
    // skopeo's blob-info cache would hand the registry blobs it already
    // has in another compression: --preserve-digests copies the source's
    // own blobs (zstd from the OCI fixture, uncompressed from the
    // docker-archive), and each case checks what the registry holds.
    let archive = format!("docker-archive:{}", fixture("multi.docker.tar").display());
    let zstd_oci = format!("oci:{}:multi:latest", fixture("multi-zstd.oci").display());
    for (tag, source, fixture_name, flags) in [
        ("gzip", &archive, "multi.docker.tar", &[][..]),
        (
            "zstd",
            &zstd_oci,
            "multi-zstd.oci",
            &["--preserve-digests"][..],
        ),
        (
            "raw",
            &archive,
            "multi.docker.tar",
            &["--preserve-digests", "--dest-compress=false"][..],
        ),
    ] {
        let imported = TestStore::new();
        let want = imported.import(&fixture(fixture_name), &[]);
        let repo = format!("t/{tag}:1");
        reg.put_from(source, &repo, flags);
        let m: serde_json::Value = serde_json::from_slice(&reg.raw_manifest(&repo)).unwrap();
        let config = json(&imported.ok(&["inspect", &want]));
        for (l, diff_id) in m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        {
            let (mt, digest) = (l["mediaType"].as_str().unwrap(), &l["digest"]);
            match tag {
                "gzip" => assert!(mt.ends_with("gzip") && digest != diff_id, "{tag}: {l}"),
                "zstd" => assert!(mt.ends_with("+zstd") && digest != diff_id, "{tag}: {l}"),
                _ => assert_eq!(
                    digest, diff_id,
                    "{tag}: the registry holds a compressed blob"
                ),
            }
        }
        let r = format!("{}/{repo}", reg.host());
        let store = TestStore::new();
        let before = reg.layerfs_blob_gets();
        let out = json(&store.ok(&["pull", &r, "--tls-verify=false", "--json"]));
        assert_eq!(out["id"], want.as_str(), "{tag}: {out}");
        assert_eq!(out["layers"], 3);
        assert_eq!(out["downloaded"], 3);
        // Three layer blobs (the config is a blob too).
        assert_eq!(reg.layerfs_blob_gets() - before, 4, "{tag}");
        let manifest = reg.raw_manifest(&repo);
        assert_eq!(
            out["manifest_digest"],
            format!("sha256:{}", sha256_hex(&manifest))
        );
        assert_eq!(config_digest(&manifest), want);
        // Tagged with the reference; mounts as the import does, and as
        // umoci unpacks what skopeo copies out of the registry (Debian's
        // umoci reads no zstd: skopeo recompresses it as gzip).
        assert_eq!(store.ok(&["inspect", &r]), imported.ok(&["inspect", &want]));
        same_mounted_tree(&store, &imported, &want);
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        run_ok(
            Command::new("skopeo")
                .args([
                    "copy",
                    "-q",
                    "--src-tls-verify=false",
                    "--dest-compress",
                    "--dest-compress-format=gzip",
                ])
                .arg(format!("docker://{r}"))
                .arg(format!("oci:{}:x", layout.display())),
        );
        let bundle = work.path().join("bundle");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:x", layout.display()))
                .arg(&bundle),
        );
        let m = Mount::new(&store, &want, &[]);
        common::assert_same_tree(
            &format!("{tag}: umoci unpack of the registry's image vs the pulled mount"),
            &snapshot(&bundle.join("rootfs")),
            &snapshot(&m.dir),
            &[],
        );
        drop(m);
        // Again: the layers are in the store, only the config is fetched.
        let before = reg.layerfs_blob_gets();
        let again = json(&store.ok(&["pull", &r, "--tls-verify=false", "--json"]));
        assert_eq!(again["id"], want.as_str());
        assert_eq!(again["downloaded"], 0);
        assert_eq!(
            reg.layerfs_blob_gets() - before,
            1,
            "{tag}: the second pull downloaded layers"
        );
        assert!(store_tmp_is_empty(&store));
    }
}

#[test]
fn a_missing_tag_fails_naming_the_reference_and_leaves_the_store() {
    if !tools_available() {
        return;
    }
    let reg = Registry::plain();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let store = TestStore::new();
    store.import(&fixture("edge.docker.tar"), &[]);
    let before = store.fingerprint();
    for r in [
        format!("{}/t/multi:nope", reg.host()),
        format!("{}/t/other:1", reg.host()),
    ] {
        let err = store.fails(&["pull", &r, "--tls-verify=false"]);
        assert!(err.contains(&r) && err.contains("404"), "{err}");
    }
    // A registry that is not there: a connection error naming it.
    let err = store.fails(&[
        "pull",
        &format!("127.0.0.1:{}/x:1", free_port()),
        "--tls-verify=false",
    ]);
    assert!(
        err.contains("/x:1") && err.contains("contacting the registry"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
    assert!(store_tmp_is_empty(&store));
}

#[test]
fn the_platform_is_picked_from_an_index() {
    if !tools_available() {
        return;
    }
    let reg = Registry::plain();
    let ids = TestStore::new();
    let multi = ids.import(&fixture("multi.docker.tar"), &[]);
    let edge = ids.import(&fixture("edge.docker.tar"), &[]);
    reg.put("multi.docker.tar", "t/m:amd64", &[]);
    reg.put("edge.docker.tar", "t/m:arm64", &[]);
    let desc = |tag: &str, arch: &str| {
        let m = reg.raw_manifest(&format!("t/m:{tag}"));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        serde_json::json!({"mediaType": v["mediaType"], "digest": format!("sha256:{}", sha256_hex(&m)),
            "size": m.len(), "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc("arm64", "arm64"), desc("amd64", "amd64")]});
    let f = reg.dir.path().join("index.json");
    std::fs::write(&f, serde_json::to_vec(&index).unwrap()).unwrap();
    // Put the index by hand, as the distribution API takes it.
    run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, urllib.request as u
r = u.Request(sys.argv[1], data=open(sys.argv[2], 'rb').read(), method='PUT',
    headers={'Content-Type': 'application/vnd.oci.image.index.v1+json'})
print(u.urlopen(r).status)",
            )
            .arg(format!("http://{}/v2/t/m/manifests/all", reg.host()))
            .arg(&f),
    );
    let store = TestStore::new();
    let r = format!("{}/t/m:all", reg.host());
    let host_is_amd64 = std::env::consts::ARCH == "x86_64";
    if host_is_amd64 {
        assert_eq!(
            store.ok(&["pull", &r, "--tls-verify=false", "-q"]).trim(),
            multi
        );
    }
    let got = store.ok(&[
        "pull",
        &r,
        "--tls-verify=false",
        "-q",
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(got.trim(), edge);
    let got = store.ok(&[
        "pull",
        &r,
        "--tls-verify=false",
        "-q",
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(got.trim(), multi);
    let before = store.fingerprint();
    let err = store.fails(&[
        "pull",
        &r,
        "--tls-verify=false",
        "--platform",
        "linux/s390x",
    ]);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64, linux/amd64"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
}

#[test]
fn tls_and_basic_auth_with_creds_authfile_and_ca_file() {
    if !tools_available() {
        return;
    }
    let reg = Registry::tls_auth();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let want = TestStore::new().import(&fixture("multi.docker.tar"), &[]);
    let r = format!("{}/t/multi:1", reg.host());
    let store = TestStore::new();

    // Not verified: refused by default (our CA is not a system root).
    let err = store.fails(&["pull", &r, "--creds", &reg.creds_arg()]);
    assert!(
        err.contains(&r) && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // No credentials, wrong password: clear errors, store unchanged.
    let before = store.fingerprint();
    let err = store.fails(&["pull", &r, "--tls-verify=false"]);
    assert!(err.contains(&r) && err.contains("--creds"), "{err}");
    let err = store.fails(&["pull", &r, "--tls-verify=false", "--creds", "tester:wrong"]);
    assert!(err.contains(&r) && err.contains("401"), "{err}");
    assert_eq!(store.fingerprint(), before);
    assert!(store_tmp_is_empty(&store));

    // --creds, TLS unverified.
    let got = store.ok(&[
        "pull",
        &r,
        "--tls-verify=false",
        "--creds",
        &reg.creds_arg(),
    ]);
    assert_eq!(got.trim(), want);

    // An auth file as podman writes it, and TLS verified against our CA
    // through SSL_CERT_FILE.
    let store2 = TestStore::new();
    let authfile = reg.dir.path().join("auth.json");
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(reg.creds_arg());
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = store2
        .cmd()
        .args(["pull", &r, "--authfile", authfile.to_str().unwrap()])
        .env("SSL_CERT_FILE", reg.ca())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    // The same file found where podman keeps it.
    let run = reg.dir.path().join("run");
    std::fs::create_dir_all(run.join("containers")).unwrap();
    std::fs::copy(&authfile, run.join("containers/auth.json")).unwrap();
    let out = TestStore::new()
        .cmd()
        .args(["pull", &r, "--tls-verify=false", "-q"])
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
}

#[test]
fn pushed_images_keep_their_id_through_skopeo_and_podman() {
    if !tools_available() {
        return;
    }
    for reg in [Registry::plain(), Registry::tls_auth()] {
        let store = TestStore::new();
        let id = store.import(&fixture("edge.docker.tar"), &[]);
        let mut args = vec![
            "push".to_string(),
            id.clone(),
            format!("{}/p/edge:v1", reg.host()),
        ];
        args.push("--tls-verify=false".into());
        if reg.creds.is_some() {
            let err = store.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(
                err.contains("p/edge:v1") && err.contains("--creds"),
                "{err}"
            );
            args.push(format!("--creds={}", reg.creds_arg()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut json_args = args.clone();
        json_args.push("--json");
        let out = json(&store.ok(&json_args));
        assert_eq!(out["id"], id.as_str());
        assert_eq!(out["uploaded"], 5, "4 layers and the config: {out}");
        let manifest = reg.raw_manifest("p/edge:v1");
        assert_eq!(config_digest(&manifest), id);
        assert_eq!(
            out["manifest_digest"],
            format!("sha256:{}", sha256_hex(&manifest))
        );
        // Again: every blob is there already, the manifest is the same.
        let again = json(&store.ok(&json_args));
        assert_eq!(
            (again["uploaded"].as_u64(), again["present"].as_u64()),
            (Some(0), Some(5))
        );
        assert_eq!(again["manifest_digest"], out["manifest_digest"]);
        // skopeo copies it back to a docker-archive; its import is the image.
        let back = reg.dir.path().join("back.tar");
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q"]).args(reg.skopeo_flags("src-"));
        c.arg(format!("docker://{}/p/edge:v1", reg.host()));
        c.arg(format!("docker-archive:{}", back.display()));
        run_ok(&mut c);
        assert_eq!(TestStore::new().import(&back, &[]), id);
        // And layerfs pulls it back to the same id.
        let mut pull = vec!["pull", "-q", &args[2], "--tls-verify=false"];
        let c = format!(
            "--creds={}",
            reg.creds
                .map(|(u, p)| format!("{u}:{p}"))
                .unwrap_or_default()
        );
        if reg.creds.is_some() {
            pull.push(&c);
        }
        assert_eq!(TestStore::new().ok(&pull).trim(), id);
        // podman pulls what layerfs pushed (into a storage of its own) to
        // the same id. (Not edge: one of its layers has a path twice, on
        // purpose, which podman refuses to apply from any source.)
        let multi = store.import(&fixture("multi.docker.tar"), &[]);
        let to = format!("{}/p/multi:v1", reg.host());
        let mut push = vec!["push", &multi, &to, "--tls-verify=false"];
        if reg.creds.is_some() {
            push.push(&c);
        }
        store.ok(&push);
        let pdir = tempfile::tempdir().unwrap();
        let conf = pdir.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                pdir.path().display()
            ),
        )
        .unwrap();
        let mut p = Command::new("podman");
        p.env("CONTAINERS_STORAGE_CONF", &conf)
            .args(["pull", "-q", "--tls-verify=false"]);
        if reg.creds.is_some() {
            p.arg(&c);
        }
        let got = run_ok(p.arg(&to));
        assert_eq!(got.trim(), multi, "podman pull");
        let _ = Command::new("podman")
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .args(["rmi", "--all", "--force"])
            .output();
    }
}

/// A fake registry in Python: `/v2/` and everything under it want a
/// Bearer token from `/token` (which checks the scope); it serves repo
/// `x` with tag `good` (a correct image) and `bad` (the same manifest
/// shape, but the layer bytes it sends have one byte changed), and
/// `flaky` (answers 503 once, then as `good`), `reset` (the first
/// download of the layer stops halfway, the connection closed; Range
/// requests, logged to `ranges` beside the marker, are answered 206),
/// `norange` (as `reset`, but Range is ignored: 200 and the whole blob) and
/// `slow` (the layer stalls halfway, and a marker file says so),
/// `forbidden` (403) and `ratelimit` (429) for the manifest,
/// `redirect` (the layer is a 307 to "blob storage", which refuses
/// requests that carry the token), `foreign` (a foreign layer),
/// `diffid` (a right blob, but the config gives another diff id), `pipe`
/// (two layers, the second stalls halfway) and `stream` (one gzip layer
/// of 4 MiB that stalls halfway until the file `release3` appears),
/// `restart` (the same, but after `release4` the connection closes, and
/// the Range request that follows gets the whole blob again).
/// It prints the config digests of `good`, `pipe` and `stream`.
const FAKE: &str = r#"
import hashlib, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port = int(sys.argv[1]); layer = open(sys.argv[2], 'rb').read(); marker = sys.argv[3]
bad = bytearray(layer); bad[600] ^= 1; bad = bytes(bad)
def d(b): return 'sha256:' + hashlib.sha256(b).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": [d(layer)]}}).encode()
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(layer), "size": len(layer)}]}).encode()
# A config whose diff id is not the layer's (the blob itself is right).
wrong_config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode()
wrong = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(wrong_config), "size": len(wrong_config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(layer), "size": len(layer)}]}).encode()
foreign = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": d(layer),
                "size": len(layer), "urls": ["https://example.com/layer"]}]}).encode()
# A two-layer image (`pipe`): its second layer stalls halfway until the
# file `release` appears beside the marker (a Range request is answered
# at once); its blob GETs are logged to `gets`.
import io, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    data = os.urandom(1 << 20)
    ti = tarfile.TarInfo("second/blob"); ti.size = len(data); ti.mtime = 1
    t.addfile(ti, io.BytesIO(data))
layer2 = buf.getvalue()
config2 = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": [d(layer), d(layer2)]}}).encode()
manifest2 = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config2), "size": len(config2)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(l), "size": len(l)} for l in (layer, layer2)]}).encode()
# A one-layer image (`stream`) of a gzip layer that stalls halfway until
# the file `release3` appears beside the marker (`marker3` says it stalled).
import gzip
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    data = os.urandom(4 << 20)
    ti = tarfile.TarInfo("big/blob"); ti.size = len(data); ti.mtime = 1
    t.addfile(ti, io.BytesIO(data))
tar3 = buf.getvalue(); layer3 = gzip.compress(tar3, mtime=0)
config3 = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": [d(tar3)]}}).encode()
manifest3 = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config3), "size": len(config3)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(layer3), "size": len(layer3)}]}).encode()
state = {"mode": "good", "flaky": 0}
ranges = os.path.join(os.path.dirname(marker), "ranges")
gets = os.path.join(os.path.dirname(marker), "gets")  # blob GETs of `pipe`
class H(BaseHTTPRequestHandler):
    def send(self, code, body=b"", ctype="application/json", extra={}):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items(): self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/token?"):
            ok = "scope=repository%3Ax%3Apull" in self.path and "service=fake" in self.path
            return self.send(200 if ok else 400, json.dumps({"token": "t0k"}).encode())
        if self.path == "/storage/layer":
            # Blob storage: reached by redirect, without the registry's token.
            if self.headers.get("Authorization"):
                return self.send(400, b"credentials leaked to blob storage")
            return self.send(200, layer, "application/octet-stream")
        if self.headers.get("Authorization") != "Bearer t0k":
            return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}', extra={
                "WWW-Authenticate": 'Bearer realm="http://127.0.0.1:%d/token",service="fake"' % port})
        p = self.path
        if p == "/v2/": return self.send(200, b"{}")
        if p == "/v2/x/manifests/flaky":
            state["flaky"] += 1
            if state["flaky"] == 1:
                return self.send(503, b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}')
        tag = p.rsplit("/", 1)[-1]
        if p == "/v2/x/manifests/diffid":
            state["mode"] = "good"
            return self.send(200, wrong, "application/vnd.oci.image.manifest.v1+json")
        if p == "/v2/x/blobs/" + d(wrong_config): return self.send(200, wrong_config, "application/octet-stream")
        if p == "/v2/x/manifests/pipe":
            state["mode"] = "pipe"
            return self.send(200, manifest2, "application/vnd.oci.image.manifest.v1+json")
        if p == "/v2/x/blobs/" + d(config2): return self.send(200, config2, "application/octet-stream")
        if p == "/v2/x/blobs/" + d(layer2):
            rng = self.headers.get("Range")
            with open(gets, "a") as f: f.write("layer2 %s\n" % (rng or "-"))
            if rng:
                first = int(rng.removeprefix("bytes=").split("-")[0])
                return self.send(206, layer2[first:], "application/octet-stream", extra={
                    "Content-Range": "bytes %d-%d/%d" % (first, len(layer2) - 1, len(layer2))})
            self.send_response(200)
            self.send_header("Content-Length", str(len(layer2)))
            self.end_headers()
            self.wfile.write(layer2[: len(layer2) // 2])
            self.wfile.flush()
            open(marker + "2", "w").close()
            release = os.path.join(os.path.dirname(marker), "release")
            for _ in range(600):
                if os.path.exists(release): break
                time.sleep(0.1)
            self.wfile.write(layer2[len(layer2) // 2 :])
            return
        if p in ("/v2/x/manifests/stream", "/v2/x/manifests/restart"):
            state["mode3"] = tag
            return self.send(200, manifest3, "application/vnd.oci.image.manifest.v1+json")
        if p == "/v2/x/blobs/" + d(config3): return self.send(200, config3, "application/octet-stream")
        if p == "/v2/x/blobs/" + d(layer3) and state.get("mode3") == "restart":
            if state.get("cut restart"):
                return self.send(200, layer3, "application/octet-stream")
            # Half, a stall until `release4`, the connection closed; the
            # Range request that follows is answered with the whole blob.
            state["cut restart"] = True
            self.send_response(200)
            self.send_header("Content-Length", str(len(layer3)))
            self.end_headers()
            self.wfile.write(layer3[: len(layer3) // 2])
            self.wfile.flush()
            open(marker + "4", "w").close()
            release = os.path.join(os.path.dirname(marker), "release4")
            for _ in range(600):
                if os.path.exists(release): break
                time.sleep(0.1)
            self.close_connection = True
            return
        if p == "/v2/x/blobs/" + d(layer3):
            self.send_response(200)
            self.send_header("Content-Length", str(len(layer3)))
            self.end_headers()
            self.wfile.write(layer3[: len(layer3) // 2])
            self.wfile.flush()
            open(marker + "3", "w").close()
            release = os.path.join(os.path.dirname(marker), "release3")
            for _ in range(600):
                if os.path.exists(release): break
                time.sleep(0.1)
            self.wfile.write(layer3[len(layer3) // 2 :])
            return
        if p == "/v2/x/manifests/forbidden":
            return self.send(403, b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}')
        if p == "/v2/x/manifests/ratelimit":
            return self.send(429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}', extra={"Retry-After": "60"})
        if p == "/v2/x/manifests/foreign":
            return self.send(200, foreign, "application/vnd.docker.distribution.manifest.v2+json")
        if p.startswith("/v2/x/manifests/") and tag in ("good", "bad", "flaky", "reset", "norange", "slow", "redirect"):
            state["mode"] = tag
            return self.send(200, manifest, "application/vnd.oci.image.manifest.v1+json")
        if p == "/v2/x/blobs/" + d(config): return self.send(200, config, "application/octet-stream")
        if p == "/v2/x/blobs/" + d(layer):
            mode = state["mode"]
            if mode == "bad":
                return self.send(200, bad, "application/octet-stream")
            if mode == "redirect":
                return self.send(307, b"", extra={"Location": "http://127.0.0.1:%d/storage/layer" % port})
            rng = self.headers.get("Range")
            if rng:
                with open(ranges, "a") as f: f.write(mode + " " + rng + "\n")
            if mode == "pipe":
                with open(gets, "a") as f: f.write("layer0 %s\n" % (rng or "-"))
            if mode == "slow" or (mode in ("reset", "norange") and not state.get("cut " + mode)):
                # Half the bytes, then the connection drops (reset and
                # norange, once) or stalls until the client is killed (slow).
                state["cut " + mode] = True
                self.send_response(200)
                self.send_header("Content-Length", str(len(layer)))
                self.end_headers()
                self.wfile.write(layer[: len(layer) // 2])
                self.wfile.flush()
                if mode == "slow":
                    open(marker, "w").close()
                    time.sleep(60)
                self.close_connection = True
                return
            if rng and mode != "norange":
                first = int(rng.removeprefix("bytes=").split("-")[0])
                return self.send(206, layer[first:], "application/octet-stream", extra={
                    "Content-Range": "bytes %d-%d/%d" % (first, len(layer) - 1, len(layer))})
            return self.send(200, layer, "application/octet-stream")
        self.send(404, b'{"errors":[{"code":"NOT_FOUND","message":"nope"}]}')
    def do_POST(self):
        # The OAuth2 refresh_token grant of an identity token, logged to
        # `posts`; the token is `r3fresh`.
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        if self.path != "/token": return self.send(404, b'{"errors":[{"code":"NOT_FOUND","message":"nope"}]}')
        with open(os.path.join(os.path.dirname(marker), "posts"), "a") as f: f.write(body + "\n")
        from urllib.parse import parse_qs
        q = parse_qs(body)
        ok = (q.get("grant_type") == ["refresh_token"] and q.get("refresh_token") == ["r3fresh"]
              and q.get("service") == ["fake"] and q.get("scope") == ["repository:x:pull"] and q.get("client_id"))
        if not ok: return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad refresh token"}]}')
        return self.send(200, json.dumps({"access_token": "t0k", "expires_in": 300}).encode())
    def log_message(self, *a): pass
print(hashlib.sha256(config).hexdigest(), flush=True)
print(hashlib.sha256(config2).hexdigest(), flush=True)
print(hashlib.sha256(config3).hexdigest(), flush=True)
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// The fake registry, killed on drop.
struct Fake {
    child: Child,
    port: u16,
    /// The config digests it printed: `good`, `pipe`, `stream`.
    ids: Vec<String>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`FAKE`] with its files (markers, logs) in `dir`.
fn start_fake(dir: &Path) -> Fake {
    let script = dir.join("fake.py");
    std::fs::write(&script, FAKE).unwrap();
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(fixture("edge/layer0.tar"))
        .arg(dir.join("stalled"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let ids = (0..3)
        .map(|_| {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            line.trim().to_string()
        })
        .collect();
    wait_for_port(port, &mut child, &dir.join("err"));
    Fake { child, port, ids }
}

#[test]
fn bearer_tokens_and_a_blob_that_does_not_match_its_digest() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(dir.path());
    let port = fake.port;
    let config_id = fake.ids[0].clone();
    let pipe_id = fake.ids[1].clone();

    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let before = store.fingerprint();
    let bad = format!("127.0.0.1:{port}/x:bad");
    let err = store.fails(&["pull", &bad, "--tls-verify=false"]);
    assert!(
        err.contains(&bad) && err.contains("does not match its digest"),
        "{err}"
    );
    assert_eq!(
        store.fingerprint(),
        before,
        "a failed pull changed the store"
    );
    assert!(store_tmp_is_empty(&store));

    // The same image with the right bytes, through the same token dance.
    let good = format!("127.0.0.1:{port}/x:good");
    assert_eq!(
        store
            .ok(&["pull", "-q", &good, "--tls-verify=false"])
            .trim(),
        config_id
    );
    // A pull killed -9 halfway through a layer leaves the store as it
    // was; the next writer removes its staging, and a pull completes.
    let store2 = TestStore::new();
    store2.import(&fixture("multi.docker.tar"), &[]);
    let before2 = store2.fingerprint();
    let mut pulling = store2
        .cmd()
        .args([
            "pull",
            &format!("127.0.0.1:{port}/x:slow"),
            "--tls-verify=false",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.path().join("stalled").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pull did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !store_tmp_is_empty(&store2),
        "the killed pull was staging nothing"
    );
    pulling.kill().unwrap();
    pulling.wait().unwrap();
    assert_eq!(
        store2.fingerprint(),
        before2,
        "a killed pull changed the store"
    );
    // The next pull resumes the killed one's blob with a Range request.
    let good2 = format!("127.0.0.1:{port}/x:good");
    let out = store2.run(&["-v", "pull", "-q", &good2, "--tls-verify=false"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), config_id);
    assert!(err.contains("resuming at byte"), "{err}");
    let ranges = || std::fs::read_to_string(dir.path().join("ranges")).unwrap_or_default();
    let half = std::fs::metadata(fixture("edge/layer0.tar")).unwrap().len() / 2;
    assert!(
        ranges().lines().any(|l| l == format!("good bytes={half}-")),
        "no Range request from byte {half}: {}",
        ranges()
    );
    assert!(store_tmp_is_empty(&store2));
    // A connection lost halfway through a blob: downloaded again.
    let reset = format!("127.0.0.1:{port}/x:reset");
    let out = TestStore::new().run(&["-v", "pull", "-q", &reset, "--tls-verify=false"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), config_id);
    assert!(err.contains("resuming at byte"), "{err}");
    assert!(
        ranges()
            .lines()
            .any(|l| l == format!("reset bytes={half}-")),
        "{}",
        ranges()
    );
    // A registry that ignores Range: the blob comes again whole.
    let norange = format!("127.0.0.1:{port}/x:norange");
    let out = TestStore::new().run(&["-v", "pull", "-q", &norange, "--tls-verify=false"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), config_id);
    assert!(err.contains("ignored the range"), "{err}");
    // A redirect to blob storage is followed, without the token.
    let redirect = format!("127.0.0.1:{port}/x:redirect");
    assert_eq!(
        TestStore::new()
            .ok(&["pull", "-q", &redirect, "--tls-verify=false"])
            .trim(),
        config_id
    );
    // A config whose diff id is not the layer's: refused, store unchanged.
    let before = store.fingerprint();
    let diffid = format!("127.0.0.1:{port}/x:diffid");
    let err = store.fails(&["pull", &diffid, "--tls-verify=false"]);
    assert!(
        err.contains(&diffid) && err.contains("diff_id mismatch"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
    assert!(store_tmp_is_empty(&store));
    // A foreign layer is refused, naming the reference.
    let foreign = format!("127.0.0.1:{port}/x:foreign");
    let err = store.fails(&["pull", &foreign, "--tls-verify=false"]);
    assert!(
        err.contains(&foreign) && err.contains("foreign (non-distributable) layer"),
        "{err}"
    );
    // Layers are staged as they arrive: the bottom one is indexed in
    // the store's tmp/ while the second still downloads.
    let store3 = TestStore::new();
    let pipe = format!("127.0.0.1:{port}/x:pipe");
    let mut pulling = store3
        .cmd()
        .args(["pull", "-q", &pipe, "--tls-verify=false"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staged_layer_json = || {
        std::fs::read_dir(store3.root().join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("layer.json").exists())
    };
    let start = Instant::now();
    while !(dir.path().join("stalled2").exists() && staged_layer_json()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bottom layer was not staged while the second downloaded (stalled: {})",
            dir.path().join("stalled2").exists()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed there, and pulled again: the complete bottom blob is not
    // downloaded again, the second resumes where it stopped.
    std::thread::sleep(Duration::from_millis(200));
    pulling.kill().unwrap();
    pulling.wait().unwrap();
    let gets_before = std::fs::read_to_string(dir.path().join("gets")).unwrap();
    let out = store3.run(&["pull", "-q", &pipe, "--tls-verify=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pipe_id);
    let gets = std::fs::read_to_string(dir.path().join("gets")).unwrap();
    let rerun: Vec<&str> = gets[gets_before.len()..].lines().collect();
    let half2 = (1 << 20) / 2; // at least: the tar holds a 1 MiB file
    assert!(
        rerun.len() == 1
            && rerun[0]
                .strip_prefix("layer2 bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= half2),
        "the rerun fetched {rerun:?} (all: {gets})"
    );
    assert!(store_tmp_is_empty(&store3));
    std::fs::write(dir.path().join("release"), "").unwrap();
    // A 503 is retried.
    let flaky = format!("127.0.0.1:{port}/x:flaky");
    assert_eq!(
        store
            .ok(&["pull", "-q", &flaky, "--tls-verify=false"])
            .trim(),
        config_id
    );
    let err = store.fails(&[
        "pull",
        &format!("127.0.0.1:{port}/x:none"),
        "--tls-verify=false",
    ]);
    assert!(err.contains("/x:none") && err.contains("404"), "{err}");
    // 403 and 429: said as such, naming the reference, the registry's
    // own message kept; the store is unchanged.
    let before = store.fingerprint();
    for (tag, why, msg) in [
        (
            "forbidden",
            "access denied (403 Forbidden)",
            "DENIED: requested access",
        ),
        (
            "ratelimit",
            "rate limiting this client (429",
            "TOOMANYREQUESTS: pull rate limit",
        ),
    ] {
        let r = format!("127.0.0.1:{port}/x:{tag}");
        let err = store.fails(&["pull", &r, "--tls-verify=false"]);
        assert!(
            err.contains(&r) && err.contains(why) && err.contains(msg),
            "{err}"
        );
    }
    assert_eq!(store.fingerprint(), before);
    assert!(store_tmp_is_empty(&store));
}

/// One layer is decompressed and written to its staging while its blob
/// still downloads: with the blob stalled halfway, the staged layer tar
/// already holds the first of its bytes; released, the pull completes.
/// The same when the download then starts again from byte 0 (a lost
/// connection, a registry that ignores Range): the layer is staged again.
#[test]
fn a_layer_is_decompressed_while_its_blob_downloads() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(dir.path());
    for (tag, stalled, release) in [
        ("stream", "stalled3", "release3"),
        ("restart", "stalled4", "release4"),
    ] {
        let store = TestStore::new();
        let r = format!("127.0.0.1:{}/x:{tag}", fake.port);
        let mut pulling = store
            .cmd()
            .args(["-v", "pull", "-q", &r, "--tls-verify=false"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The biggest layer.tar staged under tmp/ so far.
        let staged_tar = || {
            std::fs::read_dir(store.root().join("tmp"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::metadata(e.path().join("layer.tar")).ok())
                .map(|m| m.len())
                .max()
        };
        let start = Instant::now();
        while !dir.path().join(stalled).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{tag}: the pull did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = Instant::now();
        while staged_tar().is_none_or(|n| n < 1 << 20) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{tag}: with half the blob downloaded, the staged layer tar holds {:?} bytes",
                staged_tar()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            pulling.try_wait().unwrap().is_none(),
            "{tag}: the pull ended with half its blob"
        );
        std::fs::write(dir.path().join(release), "").unwrap();
        let out = pulling.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{tag}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fake.ids[2]);
        assert!(store_tmp_is_empty(&store));
        // The blob written again from byte 0 under the reader: the layer
        // is staged again from the complete blob.
        if tag == "restart" {
            assert!(err.contains("ignored the range"), "{err}");
            assert!(err.contains("staging it once downloaded"), "{err}");
        }
    }
}

#[test]
fn login_writes_podmans_auth_file_and_logout_removes_it() {
    if !tools_available() {
        return;
    }
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::tls_auth();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let run = reg.dir.path().join("xdg-run");
    let file = run.join("containers/auth.json");
    let store = TestStore::new();
    let layerfs = |args: &[&str], stdin: &str| {
        let mut c = store.cmd();
        c.args(args)
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("REGISTRY_AUTH_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let host = reg.host();
    let login = [
        "login",
        &host,
        "-u",
        "tester",
        "--password-stdin",
        "--tls-verify=false",
    ];
    let out = layerfs(&login, "wrong\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("401") && err.contains(&host),
        "{err}"
    );
    assert!(!file.exists(), "a failed login wrote the auth file");
    let out = layerfs(&login, "s3cret\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // skopeo (containers/image, podman's library) reads the file we wrote.
    let ok = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(&file)
        .arg(format!("docker://{host}/t/multi:1"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = format!("{host}/t/multi:1");
    let out = layerfs(&["pull", "-q", &r, "--tls-verify=false"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        config_digest(&reg.raw_manifest("t/multi:1"))
    );
    // Logout: the entry is gone, and a pull needs credentials again.
    assert!(layerfs(&["logout", &host], "").status.success());
    let err = String::from_utf8_lossy(&layerfs(&["pull", &r, "--tls-verify=false"], "").stderr)
        .into_owned();
    assert!(err.contains("--creds"), "{err}");
    let out = layerfs(&["logout", &host], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not logged in"),
        "{err}"
    );
}

/// A fake credential helper, `docker-credential-test`, in `dir/bin`: it
/// keeps one login in `dir/stored` (the JSON `store` gave it, which `get`
/// prints back for that ServerURL), says "credentials not found in native
/// keychain" otherwise, logs each call with its input to `dir/calls`, and
/// fails as a broken keychain would when `HELPER_BROKEN` is set. Returns
/// a `PATH` with it first.
fn fake_credential_helper(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
D='{}'
input=$(cat)
echo "$1 $input" >> "$D/calls"
if [ -n "$HELPER_BROKEN" ]; then echo "keychain locked: $HELPER_BROKEN" >&2; exit 3; fi
has() {{ [ -f "$D/stored" ] && grep -qF "\"ServerURL\":\"$input\"" "$D/stored"; }}
case "$1" in
get) if has; then cat "$D/stored"; exit 0; fi ;;
store) printf '%s' "$input" > "$D/stored"; exit 0 ;;
erase) if has; then rm "$D/stored"; exit 0; fi ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
echo "credentials not found in native keychain"
exit 1
"#,
        dir.display()
    );
    let helper = bin.join("docker-credential-test");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// What the fake helper in `dir` keeps for `server`, as its `store` input.
fn helper_login(server: &str, user: &str, secret: &str) -> String {
    serde_json::json!({"ServerURL": server, "Username": user, "Secret": secret}).to_string()
}

/// `credHelpers` in the auth file: the registry's helper answers, over the
/// file's own (wrong) entry for it; without the helper on PATH, or with a
/// helper that fails, the pull fails naming the helper; a helper with
/// nothing for the registry means anonymous (the wrong entry is not used
/// either). `credsStore` answers for a registry without an entry.
#[test]
fn a_credential_helper_answers_for_its_registry() {
    if !tools_available() {
        return;
    }
    let reg = Registry::tls_auth();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let want = TestStore::new().import(&fixture("multi.docker.tar"), &[]);
    let host = reg.host();
    let r = format!("{host}/t/multi:1");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = fake_credential_helper(d);
    std::fs::write(d.join("stored"), helper_login(&host, "tester", "s3cret")).unwrap();
    use base64::Engine;
    let wrong = base64::engine::general_purpose::STANDARD.encode("tester:wrong");
    let authfile = d.join("auth.json");
    std::fs::write(
        &authfile,
        serde_json::json!({
            "auths": {&host: {"auth": wrong}},
            "credHelpers": {&host: "test"},
        })
        .to_string(),
    )
    .unwrap();
    let pull = |store: &TestStore, path: &str, broken: Option<&str>| {
        let mut c = store.cmd();
        c.args(["pull", "-q", &r, "--tls-verify=false", "--authfile"])
            .arg(&authfile)
            .env("PATH", path)
            .env_remove("HELPER_BROKEN");
        if let Some(b) = broken {
            c.env("HELPER_BROKEN", b);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let store = TestStore::new();
    let (ok, out, err) = pull(&store, &path, None);
    assert!(ok, "{err}");
    assert_eq!(out, want);
    let calls = std::fs::read_to_string(d.join("calls")).unwrap();
    assert!(calls.contains(&format!("get {host}")), "{calls}");

    // No helper on PATH: an error naming it, not an anonymous pull.
    let store = TestStore::new();
    let (ok, _, err) = pull(&store, "/usr/bin:/bin", None);
    assert!(
        !ok && err.contains("docker-credential-test") && err.contains("PATH"),
        "{err}"
    );
    // A helper that fails: its status and message.
    let (ok, _, err) = pull(&store, &path, Some("for the test"));
    assert!(
        !ok && err.contains("docker-credential-test")
            && err.contains("keychain locked: for the test"),
        "{err}"
    );
    // A helper with nothing for the registry: anonymous, which this
    // registry refuses (the file's own wrong entry is not tried: no 401
    // for it, the error asks for credentials).
    std::fs::remove_file(d.join("stored")).unwrap();
    let (ok, _, err) = pull(&store, &path, None);
    assert!(!ok && err.contains("--creds"), "{err}");
    assert!(store_tmp_is_empty(&store));

    // credsStore: the default helper, for a registry without an entry.
    std::fs::write(d.join("stored"), helper_login(&host, "tester", "s3cret")).unwrap();
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {&host: {}}, "credsStore": "test"}).to_string(),
    )
    .unwrap();
    let (ok, out, err) = pull(&TestStore::new(), &path, None);
    assert!(ok, "{err}");
    assert_eq!(out, want);
}

/// A helper's answer with the user name `<token>` is an identity token:
/// it is POSTed to the token server as the OAuth2 `refresh_token` grant
/// (the fake's `posts`), not sent as Basic credentials; one the token
/// server refuses fails the pull.
#[test]
fn an_identity_token_from_a_helper_is_an_oauth2_refresh_token() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake = start_fake(d);
    let host = format!("127.0.0.1:{}", fake.port);
    let path = fake_credential_helper(d);
    let authfile = d.join("auth.json");
    std::fs::write(
        &authfile,
        serde_json::json!({"credHelpers": {&host: "test"}}).to_string(),
    )
    .unwrap();
    let r = format!("{host}/x:good");
    let pull = |store: &TestStore| {
        store
            .cmd()
            .args(["pull", "-q", &r, "--tls-verify=false", "--authfile"])
            .arg(&authfile)
            .env("PATH", &path)
            .env_remove("HELPER_BROKEN")
            .output()
            .unwrap()
    };
    std::fs::write(d.join("stored"), helper_login(&host, "<token>", "r3fresh")).unwrap();
    let out = pull(&TestStore::new());
    let posts = std::fs::read_to_string(d.join("posts")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{} (posted: {posts:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fake.ids[0]);
    assert!(
        posts.contains("grant_type=refresh_token") && posts.contains("refresh_token=r3fresh"),
        "{posts:?}"
    );
    std::fs::write(d.join("stored"), helper_login(&host, "<token>", "stale")).unwrap();
    let out = pull(&TestStore::new());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("401") && err.contains("bad refresh token"),
        "{err}"
    );
}

/// `login` with a credential helper configured for the registry in the
/// login file stores through it (the file is left as it was), a pull
/// finds the login there, and `logout` erases it through the helper.
#[test]
fn login_and_logout_go_through_the_registrys_credential_helper() {
    if !tools_available() {
        return;
    }
    use std::io::Write;
    let reg = Registry::tls_auth();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = fake_credential_helper(d);
    let run = d.join("xdg-run");
    let file = run.join("containers/auth.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let config = serde_json::json!({"auths": {}, "credHelpers": {&host: "test"}}).to_string();
    std::fs::write(&file, &config).unwrap();
    let store = TestStore::new();
    let layerfs = |args: &[&str], stdin: &str| {
        let mut c = store.cmd();
        c.args(args)
            .env("XDG_RUNTIME_DIR", &run)
            .env("PATH", &path)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("HELPER_BROKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let login = [
        "login",
        &host,
        "-u",
        "tester",
        "--password-stdin",
        "--tls-verify=false",
    ];
    let (ok, _, err) = layerfs(&login, "wrong\n");
    assert!(!ok && err.contains("401"), "{err}");
    assert!(!d.join("stored").exists(), "a failed login was stored");
    let (ok, out, err) = layerfs(&login, "s3cret\n");
    assert!(ok, "{err}");
    assert!(out.contains("docker-credential-test"), "{out}");
    assert_eq!(
        json(&std::fs::read_to_string(d.join("stored")).unwrap()),
        json(&helper_login(&host, "tester", "s3cret"))
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), config);
    let r = format!("{host}/t/multi:1");
    let (ok, out, err) = layerfs(&["pull", "-q", &r, "--tls-verify=false"], "");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), config_digest(&reg.raw_manifest("t/multi:1")));

    let (ok, out, err) = layerfs(&["logout", &host], "");
    assert!(ok && out.contains("docker-credential-test"), "{err}");
    let calls = std::fs::read_to_string(d.join("calls")).unwrap();
    assert!(calls.contains(&format!("erase {host}")), "{calls}");
    assert!(!d.join("stored").exists());
    let (ok, _, err) = layerfs(&["pull", &r, "--tls-verify=false"], "");
    assert!(!ok && err.contains("--creds"), "{err}");
    let (ok, _, err) = layerfs(&["logout", &host], "");
    assert!(!ok && err.contains("not logged in"), "{err}");
}

#[test]
fn a_committed_image_pushes_and_pulls_back() {
    if !tools_available() {
        return;
    }
    let reg = Registry::plain();
    let store = TestStore::new();
    let base = store.import(&fixture("multi.docker.tar"), &[]);
    // A layer diff as a plain directory: one new file.
    let diff = tempfile::tempdir().unwrap();
    std::fs::create_dir(diff.path().join("etc")).unwrap();
    std::fs::write(diff.path().join("etc/committed"), "yes\n").unwrap();
    let d = diff.path().to_str().unwrap();
    let id = store.ok(&["commit", d, "--image", &base, "--plain", "-m", "x"]);
    let id = id.trim();
    assert_ne!(id, base);
    let to = format!("{}/p/committed:1", reg.host());
    store.ok(&["push", id, &to, "--tls-verify=false"]);
    assert_eq!(config_digest(&reg.raw_manifest("p/committed:1")), id);
    // Another tag in the same repository: every blob is there already.
    let again = format!("{}/p/committed:2", reg.host());
    let out = json(&store.ok(&["push", id, &again, "--tls-verify=false", "--json"]));
    assert_eq!(
        (out["uploaded"].as_u64(), out["present"].as_u64()),
        (Some(0), Some(5))
    );
    let other = TestStore::new();
    other.import(&fixture("multi.docker.tar"), &[]);
    let pulled = json(&other.ok(&["pull", &to, "--tls-verify=false", "--json"]));
    assert_eq!(pulled["id"], id);
    assert_eq!(pulled["downloaded"], 1, "the base layers were in the store");
    assert_eq!(
        other.ok(&["ls", &to, "/etc/committed", "-l"]),
        store.ok(&["ls", id, "/etc/committed", "-l"])
    );
}

/// `mount REF` and `bundle REF` pull an image the store does not have
/// (`--pull missing`, the default), then mount it as an import of the
/// same fixture mounts; `--pull never` refuses with the store's message
/// and downloads nothing; a stored image is not pulled again.
#[test]
fn mount_and_bundle_pull_a_missing_image_first() {
    if !tools_available() || !fuse_available() {
        return;
    }
    let reg = Registry::plain();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let r = format!("{}/t/multi:1", reg.host());
    let store = TestStore::new();
    let mnt = tempfile::tempdir().unwrap();
    let mp = mnt.path().to_str().unwrap();

    let err = store.fails(&["mount", &r, mp, "--pull", "never"]);
    assert!(err.contains("no image"), "{err}");
    assert_eq!(reg.layerfs_blob_gets(), 0);

    let out = store.run(&["mount", &r, mp, "--tls-verify=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mount::adopt(&store, mnt.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pulling"));
    let reference = TestStore::new();
    let id = reference.import(&fixture("multi.docker.tar"), &[]);
    let mr = Mount::new(&reference, &id, &[]);
    common::assert_same_tree(&r, &snapshot(&mr.dir), &snapshot(&m.dir), &[]);
    drop(m);
    let gets = reg.layerfs_blob_gets();
    assert!(gets > 0);

    // Stored now: a bundle of it pulls nothing more.
    let bundle = tempfile::tempdir().unwrap();
    let b = bundle.path().join("b");
    store.ok(&["bundle", &r, b.to_str().unwrap(), "--tls-verify=false"]);
    let _unmounted_if_this_fails = common::LazyUnmount(b.join("rootfs"));
    assert!(b.join("rootfs/bin/busybox").exists());
    store.ok(&["bundle", "--umount", b.to_str().unwrap()]);
    assert_eq!(
        reg.layerfs_blob_gets(),
        gets,
        "the stored image was pulled again"
    );
}

#[test]
fn pull_stops_a_layer_past_max_layer_size_and_leaves_the_store() {
    if !tools_available() {
        return;
    }
    let reg = Registry::plain();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let store = TestStore::new();
    store.import(&fixture("edge.docker.tar"), &[]);
    let before = store.fingerprint();
    let r = format!("{}/t/multi:1", reg.host());
    let err = store.fails(&["pull", &r, "--tls-verify=false", "--max-layer-size", "4K"]);
    assert!(
        err.contains(&r)
            && err.contains("layer 0 (")
            && err.contains("is larger than --max-layer-size (4.0 KiB"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
    assert!(store_tmp_is_empty(&store));
    // Without the limit the same pull works.
    store.ok(&["pull", &r, "--tls-verify=false"]);
}

/// Requests in the registry's access log whose line contains every one of
/// `parts`.
fn access_log_count(reg: &Registry, parts: &[&str]) -> usize {
    ["registry.log", "registry.err"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(reg.dir.path().join(f))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// A fake registry for `push` (Python, no auth): uploads in chunks, the
/// second `PATCH` of the first upload keeps only the first half of its
/// body and is answered 416 (logged to `cut` in DIR); an upload's status
/// (`GET`) gives the bytes it holds in `Range`; a `PUT` that closes an
/// upload checks the digest of what it holds (400 if wrong) and writes the
/// blob to DIR/<hex>; manifests are taken as they come.
const FAKE_PUSH: &str = r#"
import hashlib, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port = int(sys.argv[1]); out = sys.argv[2]
uploads = {}; blobs = set(); state = {"n": 0, "patches": 0, "cut": False}
class H(BaseHTTPRequestHandler):
    def send(self, code, extra={}, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items(): self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
    def status(self, u, code):
        h = {"Location": "/v2/y/blobs/uploads/%s" % u, "Docker-Upload-UUID": u}
        if uploads[u]: h["Range"] = "0-%d" % (len(uploads[u]) - 1)
        self.send(code, h)
    def do_GET(self):
        if self.path == "/v2/": return self.send(200, body=b"{}")
        u = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/v2/y/blobs/uploads/") and u in uploads: return self.status(u, 204)
        self.send(404)
    def do_HEAD(self):
        hexd = self.path.rsplit("sha256:", 1)[-1]
        self.send(200 if hexd in blobs else 404)
    def do_POST(self):
        self.body()
        if self.path.startswith("/v2/y/blobs/uploads/"):
            state["n"] += 1; u = str(state["n"]); uploads[u] = b""
            return self.status(u, 202)
        self.send(404)
    def do_PATCH(self):
        b = self.body(); u = self.path.rsplit("/", 1)[-1]
        if u not in uploads: return self.send(404)
        first = int(self.headers["Content-Range"].split("-")[0])
        if first != len(uploads[u]): return self.status(u, 416)
        state["patches"] += 1
        if state["patches"] == 2 and not state["cut"]:
            state["cut"] = True
            uploads[u] += b[: len(b) // 2]
            with open(os.path.join(out, "cut"), "a") as f: f.write("%d %d\n" % (first, len(b)))
            return self.send(416)
        uploads[u] += b
        self.status(u, 202)
    def do_PUT(self):
        b = self.body()
        if self.path.startswith("/v2/y/manifests/"): return self.send(201)
        path, _, q = self.path.partition("?")
        u = path.rsplit("/", 1)[-1]
        if u not in uploads: return self.send(404)
        data = uploads.pop(u) + b
        want = q.split("digest=sha256%3A", 1)[-1]
        if hashlib.sha256(data).hexdigest() != want: return self.send(400)
        blobs.add(want)
        open(os.path.join(out, want), "wb").write(data)
        self.send(201)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A chunk the registry took only part of (and refused): push asks where
/// the upload stands and sends the rest from the offset the registry's
/// `Range` gives; every blob arrives whole (the fake checks each digest).
#[test]
fn a_chunk_the_registry_took_in_part_is_sent_on_from_its_range() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake_push.py");
    std::fs::write(&script, FAKE_PUSH).unwrap();
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(dir.path())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, &dir.path().join("err"));
    let fake = Fake {
        child,
        port,
        ids: Vec::new(),
    };
    let store = TestStore::new();
    let id = store.import(&fixture("edge.docker.tar"), &[]);
    let dest = format!("127.0.0.1:{}/y:v1", fake.port);
    let out = store.run(&[
        "-v",
        "push",
        &id,
        &dest,
        "--chunk-size",
        "16K",
        "--tls-verify=false",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The second chunk of the first layer: 16 KiB sent, 8 KiB kept.
    let cut = std::fs::read_to_string(dir.path().join("cut")).unwrap();
    assert_eq!(cut.trim(), "16384 16384");
    assert!(
        err.contains("did not land; going on from byte 24576"),
        "{err}"
    );
    // Every layer and the config arrived, each checked against its digest.
    assert!(dir.path().join(&id).exists(), "the config did not arrive");
    let cfg = json(&store.ok(&["inspect", &id]));
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert!(!diff_ids.is_empty());
    for d in diff_ids {
        let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        assert!(dir.path().join(hex).exists(), "layer {hex} did not arrive");
    }
    drop(fake);
}

#[test]
fn chunked_uploads_and_cross_repository_mounts() {
    if !tools_available() {
        return;
    }
    for reg in [Registry::plain(), Registry::tls_auth()] {
        let host = reg.host();
        let creds: Vec<String> = reg
            .creds
            .map(|_| vec![format!("--creds={}", reg.creds_arg())])
            .unwrap_or_default();
        let with = |args: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            v.push("--tls-verify=false".into());
            v.extend(creds.iter().cloned());
            v
        };
        let store = TestStore::new();
        let id = store.import(&fixture("edge.docker.tar"), &[]);
        // 16 KiB chunks: the 240 KiB layer goes up in 15 PATCHes.
        let chunked = format!("{host}/p/chunked:v1");
        let args = with(&["push", &id, &chunked, "--chunk-size", "16K", "--json"]);
        let out = json(&store.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(out["uploaded"], 5, "{out}");
        assert_eq!(out["mounted"], 0, "{out}");
        let patches = access_log_count(&reg, &["\"PATCH /v2/p/chunked/blobs/uploads/"]);
        assert!(patches >= 15, "{patches} PATCH requests");
        assert_eq!(config_digest(&reg.raw_manifest("p/chunked:v1")), id);
        // Pulled back: the same image, the same tree.
        let back = TestStore::new();
        let args = with(&["pull", "-q", &chunked]);
        assert_eq!(
            back.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .trim(),
            id
        );
        same_mounted_tree(&store, &back, &id);
        // The pulled image is tagged with p/chunked: a push of it to
        // another repository of the same registry mounts its layers from
        // there (only the config goes up).
        let other = format!("{host}/q/other:v1");
        let args = with(&["push", &id, &other, "--json"]);
        let out = json(&back.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(out["mounted"], 4, "{out}");
        assert_eq!(out["uploaded"], 1, "the config: {out}");
        assert!(
            access_log_count(
                &reg,
                &[
                    "\"POST /v2/q/other/blobs/uploads/?mount=sha256",
                    "from=p%2Fchunked"
                ]
            ) >= 4
        );
        assert_eq!(config_digest(&reg.raw_manifest("q/other:v1")), id);
        let third = TestStore::new();
        let args = with(&["pull", "-q", &other]);
        assert_eq!(
            third
                .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .trim(),
            id
        );
        same_mounted_tree(&store, &third, &id);
    }
}

/// `layerfs ARGS` in `store` with `HOME` and `XDG_CACHE_HOME` in `home`
/// (no user registries.conf or aliases from the machine), and `RUST_LOG`
/// at info (which source served a pull is logged): (success, stdout,
/// stderr).
fn run_at_home(store: &TestStore, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = store
        .cmd()
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("CONTAINERS_REGISTRIES_CONF")
        .env("RUST_LOG", "layerfs=info")
        .output()
        .expect("running layerfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Requests by layerfs in `reg`'s access log whose line has `part`.
fn layerfs_requests(reg: &Registry, part: &str) -> usize {
    access_log_count(reg, &[part, "layerfs/"])
}

/// registries.conf mirrors: the registry's location is unreachable, its
/// first mirror lacks the image (404), the second has it: the pull comes
/// from the second (its access log), is tagged with the name the user
/// gave, and `insecure = true` stands for --tls-verify=false. A push to
/// the same name never goes to a mirror.
#[test]
fn a_mirror_serves_a_pull_when_the_registry_is_unreachable() {
    if !tools_available() {
        return;
    }
    let empty = Registry::plain();
    let good = Registry::plain();
    good.put("multi.docker.tar", "t/multi:1", &[]);
    let primary = format!("127.0.0.1:{}", free_port());
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{primary}\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            empty.host(),
            good.host()
        ),
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();
    let store = TestStore::new();
    let r = format!("{primary}/t/multi:1");
    let (ok, out, err) = run_at_home(
        &store,
        home.path(),
        &["pull", &r, "--registries-conf", conf_arg, "--json", "-q"],
    );
    assert!(ok, "{err}");
    let out = json(&out);
    assert_eq!(out["reference"], r.as_str());
    assert_eq!(out["source"], format!("{}/t/multi:1", good.host()).as_str());
    assert!(
        err.contains(&format!(
            "pulling from {}/t/multi:1 (a mirror)",
            good.host()
        )),
        "{err}"
    );
    assert_eq!(
        layerfs_requests(&empty, "\"GET /v2/t/multi/manifests/1"),
        1,
        "the first mirror was asked first"
    );
    assert!(layerfs_requests(&good, "\"GET /v2/t/multi/manifests/1") >= 1);
    assert!(good.layerfs_blob_gets() > 0);
    assert_eq!(empty.layerfs_blob_gets(), 0);
    let reference = TestStore::new();
    let id = reference.import(&fixture("multi.docker.tar"), &[]);
    assert_eq!(out["id"], id.as_str());
    // Tagged with the name asked for, not the mirror's.
    assert_eq!(out["tag"], r.as_str());
    store.ok(&["inspect", &r]);

    // A push goes to the registry itself (unreachable), not a mirror.
    let (ok, _, err) = run_at_home(
        &store,
        home.path(),
        &["push", &id, &r, "--registries-conf", conf_arg],
    );
    assert!(!ok && err.contains(&primary), "{err}");
    assert_eq!(layerfs_requests(&good, "\"POST /v2/"), 0);
    assert_eq!(layerfs_requests(&empty, "\"POST /v2/"), 0);
}

/// A registry blocked in registries.conf: pull and push are refused
/// naming the file, and the registry sees no request from layerfs.
#[test]
fn a_blocked_registry_is_refused() {
    if !tools_available() {
        return;
    }
    let reg = Registry::plain();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\nblocked = true\n",
            reg.host()
        ),
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let before = store.fingerprint();
    let r = format!("{}/t/multi:1", reg.host());
    for args in [
        vec![
            "pull",
            &r,
            "--tls-verify=false",
            "--registries-conf",
            conf_arg,
        ],
        vec![
            "push",
            &id,
            &r,
            "--tls-verify=false",
            "--registries-conf",
            conf_arg,
        ],
    ] {
        let (ok, _, err) = run_at_home(&store, home.path(), &args);
        assert!(
            !ok && err.contains(&r) && err.contains("is blocked") && err.contains(conf_arg),
            "{args:?}: {err}"
        );
    }
    assert_eq!(access_log_count(&reg, &["layerfs/"]), 0);
    assert_eq!(store.fingerprint(), before);
    // $CONTAINERS_REGISTRIES_CONF is read the same way.
    let out = store
        .cmd()
        .args(["pull", &r, "--tls-verify=false"])
        .env("HOME", home.path())
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is blocked"));
}

/// Short names: through `unqualified-search-registries` to a registry on
/// 127.0.0.1 (one candidate: no ambiguity even when enforcing), through an
/// alias in a drop-in of `FILE.d` (a later drop-in overriding an earlier
/// one), and refused when enforcing with two candidates, listing them.
#[test]
fn short_names_resolve_through_search_registries_and_aliases() {
    if !tools_available() {
        return;
    }
    let reg = Registry::plain();
    reg.put("multi.docker.tar", "t/multi:1", &[]);
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("registries.conf");
    let host = reg.host();
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = [\"{host}\"]\nshort-name-mode = \"enforcing\"\n\n\
             [[registry]]\nlocation = \"{host}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let d = home.path().join("registries.conf.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("10-aliases.conf"),
        "[aliases]\n\"layerfs-test-multi\" = \"quay.io/nowhere/multi\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("20-aliases.conf"),
        format!("[aliases]\n\"layerfs-test-multi\" = \"{host}/t/multi\"\n"),
    )
    .unwrap();
    std::fs::write(d.join("30-ignored.txt"), "not toml [[[").unwrap();
    let conf_arg = conf.to_str().unwrap();
    let store = TestStore::new();
    let want = format!("{host}/t/multi:1");

    let (ok, out, err) = run_at_home(
        &store,
        home.path(),
        &[
            "pull",
            "t/multi:1",
            "--registries-conf",
            conf_arg,
            "--json",
            "-q",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(json(&out)["reference"], want.as_str());
    assert!(err.contains("unqualified-search-registries"), "{err}");

    let (ok, out, err) = run_at_home(
        &store,
        home.path(),
        &[
            "pull",
            "layerfs-test-multi:1",
            "--registries-conf",
            conf_arg,
            "--json",
            "-q",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(json(&out)["reference"], want.as_str());
    assert!(err.contains("20-aliases.conf"), "{err}");

    // mount and bundle find the image under its resolved name: no pull.
    if fuse_available() {
        let blobs = reg.layerfs_blob_gets();
        let manifests = layerfs_requests(&reg, "/manifests/");
        let bundle = tempfile::tempdir().unwrap();
        let b = bundle.path().join("b");
        let (ok, _, err) = run_at_home(
            &store,
            home.path(),
            &[
                "bundle",
                "layerfs-test-multi:1",
                b.to_str().unwrap(),
                "--registries-conf",
                conf_arg,
            ],
        );
        let _unmounted_if_this_fails = common::LazyUnmount(b.join("rootfs"));
        assert!(ok, "{err}");
        assert!(b.join("rootfs/bin/busybox").exists());
        store.ok(&["bundle", "--umount", b.to_str().unwrap()]);
        assert_eq!(reg.layerfs_blob_gets(), blobs);
        assert_eq!(layerfs_requests(&reg, "/manifests/"), manifests);
    }

    // Two search registries under enforcing: refused, listing both, with
    // no request made.
    let gets = access_log_count(&reg, &["layerfs/"]);
    std::fs::write(
        d.join("40-search.conf"),
        format!("unqualified-search-registries = [\"127.0.0.1:1\", \"{host}\"]\n"),
    )
    .unwrap();
    let (ok, _, err) = run_at_home(
        &store,
        home.path(),
        &["pull", "t/multi:1", "--registries-conf", conf_arg],
    );
    assert!(
        !ok && err.contains(&want)
            && err.contains("127.0.0.1:1/t/multi:1")
            && err.contains("enforcing"),
        "{err}"
    );
    assert_eq!(access_log_count(&reg, &["layerfs/"]), gets);
    // Permissive: tried in order; the first is not there, the second
    // serves it.
    std::fs::write(d.join("50-mode.conf"), "short-name-mode = \"permissive\"\n").unwrap();
    let (ok, out, err) = run_at_home(
        &store,
        home.path(),
        &[
            "pull",
            "t/multi:1",
            "--registries-conf",
            conf_arg,
            "--json",
            "-q",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(json(&out)["reference"], want.as_str());

    // A bad drop-in fails naming its file and line.
    std::fs::write(d.join("60-bad.conf"), "\n[[registry]]\ninsecure = 1\n").unwrap();
    let (ok, _, err) = run_at_home(
        &store,
        home.path(),
        &["pull", "t/multi:1", "--registries-conf", conf_arg],
    );
    assert!(!ok && err.contains("60-bad.conf:3:"), "{err}");
}
