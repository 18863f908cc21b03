//! Pure: credentials and authentication challenges. The `WWW-Authenticate`
//! grammar (RFC 7235: a scheme, then `key="value"` parameters) as registries
//! send it, the auth files podman and docker write
//! (`{"auths": {"HOST": {"auth": base64("USER:PASS")}}}`), the credential
//! helpers they name (`credHelpers`, `credsStore`), and the messages of
//! the docker-credential-helpers protocol (running a helper is
//! [`super::helper`]'s).

use base64::Engine;
use serde_json::Value;

/// A user name and password (or token, as `docker login` stores it).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password or personal access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

/// The user name a credential helper answers with when its secret is an
/// identity token (an OAuth2 refresh token) rather than a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credentials {
    /// Is the password an identity token, for a token server's OAuth2
    /// `refresh_token` grant ([`IDENTITY_TOKEN_USER`])?
    pub fn is_identity_token(&self) -> bool {
        self.user == IDENTITY_TOKEN_USER
    }

    /// `USER:PASS` as `--creds` takes it (the password may hold ':').
    pub fn parse(s: &str) -> Result<Credentials, String> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                user: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err("--creds wants USER:PASSWORD".to_string()),
        }
    }

    /// The `Authorization` value of HTTP Basic authentication.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// One authentication challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`basic`, `bearer`).
    pub scheme: String,
    /// The parameters (`realm`, `service`, `scope`...), keys lower-cased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value: one or more challenges, each a scheme
/// followed by comma-separated `key=value` or `key="quoted \" value"`
/// parameters. A malformed tail ends the parse; what came before is kept.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            break;
        }
        // `word=` starts a parameter of the current challenge; a bare word
        // starts a new challenge.
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            let Some(cur) = out.last_mut() else { break };
            i = j + 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                let mut closed = false;
                while i < b.len() {
                    let c = header[i..].chars().next().expect("in bounds");
                    i += c.len_utf8();
                    match c {
                        '\\' if i < b.len() => {
                            let n = header[i..].chars().next().expect("in bounds");
                            i += n.len_utf8();
                            v.push(n);
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                if !closed {
                    break;
                }
                v
            } else {
                token(&mut i)
            };
            cur.params.push((word.to_ascii_lowercase(), value));
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// The token of a token server's JSON answer (`token`, or OAuth2's
/// `access_token`).
pub fn token_of(answer: &Value) -> Option<&str> {
    answer
        .get("token")
        .or_else(|| answer.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// The registry an auth-file key names: `https://index.docker.io/v1/`
/// and `registry-1.docker.io` are `docker.io`; a scheme and a trailing
/// `/v1/`, `/v2/` or `/` are dropped. A key may also name
/// `registry/namespace` (podman), kept as is.
fn normalize_auth_key(k: &str) -> String {
    let mut s = k.trim();
    for p in ["https://", "http://"] {
        if let Some(r) = s.strip_prefix(p) {
            s = r;
        }
    }
    for suf in ["/v1/", "/v2/", "/v1", "/v2", "/"] {
        if let Some(r) = s.strip_suffix(suf) {
            s = r;
            break;
        }
    }
    let (host, rest) = match s.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_string(),
    }
}

/// The credentials an auth file (its JSON text) holds for `repository` on
/// `registry`: the longest matching `registry/namespace` key first, then
/// `registry` itself (podman's lookup order). `Ok(None)` when the file has
/// no entry; an entry that does not decode is an error. An entry's
/// `identitytoken` (docker's) is used over its `auth`, as an identity
/// token ([`IDENTITY_TOKEN_USER`]).
pub fn lookup_auth(
    file_text: &str,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>, String> {
    let v: Value = serde_json::from_str(file_text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(auths) = v.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut wanted: Vec<String> = Vec::new();
    let parts: Vec<&str> = repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        wanted.push(format!("{registry}/{}", parts[..n].join("/")));
    }
    wanted.push(registry.to_string());
    for w in &wanted {
        for (k, entry) in auths {
            if normalize_auth_key(k) != *w {
                continue;
            }
            // docker keeps an identity token beside (or instead of) `auth`.
            if let Some(t) = entry
                .get("identitytoken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                return Ok(Some(Credentials {
                    user: IDENTITY_TOKEN_USER.to_string(),
                    password: t.to_string(),
                }));
            }
            let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
                continue;
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("the entry for {k:?} is not base64: {e}"))?;
            let raw =
                String::from_utf8(raw).map_err(|_| format!("the entry for {k:?} is not UTF-8"))?;
            return Credentials::parse(&raw)
                .map(Some)
                .map_err(|_| format!("the entry for {k:?} is not USER:PASSWORD"));
        }
    }
    Ok(None)
}

/// An auth file's text with the entry of `registry` set to `creds`
/// (login) or removed (`None`, logout); every other entry and field is
/// kept. `text` is the file as it is (`None`: no file yet). `Ok(None)` from
/// a logout means there was no entry.
pub fn edit_auth(
    text: Option<&str>,
    registry: &str,
    creds: Option<&Credentials>,
) -> Result<Option<String>, String> {
    let mut v: Value = match text {
        Some(t) if !t.trim().is_empty() => {
            serde_json::from_str(t).map_err(|e| format!("not valid JSON: {e}"))?
        }
        _ => serde_json::json!({}),
    };
    let root = v.as_object_mut().ok_or("not a JSON object")?;
    let auths = root
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or("\"auths\" is not an object")?;
    // Every key that names this registry (docker writes Docker Hub as
    // https://index.docker.io/v1/).
    let keys: Vec<String> = auths
        .keys()
        .filter(|k| normalize_auth_key(k) == registry)
        .cloned()
        .collect();
    match creds {
        Some(c) => {
            let raw = format!("{}:{}", c.user, c.password);
            let entry = serde_json::json!({
                "auth": base64::engine::general_purpose::STANDARD.encode(raw)
            });
            for k in &keys {
                auths.remove(k);
            }
            auths.insert(registry.to_string(), entry);
        }
        None => {
            if keys.is_empty() {
                return Ok(None);
            }
            for k in &keys {
                auths.remove(k);
            }
        }
    }
    Ok(Some(serde_json::to_string_pretty(&v).expect("json") + "\n"))
}

/// A credential helper an auth file names: the program
/// `docker-credential-NAME` on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// The suffix after `docker-credential-`.
    pub name: String,
    /// Named by `credsStore` (docker's default store for every registry),
    /// not by a `credHelpers` entry for this registry.
    pub default_store: bool,
}

impl Helper {
    /// The program to run.
    pub fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    /// The server URL the helper is asked about for `registry`: the
    /// registry itself (`host[:port]`, as podman asks its `credHelpers`),
    /// except Docker Hub in docker's default store, which `docker login`
    /// fills under `https://index.docker.io/v1/`.
    pub fn server_url(&self, registry: &str) -> String {
        if self.default_store && registry == "docker.io" {
            "https://index.docker.io/v1/".to_string()
        } else {
            registry.to_string()
        }
    }
}

/// Where an auth file says the credentials of a registry are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// With a credential helper: the file's own entries for the registry
    /// are not used (containers-auth.json(5)).
    Helper(Helper),
    /// In the file's `auths`.
    File(Credentials),
    /// The file says nothing of this registry.
    Nothing,
}

/// Where an auth file (its JSON text) keeps the credentials for
/// `repository` on `registry`: a `credHelpers` entry for the registry
/// first (its key is a registry, `host[:port]`, spelt as `auths` keys may
/// be), else the file's `auths` entry ([`lookup_auth`]), unless a
/// `credsStore` names a default helper, which then answers for every
/// registry without an entry of its own in `credHelpers` (docker's rule:
/// the file's `auths` are then only placeholders).
pub fn source_for(file_text: &str, registry: &str, repository: &str) -> Result<Source, String> {
    if let Some(h) = helper_for(file_text, registry)? {
        return Ok(Source::Helper(h));
    }
    Ok(match lookup_auth(file_text, registry, repository)? {
        Some(c) => Source::File(c),
        None => Source::Nothing,
    })
}

/// The credential helper an auth file names for `registry`
/// (`credHelpers`, else `credsStore`), if any. A name that is not a
/// plain program-name suffix is an error.
pub fn helper_for(file_text: &str, registry: &str) -> Result<Option<Helper>, String> {
    let v: Value = serde_json::from_str(file_text).map_err(|e| format!("not valid JSON: {e}"))?;
    let check = |what: &str, n: &Value| -> Result<String, String> {
        match n.as_str() {
            Some(n)
                if !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Ok(n.to_string())
            }
            _ => Err(format!(
                "{what} names no credential helper a program docker-credential-NAME can be ({n})"
            )),
        }
    };
    if let Some(helpers) = v.get("credHelpers") {
        let helpers = helpers
            .as_object()
            .ok_or("\"credHelpers\" is not an object")?;
        for (k, n) in helpers {
            if normalize_auth_key(k) == registry {
                return Ok(Some(Helper {
                    name: check(&format!("credHelpers {k:?}"), n)?,
                    default_store: false,
                }));
            }
        }
    }
    match v.get("credsStore") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(n) => Ok(Some(Helper {
            name: check("credsStore", n)?,
            default_store: true,
        })),
    }
}

/// What a helper's `get` prints when it has nothing for the server
/// (docker-credential-helpers' `ErrCredentialsNotFound`), with a
/// non-zero exit status.
pub const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// Does a helper's failing output say it has no credentials (rather than
/// that it failed)?
pub fn helper_has_none(output: &str) -> bool {
    output.contains(HELPER_NOT_FOUND)
}

/// The credentials in a helper's answer to `get`:
/// `{"ServerURL": ..., "Username": ..., "Secret": ...}`. A `Username` of
/// [`IDENTITY_TOKEN_USER`] makes `Secret` an identity token.
pub fn parse_helper_get(answer: &str) -> Result<Credentials, String> {
    let v: Value = serde_json::from_str(answer.trim())
        .map_err(|e| format!("its answer to get is not JSON ({e})"))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let (user, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Err("its answer to get has no Secret".to_string());
    }
    if user.is_empty() {
        return Err("its answer to get has no Username".to_string());
    }
    Ok(Credentials {
        user: user.to_string(),
        password: secret.to_string(),
    })
}

/// The input of a helper's `store`: the credentials of `server_url`.
pub fn helper_store_input(server_url: &str, c: &Credentials) -> String {
    serde_json::json!({
        "ServerURL": server_url,
        "Username": c.user,
        "Secret": c.password,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn login_and_logout_edit_only_their_entry() {
        let c = Credentials::parse("me:pw").unwrap();
        let t = edit_auth(None, "reg:5000", Some(&c)).unwrap().unwrap();
        assert_eq!(lookup_auth(&t, "reg:5000", "a/b").unwrap(), Some(c.clone()));
        let other = serde_json::json!({"auths": {"quay.io": {"auth": "cTp4"}},
            "credHelpers": {"gcr.io": "gcloud"}})
        .to_string();
        let t = edit_auth(Some(&other), "docker.io", Some(&c))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["auths"]["quay.io"]["auth"], "cTp4");
        assert_eq!(v["credHelpers"]["gcr.io"], "gcloud");
        assert_eq!(
            lookup_auth(&t, "docker.io", "library/x")
                .unwrap()
                .unwrap()
                .user,
            "me"
        );
        // Logout removes docker's spelling of Docker Hub too.
        let hub = serde_json::json!({"auths": {"https://index.docker.io/v1/": {"auth": "eDp5"}}})
            .to_string();
        let t = edit_auth(Some(&hub), "docker.io", None).unwrap().unwrap();
        assert_eq!(lookup_auth(&t, "docker.io", "library/x").unwrap(), None);
        assert_eq!(edit_auth(Some(&t), "docker.io", None).unwrap(), None);
        assert!(edit_auth(Some("[1]"), "x", None).is_err());
        assert!(edit_auth(Some("{"), "x", None).is_err());
    }

    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/alpine:pull"));
        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        // Two challenges, unquoted values, an escaped quote, spaces.
        let c = parse_challenges(
            r#"Basic realm=x, Bearer realm = "a\"b,c" , error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].param("realm"), Some("x"));
        assert_eq!(c[1].param("realm"), Some("a\"b,c"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        // Malformed: an unterminated quote or a parameter before a scheme.
        assert_eq!(parse_challenges(r#"Bearer realm="x"#)[0].params, vec![]);
        assert!(parse_challenges("=x").is_empty());
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn tokens_are_read_from_either_field() {
        let v: Value = serde_json::json!({"token": "t1", "access_token": "t2"});
        assert_eq!(token_of(&v), Some("t1"));
        let v: Value = serde_json::json!({"access_token": "t2"});
        assert_eq!(token_of(&v), Some("t2"));
        assert_eq!(token_of(&serde_json::json!({"token": ""})), None);
    }

    #[test]
    fn creds_split_at_the_first_colon() {
        let c = Credentials::parse("me:pa:ss").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("me", "pa:ss"));
        assert!(Credentials::parse("nopass").is_err());
        assert!(Credentials::parse(":x").is_err());
        // RFC 7617's example.
        let c = Credentials::parse("Aladdin:open sesame").unwrap();
        assert_eq!(c.basic_header(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(!format!("{c:?}").contains("sesame"));
    }

    #[test]
    fn auth_files_are_looked_up_like_podman() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let file = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b("hub:1")},
            "quay.io": {"auth": b("q:2")},
            "quay.io/team": {"auth": b("team:3")},
            "localhost:5000": {"auth": b("l:4")},
            "broken.io": {"auth": "%%%"},
        }})
        .to_string();
        let get = |r: &str, repo: &str| lookup_auth(&file, r, repo).unwrap().map(|c| c.user);
        assert_eq!(get("docker.io", "library/alpine").as_deref(), Some("hub"));
        assert_eq!(get("quay.io", "other/x").as_deref(), Some("q"));
        assert_eq!(get("quay.io", "team/x").as_deref(), Some("team"));
        assert_eq!(get("localhost:5000", "a").as_deref(), Some("l"));
        assert_eq!(get("ghcr.io", "a"), None);
        assert!(lookup_auth(&file, "broken.io", "a").is_err());
        // docker's identity token, over the entry's auth.
        let file = serde_json::json!({"auths": {
            "reg:5000": {"auth": b("u:p"), "identitytoken": "refresh"},
            "other": {"identitytoken": ""},
        }})
        .to_string();
        let c = lookup_auth(&file, "reg:5000", "a").unwrap().unwrap();
        assert!(c.is_identity_token() && c.password == "refresh");
        assert_eq!(lookup_auth(&file, "other", "a").unwrap(), None);
        assert_eq!(lookup_auth("{}", "x", "y").unwrap(), None);
        assert!(lookup_auth("not json", "x", "y").is_err());
    }

    #[test]
    fn a_credential_helper_wins_over_the_files_own_entries() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let file = serde_json::json!({
            "auths": {
                "reg.example:5000": {"auth": b("file:1")},
                "quay.io": {"auth": b("q:2")},
            },
            "credHelpers": {"reg.example:5000": "test", "https://gcr.io": "gcloud"},
        })
        .to_string();
        let helper = |name: &str, default_store| {
            Source::Helper(Helper {
                name: name.to_string(),
                default_store,
            })
        };
        // A credHelpers entry: its helper, not the auths entry.
        assert_eq!(
            source_for(&file, "reg.example:5000", "a/b").unwrap(),
            helper("test", false)
        );
        // Keys are spelt as auths keys may be.
        assert_eq!(
            source_for(&file, "gcr.io", "p/x").unwrap(),
            helper("gcloud", false)
        );
        // No helper for the registry: the auths entry, or nothing.
        let Source::File(c) = source_for(&file, "quay.io", "x").unwrap() else {
            panic!("quay.io is in auths")
        };
        assert_eq!(c.user, "q");
        assert_eq!(source_for(&file, "ghcr.io", "x").unwrap(), Source::Nothing);

        // credsStore answers for every registry without a credHelpers
        // entry, over the auths entries (docker's placeholders).
        let mut v: Value = serde_json::from_str(&file).unwrap();
        v["credsStore"] = "pass".into();
        let file = v.to_string();
        assert_eq!(
            source_for(&file, "quay.io", "x").unwrap(),
            helper("pass", true)
        );
        assert_eq!(
            source_for(&file, "ghcr.io", "x").unwrap(),
            helper("pass", true)
        );
        assert_eq!(
            source_for(&file, "reg.example:5000", "x").unwrap(),
            helper("test", false)
        );
        // An empty credsStore is none; a name that is no program suffix
        // is an error, as is a credHelpers that is no object.
        assert_eq!(helper_for(r#"{"credsStore": ""}"#, "x").unwrap(), None);
        assert!(helper_for(r#"{"credsStore": "../../bin/sh"}"#, "x").is_err());
        assert!(helper_for(r#"{"credHelpers": {"x": 1}}"#, "x").is_err());
        assert!(helper_for(r#"{"credHelpers": {"y": ""}}"#, "y").is_err());
        assert!(helper_for(r#"{"credHelpers": []}"#, "x").is_err());
        assert_eq!(
            helper_for(r#"{"credHelpers": {"y": "n"}}"#, "x").unwrap(),
            None
        );
    }

    #[test]
    fn helpers_are_asked_about_the_registry_and_docker_hub_as_docker_stores_it() {
        let h = |default_store| Helper {
            name: "test".to_string(),
            default_store,
        };
        assert_eq!(h(false).program(), "docker-credential-test");
        assert_eq!(h(false).server_url("reg:5000"), "reg:5000");
        assert_eq!(h(true).server_url("reg:5000"), "reg:5000");
        assert_eq!(h(false).server_url("docker.io"), "docker.io");
        assert_eq!(
            h(true).server_url("docker.io"),
            "https://index.docker.io/v1/"
        );
    }

    #[test]
    fn helper_answers_parse_as_the_protocol_has_them() {
        let c =
            parse_helper_get(r#"{"ServerURL":"reg:5000","Username":"me","Secret":"pw"}"#).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("me", "pw"));
        assert!(!c.is_identity_token());
        let c = parse_helper_get(r#"{"Username":"<token>","Secret":"refresh"}"#).unwrap();
        assert!(c.is_identity_token());
        assert!(parse_helper_get(r#"{"Username":"me","Secret":""}"#).is_err());
        assert!(parse_helper_get(r#"{"Secret":"x"}"#).is_err());
        assert!(parse_helper_get("credentials not found in native keychain").is_err());
        assert!(helper_has_none(
            "credentials not found in native keychain\n"
        ));
        assert!(!helper_has_none("permission denied"));
        let input: Value = serde_json::from_str(&helper_store_input(
            "reg:5000",
            &Credentials::parse("me:p\"w").unwrap(),
        ))
        .unwrap();
        assert_eq!(
            input,
            serde_json::json!({"ServerURL": "reg:5000", "Username": "me", "Secret": "p\"w"})
        );
    }
}
