//! containers-registries.conf(5), version 2, as podman reads it: the
//! pure part (no I/O). [`Config::parse`] reads one file, [`Config::merge`]
//! lays a drop-in over what came before (`[[registry]]` tables replace
//! those of the same prefix, `[aliases]` entries replace those of the same
//! name, `unqualified-search-registries` and `short-name-mode` replace the
//! earlier ones when given), and [`Config::resolve_pull`] turns what the
//! user typed into the names to try (short-name resolution: an alias, else
//! the unqualified-search registries in the short-name mode), each with
//! its pull sources in order (the mirrors the reference may use, then the
//! primary location), or a clear error (a blocked registry, an ambiguous
//! short name under `enforcing`). layerfs never prompts: `enforcing` with
//! several candidates fails, listing them. Long file: over half of it is
//! the unit tests, kept next to the rules they check (the man page's
//! examples, each kind of bad file).
//!
//! Where no unqualified-search-registries is set at all, a short name
//! means Docker Hub, as it did before layerfs read these files and as
//! docker does (podman refuses it; Debian's default registries.conf sets
//! none, and that would break `layerfs pull alpine` on every host with
//! podman installed). An explicitly empty list
//! (`unqualified-search-registries = []`) refuses short names as podman does.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::oci::Reference;

/// How a short name with several candidate registries is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortNameMode {
    /// Fail (podman would prompt; layerfs never does).
    Enforcing,
    /// Try the candidates in order.
    Permissive,
    /// Try the candidates in order (podman: without recording aliases).
    Disabled,
}

/// When a mirror is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    /// For pulls by tag and by digest.
    #[default]
    All,
    /// Only for pulls by digest.
    DigestOnly,
    /// Only for pulls by tag.
    TagOnly,
}

/// A mirror of a `[[registry]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/namespace...]`.
    pub location: String,
    /// TLS unverified, plain HTTP allowed.
    pub insecure: bool,
    /// Which pulls may use it.
    pub pull_from: PullFromMirror,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// What references it applies to: `host[:port][/path...]`, or
    /// `*.example.com` (any subdomain).
    pub prefix: String,
    /// Where those references are pulled from (the prefix replaced by
    /// this); empty only with a wildcard prefix (the reference as it is).
    pub location: String,
    /// TLS unverified, plain HTTP allowed (as `--tls-verify=false`).
    pub insecure: bool,
    /// Refuse pulls and pushes.
    pub blocked: bool,
    /// Mirrors only for pulls by digest (the old, registry-wide switch).
    pub mirror_by_digest_only: bool,
    /// Tried in order before the location.
    pub mirrors: Vec<Mirror>,
    /// The file it came from, for messages.
    pub origin: String,
}

/// An alias: a short name's fully qualified name (no tag or digest), or
/// `None` where a later file reset it with `""`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alias {
    value: Option<String>,
    origin: String,
}

/// The registries configuration, merged from all its files.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// By prefix, sorted, each prefix once.
    pub registries: Vec<Registry>,
    /// `unqualified-search-registries`, if any file set it, and where.
    pub search: Option<(Vec<String>, String)>,
    /// `short-name-mode`, if any file set it (default: permissive, as
    /// containers/image).
    pub mode: Option<ShortNameMode>,
    aliases: BTreeMap<String, Alias>,
    /// The files read, in order, for messages.
    pub files: Vec<String>,
}

/// Where one pull may be served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The reference rewritten to the endpoint's location.
    pub reference: Reference,
    /// TLS unverified, plain HTTP allowed.
    pub insecure: bool,
    /// A mirror (else the primary location).
    pub mirror: bool,
}

/// One name a pull may resolve to, with where to pull it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The fully qualified name (the store tag comes from it).
    pub name: Reference,
    /// The sources in order; `Err` if its registry is blocked.
    pub sources: Result<Vec<Source>, String>,
}

/// What a pull reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The names to try, in order (several only for a short name under
    /// `permissive` or `disabled`).
    pub candidates: Vec<Candidate>,
    /// How a short name was resolved (for the log), if it was one.
    pub how: Option<String>,
}

// The file as TOML gives it.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    registry: Vec<Spanned<RawRegistry>>,
    unqualified_search_registries: Option<Vec<Spanned<String>>>,
    short_name_mode: Option<Spanned<String>>,
    aliases: Option<BTreeMap<String, Spanned<String>>>,
    // Version 1: `[registries.search] registries = [...]`, and
    // `insecure`, `block`.
    registries: Option<RawV1>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<Spanned<RawMirror>>,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// The line (1-based) of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A location or prefix with its trailing `/` dropped; a URL scheme is
/// refused, as containers/image does.
fn clean_location(s: &str) -> Result<String, String> {
    let t = s.trim_end_matches('/');
    if t.starts_with("http://") || t.starts_with("https://") {
        return Err(format!(
            "invalid location {s:?}: no URL scheme (host[:port][/path])"
        ));
    }
    Ok(t.to_string())
}

/// Is the first path component of `name` a registry host, by the rule
/// [`Reference::parse`] applies (a dot, a port, `localhost`, upper case)?
fn has_domain(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => {
            first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase())
        }
        None => false,
    }
}

/// `name` without its `:tag` and `@digest`, and whether it had either.
fn split_name(input: &str) -> (&str, &str) {
    let (named, _digest) = match input.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (input, None),
    };
    let name = match named.rfind(':') {
        Some(i) if !named[i..].contains('/') => &named[..i],
        _ => named,
    };
    (name, &input[name.len()..])
}

/// Is `s` a `host[:port]` as unqualified-search-registries takes it?
fn is_domain(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// How far `prefix` matches `reference` (its length there), or `None`: a
/// plain prefix must be followed by the end, `:`, `/` or `@`; a wildcard
/// `*.example.com` matches any subdomain of example.com in the host part.
fn prefix_match(reference: &str, prefix: &str) -> Option<usize> {
    let end = if let Some(domain) = prefix.strip_prefix('*') {
        let i = reference.find(domain)?;
        if reference[..i].contains('/') {
            return None;
        }
        i + domain.len()
    } else {
        if !reference.starts_with(prefix) {
            return None;
        }
        prefix.len()
    };
    match reference.as_bytes().get(end) {
        None | Some(b':' | b'/' | b'@') => Some(end),
        _ => None,
    }
}

fn parse_pull_from(s: &str) -> Result<PullFromMirror, String> {
    match s {
        "" | "all" => Ok(PullFromMirror::All),
        "digest-only" => Ok(PullFromMirror::DigestOnly),
        "tag-only" => Ok(PullFromMirror::TagOnly),
        v => Err(format!(
            "pull-from-mirror = {v:?}: it is \"all\", \"digest-only\" or \"tag-only\""
        )),
    }
}

impl Config {
    /// Parses one file (`origin` names it in messages and errors; a
    /// drop-in must be version 2). An error names the file and line.
    pub fn parse(text: &str, origin: &str, drop_in: bool) -> Result<Config, String> {
        let at = |span: std::ops::Range<usize>, msg: String| {
            format!("{origin}:{}: {msg}", line_of(text, span.start))
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            match line {
                Some(l) => format!("{origin}:{l}: {}", e.message().trim_end()),
                None => format!("{origin}: {}", e.message().trim_end()),
            }
        })?;
        let mut c = Config {
            files: vec![origin.to_string()],
            ..Config::default()
        };
        let v2 = !raw.registry.is_empty()
            || raw.unqualified_search_registries.is_some()
            || raw.short_name_mode.is_some()
            || raw.aliases.is_some();
        if let Some(v1) = raw.registries {
            if drop_in {
                return Err(format!(
                    "{origin}: a drop-in file must be in the version 2 format ([registries.*] is version 1)"
                ));
            }
            if v2 {
                return Err(format!(
                    "{origin}: mixes the version 1 format ([registries.*]) with version 2"
                ));
            }
            return Config::from_v1(v1, origin);
        }

        for spanned in raw.registry {
            let span = spanned.span();
            let r = spanned.into_inner();
            let e = |m: String| at(span.clone(), m);
            let location = clean_location(r.location.as_deref().unwrap_or("")).map_err(&e)?;
            let prefix = match r.prefix.as_deref() {
                None | Some("") => {
                    if location.is_empty() {
                        return Err(e("a [[registry]] needs a location or a prefix".into()));
                    }
                    location.clone()
                }
                Some(p) => {
                    let p = clean_location(p).map_err(&e)?;
                    if let Some(rest) = p.strip_prefix("*.") {
                        if rest.is_empty() || rest.contains(['/', '@', ':']) {
                            return Err(e(format!("prefix {p:?}: a wildcard prefix is *.example.com, with no port or path")));
                        }
                    } else if location.is_empty() {
                        return Err(e(format!(
                            "prefix {p:?}: a [[registry]] without a location needs a wildcard prefix (*.example.com)"
                        )));
                    }
                    p
                }
            };
            if r.pull_from_mirror.is_some() {
                return Err(e(format!(
                    "registry {prefix:?}: pull-from-mirror belongs in a [[registry.mirror]], not the registry"
                )));
            }
            let mut mirrors = Vec::new();
            for sm in r.mirror {
                let mspan = sm.span();
                let m = sm.into_inner();
                let me = |msg: String| at(mspan.clone(), msg);
                let loc = clean_location(m.location.as_deref().unwrap_or("")).map_err(&me)?;
                if loc.is_empty() {
                    return Err(me(format!(
                        "a mirror of registry {prefix:?} needs a location"
                    )));
                }
                if r.mirror_by_digest_only && m.pull_from_mirror.is_some() {
                    return Err(me(format!("registry {prefix:?} sets mirror-by-digest-only and its mirror {loc:?} pull-from-mirror: set one of them")));
                }
                let pull_from =
                    parse_pull_from(m.pull_from_mirror.as_deref().unwrap_or("")).map_err(&me)?;
                mirrors.push(Mirror {
                    location: loc,
                    insecure: m.insecure,
                    pull_from,
                });
            }
            // The first table of a prefix wins within a file.
            if c.registries.iter().any(|x| x.prefix == prefix) {
                continue;
            }
            if let Some(other) = c
                .registries
                .iter()
                .find(|x| !location.is_empty() && x.location == location)
            {
                if other.insecure != r.insecure || other.blocked != r.blocked {
                    return Err(e(format!(
                        "registry {location:?} is given twice with different insecure or blocked settings"
                    )));
                }
            }
            c.registries.push(Registry {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirror_by_digest_only: r.mirror_by_digest_only,
                mirrors,
                origin: origin.to_string(),
            });
        }
        c.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));

        if let Some(list) = raw.unqualified_search_registries {
            let mut out = Vec::new();
            for s in list {
                let span = s.span();
                let v = clean_location(s.get_ref()).map_err(|m| at(span.clone(), m))?;
                if !is_domain(&v) {
                    return Err(at(
                        span,
                        format!("unqualified-search-registries: {v:?} is not a host[:port]"),
                    ));
                }
                out.push(v);
            }
            c.search = Some((out, origin.to_string()));
        }
        if let Some(m) = raw.short_name_mode {
            c.mode = Some(match m.get_ref().as_str() {
                "enforcing" => ShortNameMode::Enforcing,
                "permissive" => ShortNameMode::Permissive,
                "disabled" => ShortNameMode::Disabled,
                v => {
                    return Err(at(
                        m.span(),
                        format!("short-name-mode = {v:?}: it is \"enforcing\", \"permissive\" or \"disabled\""),
                    ))
                }
            });
        }
        for (name, value) in raw.aliases.unwrap_or_default() {
            let span = value.span();
            let e = |m: String| at(span.clone(), format!("alias {name:?}: {m}"));
            let (bare, rest) = split_name(&name);
            if has_domain(&name) || !rest.is_empty() || Reference::parse(bare).is_err() {
                return Err(e(
                    "the name must be a short name (no registry, tag or digest)".into(),
                ));
            }
            let v = value.get_ref();
            let value = if v.is_empty() {
                None
            } else {
                let (vb, vrest) = split_name(v);
                if !has_domain(v) || !vrest.is_empty() {
                    return Err(e(format!(
                        "{v:?} must be a registry and repository, with no tag or digest"
                    )));
                }
                let r = Reference::parse(vb).map_err(&e)?;
                Some(format!("{}/{}", r.registry, r.repository))
            };
            c.aliases.insert(
                name,
                Alias {
                    value,
                    origin: origin.to_string(),
                },
            );
        }
        Ok(c)
    }

    /// A version 1 file as the version 2 it means.
    fn from_v1(v1: RawV1, origin: &str) -> Result<Config, String> {
        let mut c = Config {
            files: vec![origin.to_string()],
            ..Config::default()
        };
        let list = |l: Option<RawV1List>| l.map(|l| l.registries).unwrap_or_default();
        let mut get = |loc: &str| -> Result<usize, String> {
            let loc = clean_location(loc).map_err(|e| format!("{origin}: {e}"))?;
            if let Some(i) = c.registries.iter().position(|r| r.location == loc) {
                return Ok(i);
            }
            c.registries.push(Registry {
                prefix: loc.clone(),
                location: loc,
                insecure: false,
                blocked: false,
                mirror_by_digest_only: false,
                mirrors: Vec::new(),
                origin: origin.to_string(),
            });
            Ok(c.registries.len() - 1)
        };
        let (block, insecure) = (list(v1.block), list(v1.insecure));
        let mut marks = Vec::new();
        for b in &block {
            marks.push((get(b)?, true));
        }
        for i in &insecure {
            marks.push((get(i)?, false));
        }
        for (i, blocked) in marks {
            if blocked {
                c.registries[i].blocked = true;
            } else {
                c.registries[i].insecure = true;
            }
        }
        c.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        if let Some(s) = v1.search {
            c.search = Some((
                s.registries
                    .iter()
                    .map(|r| clean_location(r).map_err(|e| format!("{origin}: {e}")))
                    .collect::<Result<_, _>>()?,
                origin.to_string(),
            ));
        }
        Ok(c)
    }

    /// Lays `later` (a drop-in read after this) over this configuration.
    pub fn merge(&mut self, later: Config) {
        for r in later.registries {
            match self.registries.iter_mut().find(|x| x.prefix == r.prefix) {
                Some(x) => *x = r,
                None => self.registries.push(r),
            }
        }
        self.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        if later.search.is_some() {
            self.search = later.search;
        }
        if later.mode.is_some() {
            self.mode = later.mode;
        }
        self.aliases.extend(later.aliases);
        self.files.extend(later.files);
    }

    /// The files read, for messages (`(none)` when there were none).
    fn files_text(&self) -> String {
        if self.files.is_empty() {
            "(no registries.conf)".into()
        } else {
            self.files.join(", ")
        }
    }

    /// The `[[registry]]` whose prefix matches `reference` longest.
    pub fn find_registry(&self, reference: &str) -> Option<&Registry> {
        self.registries
            .iter()
            .filter(|r| prefix_match(reference, &r.prefix).is_some())
            .max_by_key(|r| r.prefix.len())
    }

    /// `blocked`'s message for `r`, or its registry entry (if any).
    fn not_blocked(&self, r: &Reference) -> Result<Option<&Registry>, String> {
        match self.find_registry(&r.to_string()) {
            Some(reg) if reg.blocked => Err(format!(
                "{r}: registry {} is blocked (blocked = true in {})",
                reg.prefix, reg.origin
            )),
            reg => Ok(reg),
        }
    }

    /// Where a pull of the fully qualified `r` may be served from, in
    /// order: the mirrors its kind of reference may use (by tag or by
    /// digest), then the primary location. An error if it is blocked.
    pub fn pull_sources(&self, r: &Reference) -> Result<Vec<Source>, String> {
        let Some(reg) = self.not_blocked(r)? else {
            return Ok(vec![Source {
                reference: r.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        let text = r.to_string();
        let end = prefix_match(&text, &reg.prefix).expect("the registry matched");
        let rewrite = |location: &str| -> Result<Reference, String> {
            if location.is_empty() {
                return Ok(r.clone());
            }
            let new = format!("{location}{}", &text[end..]);
            Reference::parse(&new).map_err(|e| {
                format!(
                    "{r}: rewritten by registry {} of {} to {new:?}: {e}",
                    reg.prefix, reg.origin
                )
            })
        };
        let by_digest = r.digest.is_some();
        let mut out = Vec::new();
        for m in &reg.mirrors {
            let ok = if reg.mirror_by_digest_only {
                by_digest
            } else {
                match m.pull_from {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => by_digest,
                    PullFromMirror::TagOnly => !by_digest,
                }
            };
            if ok {
                let reference = rewrite(&m.location)?;
                // A mirror that has its own [[registry]] entry takes its
                // insecure setting too.
                let own = self
                    .find_registry(&reference.to_string())
                    .is_some_and(|x| x.insecure);
                out.push(Source {
                    reference,
                    insecure: m.insecure || own,
                    mirror: true,
                });
            }
        }
        out.push(Source {
            reference: rewrite(&reg.location)?,
            insecure: reg.insecure,
            mirror: false,
        });
        Ok(out)
    }

    /// A push to `r` (never to mirrors, nor rewritten to a location, as
    /// containers/image): whether its registry is insecure; an error if
    /// it is blocked.
    pub fn push_insecure(&self, r: &Reference) -> Result<bool, String> {
        Ok(self.not_blocked(r)?.is_some_and(|reg| reg.insecure))
    }

    /// Resolves what the user typed for a pull into the names to try,
    /// each with its sources (see the module doc).
    pub fn resolve_pull(&self, input: &str) -> Result<Resolved, String> {
        let candidate = |name: Reference| Candidate {
            sources: self.pull_sources(&name),
            name,
        };
        let parsed = Reference::parse(input)?;
        if has_domain(input) {
            return Ok(Resolved {
                candidates: vec![candidate(parsed)],
                how: None,
            });
        }
        let (short, rest) = split_name(input);
        if let Some(a) = self.aliases.get(short) {
            if let Some(v) = &a.value {
                let name = Reference::parse(&format!("{v}{rest}"))?;
                return Ok(Resolved {
                    how: Some(format!("{short:?} is an alias of {v} ({})", a.origin)),
                    candidates: vec![candidate(name)],
                });
            }
        }
        let Some((search, origin)) = &self.search else {
            return Ok(Resolved {
                how: (!self.files.is_empty()).then(|| {
                    format!(
                        "{short:?}: no unqualified-search-registries in {}; Docker Hub",
                        self.files_text()
                    )
                }),
                candidates: vec![candidate(parsed)],
            });
        };
        if search.is_empty() {
            return Err(format!(
                "{input:?} is a short name with no alias, and unqualified-search-registries is empty in {origin}: give the registry (e.g. docker.io/{input})"
            ));
        }
        let names = search
            .iter()
            .map(|reg| Reference::parse(&format!("{reg}/{input}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = self.mode.unwrap_or(ShortNameMode::Permissive);
        if names.len() > 1 && mode == ShortNameMode::Enforcing {
            let list: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "{input:?} is a short name that could be any of {}; short-name-mode is enforcing and layerfs does not prompt: give the full name, or add an [aliases] entry (in {})",
                list.join(", "),
                self.files_text()
            ));
        }
        Ok(Resolved {
            how: Some(format!(
                "{short:?}: trying unqualified-search-registries {} ({origin})",
                search.join(", ")
            )),
            candidates: names.into_iter().map(candidate).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Config {
        Config::parse(text, "test.conf", false).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        Config::parse(text, "bad.conf", false).expect_err("should fail")
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    /// The sources of a pull of `input` (one candidate), as
    /// `reference (insecure) [mirror]` strings.
    fn sources(c: &Config, input: &str) -> Vec<String> {
        let res = c.resolve_pull(input).unwrap();
        assert_eq!(res.candidates.len(), 1, "{res:?}");
        show(&res.candidates[0].sources.clone().unwrap())
    }

    fn show(s: &[Source]) -> Vec<String> {
        s.iter()
            .map(|s| {
                format!(
                    "{}{}{}",
                    s.reference,
                    if s.insecure { " insecure" } else { "" },
                    if s.mirror { " mirror" } else { "" }
                )
            })
            .collect()
    }

    fn names(res: &Resolved) -> Vec<String> {
        res.candidates.iter().map(|c| c.name.to_string()).collect()
    }

    // The example of containers-registries.conf(5): a prefix rewritten to
    // a location, with mirrors tried first.
    const MAN_EXAMPLE: &str = r#"
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
"#;

    #[test]
    fn the_man_page_example_rewrites_prefixes_and_tries_mirrors_first() {
        let c = conf(MAN_EXAMPLE);
        assert_eq!(
            sources(&c, "example.com/foo/image:latest"),
            [
                "example-mirror-0.local/mirror-for-foo/image:latest mirror",
                "example-mirror-1.local/mirrors/foo/image:latest insecure mirror",
                "internal-registry-for-example.com/bar/image:latest",
            ]
        );
        assert_eq!(
            sources(&c, "registry.com/x/y:2"),
            ["mirror.registry.com/x/y:2 mirror", "registry.com/x/y:2"]
        );
        // No entry: the reference as it is.
        assert_eq!(sources(&c, "quay.io/a/b:1"), ["quay.io/a/b:1"]);
        // example.com/foobar is not under the prefix example.com/foo.
        assert_eq!(
            sources(&c, "example.com/foobar:1"),
            ["example.com/foobar:1"]
        );
        // The short name goes to the one search registry, then its rules.
        let res = c.resolve_pull("foo/image").unwrap();
        assert_eq!(names(&res), ["example.com/foo/image:latest"]);
        assert_eq!(
            show(&res.candidates[0].sources.clone().unwrap())[2],
            "internal-registry-for-example.com/bar/image:latest"
        );
    }

    #[test]
    fn the_longest_prefix_wins_and_wildcards_match_subdomains() {
        let c = conf(
            r#"
[[registry]]
location = "example.com"
insecure = true
[[registry]]
prefix = "example.com/team"
location = "team.example.net/t"
[[registry]]
prefix = "example.com/team/app"
location = "app.example.net/app"
[[registry]]
prefix = "*.corp.example"
insecure = true
[[registry]]
prefix = "*.corp.example"
location = "ignored.example"
"#,
        );
        assert_eq!(sources(&c, "example.com/x:1"), ["example.com/x:1 insecure"]);
        assert_eq!(
            sources(&c, "example.com/team/x:1"),
            ["team.example.net/t/x:1"]
        );
        assert_eq!(
            sources(&c, "example.com/team/app:1"),
            ["app.example.net/app:1"]
        );
        assert_eq!(
            sources(&c, "example.com/team/app/sub:2"),
            ["app.example.net/app/sub:2"]
        );
        // A wildcard with no location: the reference as it is, with the
        // entry's settings; only subdomains, only in the host.
        assert_eq!(
            sources(&c, "a.b.corp.example/x:1"),
            ["a.b.corp.example/x:1 insecure"]
        );
        assert_eq!(
            sources(&c, "reg.corp.example:5000/x:1"),
            ["reg.corp.example:5000/x:1 insecure"]
        );
        assert_eq!(sources(&c, "corp.example/x:1"), ["corp.example/x:1"]);
        assert_eq!(
            sources(&c, "other.io/a.corp.example/x:1"),
            ["other.io/a.corp.example/x:1"]
        );
        assert_eq!(
            sources(&c, "a.corp.examplex.io/x:1"),
            ["a.corp.examplex.io/x:1"]
        );
        assert!(prefix_match("example.com:5000/x", "example.com").is_some());
    }

    #[test]
    fn pull_from_mirror_picks_mirrors_by_tag_or_digest() {
        let c = conf(
            r#"
[[registry]]
location = "reg.io"
[[registry.mirror]]
location = "all.mirror"
[[registry.mirror]]
location = "digest.mirror"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.mirror"
pull-from-mirror = "tag-only"

[[registry]]
location = "old.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "old.mirror"
"#,
        );
        assert_eq!(
            sources(&c, "reg.io/a:1"),
            [
                "all.mirror/a:1 mirror",
                "tag.mirror/a:1 mirror",
                "reg.io/a:1"
            ]
        );
        let d = format!("reg.io/a@sha256:{}", "0".repeat(64));
        let s = sources(&c, &d);
        assert_eq!(s.len(), 3);
        assert!(s[0].starts_with("all.mirror/a@") && s[1].starts_with("digest.mirror/a@"));
        assert!(s[2].starts_with("reg.io/a@"));
        assert_eq!(sources(&c, "old.io/a:1"), ["old.io/a:1"]);
        let d = format!("old.io/a@sha256:{}", "0".repeat(64));
        let s = sources(&c, &d);
        assert!(s[0].starts_with("old.mirror/a@") && s[0].ends_with("mirror"));
    }

    #[test]
    fn a_blocked_registry_is_refused_naming_the_file() {
        let c = conf(
            r#"
[[registry]]
location = "bad.io"
blocked = true
[[registry]]
prefix = "bad.io/fine"
location = "bad.io/fine"
"#,
        );
        let res = c.resolve_pull("bad.io/x:1").unwrap();
        let e = res.candidates[0].sources.clone().unwrap_err();
        assert!(
            e.contains("bad.io/x:1") && e.contains("blocked") && e.contains("test.conf"),
            "{e}"
        );
        assert!(c.push_insecure(&r("bad.io/x:1")).is_err());
        // A longer prefix that is not blocked wins.
        assert_eq!(sources(&c, "bad.io/fine/x:1"), ["bad.io/fine/x:1"]);
        assert_eq!(c.push_insecure(&r("bad.io/fine/x:1")), Ok(false));
    }

    #[test]
    fn short_names_in_the_three_modes() {
        let search = r#"unqualified-search-registries = ["one.io", "docker.io"]"#;
        for (mode, ok) in [
            ("", true),
            ("short-name-mode = \"permissive\"", true),
            ("short-name-mode = \"disabled\"", true),
            ("short-name-mode = \"enforcing\"", false),
        ] {
            let c = conf(&format!("{search}\n{mode}\n"));
            let res = c.resolve_pull("alpine:3");
            if ok {
                assert_eq!(
                    names(&res.unwrap()),
                    ["one.io/alpine:3", "docker.io/library/alpine:3"],
                    "{mode}"
                );
            } else {
                let e = res.unwrap_err();
                assert!(
                    e.contains("one.io/alpine:3")
                        && e.contains("docker.io/library/alpine:3")
                        && e.contains("enforcing")
                        && e.contains("[aliases]"),
                    "{e}"
                );
            }
        }
        // One search registry: no ambiguity, even when enforcing.
        let c = conf("unqualified-search-registries = [\"127.0.0.1:5000\"]\nshort-name-mode = \"enforcing\"\n");
        assert_eq!(
            names(&c.resolve_pull("t/deb").unwrap()),
            ["127.0.0.1:5000/t/deb:latest"]
        );
        // A fully qualified name is not a short name.
        assert_eq!(
            names(&c.resolve_pull("quay.io/x/y").unwrap()),
            ["quay.io/x/y:latest"]
        );
        assert_eq!(
            names(&c.resolve_pull("localhost/y").unwrap()),
            ["localhost/y:latest"]
        );
    }

    #[test]
    fn without_search_registries_a_short_name_is_docker_hub_unless_the_list_is_empty() {
        let none = Config::default();
        let res = none.resolve_pull("alpine").unwrap();
        assert_eq!(names(&res), ["docker.io/library/alpine:latest"]);
        assert_eq!(res.how, None);
        let c = conf("[[registry]]\nlocation = \"x.io\"\n");
        assert_eq!(
            names(&c.resolve_pull("alpine").unwrap()),
            ["docker.io/library/alpine:latest"]
        );
        let c = conf("unqualified-search-registries = []\n");
        let e = c.resolve_pull("alpine").unwrap_err();
        assert!(e.contains("short name") && e.contains("test.conf"), "{e}");
    }

    #[test]
    fn aliases_win_over_search_and_keep_the_tag() {
        let mut c = conf(
            r#"
unqualified-search-registries = ["one.io", "two.io"]
short-name-mode = "enforcing"
[aliases]
"deb" = "127.0.0.1:5000/t/deb"
"hub" = "docker.io/busybox"
"gone" = "one.io/gone"
"#,
        );
        let res = c.resolve_pull("deb:1").unwrap();
        assert_eq!(names(&res), ["127.0.0.1:5000/t/deb:1"]);
        assert!(res.how.unwrap().contains("alias"));
        assert_eq!(
            names(&c.resolve_pull("hub").unwrap()),
            ["docker.io/library/busybox:latest"]
        );
        let d = format!("deb@sha256:{}", "a".repeat(64));
        assert_eq!(
            names(&c.resolve_pull(&d).unwrap()),
            [format!("127.0.0.1:5000/t/deb@sha256:{}", "a".repeat(64))]
        );
        // A drop-in replaces one alias and resets another.
        c.merge(
            Config::parse(
                "[aliases]\n\"deb\" = \"other.io/deb\"\n\"gone\" = \"\"\n",
                "d/10.conf",
                true,
            )
            .unwrap(),
        );
        let res = c.resolve_pull("deb").unwrap();
        assert_eq!(names(&res), ["other.io/deb:latest"]);
        assert!(res.how.unwrap().contains("d/10.conf"));
        // Reset: back to the (enforcing, ambiguous) search.
        assert!(c.resolve_pull("gone").is_err());
    }

    #[test]
    fn drop_ins_replace_tables_of_the_same_prefix_and_settings_they_give() {
        let mut c = conf(
            r#"
unqualified-search-registries = ["one.io"]
short-name-mode = "enforcing"
[[registry]]
location = "a.io"
insecure = true
[[registry]]
location = "b.io"
"#,
        );
        c.merge(
            Config::parse(
                "[[registry]]\nlocation = \"a.io\"\nblocked = true\n",
                "d/1.conf",
                true,
            )
            .unwrap(),
        );
        c.merge(
            Config::parse(
                "unqualified-search-registries = [\"two.io\", \"three.io\"]\nshort-name-mode = \"permissive\"\n",
                "d/2.conf",
                true,
            )
            .unwrap(),
        );
        assert!(c
            .pull_sources(&r("a.io/x"))
            .unwrap_err()
            .contains("d/1.conf"));
        assert_eq!(sources(&c, "b.io/x"), ["b.io/x:latest"]);
        assert_eq!(
            names(&c.resolve_pull("x").unwrap()),
            ["two.io/x:latest", "three.io/x:latest"]
        );
        assert_eq!(c.files, ["test.conf", "d/1.conf", "d/2.conf"]);
    }

    #[test]
    fn version_1_files_mean_their_version_2() {
        let c = conf(
            "[registries.search]\nregistries = [\"one.io\"]\n[registries.insecure]\nregistries = [\"ins.io\"]\n[registries.block]\nregistries = [\"bad.io\"]\n",
        );
        assert_eq!(names(&c.resolve_pull("x").unwrap()), ["one.io/x:latest"]);
        assert_eq!(sources(&c, "ins.io/x"), ["ins.io/x:latest insecure"]);
        assert!(c.pull_sources(&r("bad.io/x")).is_err());
        let e =
            Config::parse("[registries.search]\nregistries = []\n", "d.conf", true).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        let e = err("unqualified-search-registries = []\n[registries.search]\nregistries = []\n");
        assert!(e.contains("mixes"), "{e}");
    }

    #[test]
    fn bad_files_fail_naming_the_file_and_line() {
        for (text, line, want) in [
            ("a = 1\n[[registry]\n", 2, "bad.conf:2:"),
            ("\n\n[[registry]]\ninsecure = \"yes\"\n", 4, "bool"),
            ("\n[[registry]]\nlocation = \"https://x.io\"\n", 2, "URL scheme"),
            ("[[registry]]\ninsecure = true\n", 1, "location or a prefix"),
            ("\n[[registry]]\nprefix = \"*.x.io/a\"\n", 2, "wildcard"),
            ("\n[[registry]]\nprefix = \"x.io/a\"\n", 2, "without a location"),
            (
                "[[registry]]\nlocation = \"x.io\"\n\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n",
                4,
                "pull-from-mirror",
            ),
            (
                "[[registry]]\nlocation = \"x.io\"\npull-from-mirror = \"all\"\n",
                1,
                "belongs in a [[registry.mirror]]",
            ),
            (
                "[[registry]]\nlocation = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"all\"\n",
                4,
                "set one of them",
            ),
            ("[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\ninsecure = true\n", 3, "needs a location"),
            ("\nshort-name-mode = \"prompt\"\n", 2, "short-name-mode"),
            ("unqualified-search-registries = [\n\"ok.io\",\n\"x.io/path\"]\n", 3, "host[:port]"),
            ("[aliases]\n\"x.io/y\" = \"x.io/y\"\n", 2, "short name"),
            ("[aliases]\n\"y:1\" = \"x.io/y\"\n", 2, "short name"),
            ("[aliases]\n\"y\" = \"y\"\n", 2, "registry and repository"),
            ("[aliases]\n\n\"y\" = \"x.io/y:1\"\n", 3, "no tag"),
            (
                "[[registry]]\nlocation = \"x.io\"\ninsecure = true\n[[registry]]\nprefix = \"x.io/a\"\nlocation = \"x.io\"\n",
                4,
                "different insecure",
            ),
        ] {
            let e = err(text);
            assert!(
                e.starts_with(&format!("bad.conf:{line}:")) && e.contains(want),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_ignored_as_containers_image_does() {
        let c = conf(
            "credential-helpers = [\"pass\"]\n[[registry]]\nlocation = \"x.io\"\nsomething = 1\n",
        );
        assert_eq!(sources(&c, "x.io/a"), ["x.io/a:latest"]);
    }
}
