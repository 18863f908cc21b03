//! Pure: owner mapping between what the layers and the rw branch store and
//! what a mount shows, in fuse-overlayfs' option syntax:
//! `uidmapping=C:H:N[:C:H:N...]` (stored id C..C+N shows as H..H+N; a
//! stored id outside every range shows as the overflow id 65534; the way
//! back maps a shown id H+k to C+k), the same for `gidmapping`, and
//! `squash_to_root` / `squash_to_uid=U` / `squash_to_gid=G` (every owner
//! shows as root, or as U / G; owners written through the mount are still
//! mapped back through the uid/gid mappings).

/// The id shown for a stored id no range maps (Linux' overflowuid).
pub const OVERFLOW_ID: u32 = 65534;

/// One `C:H:N` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First id as stored in the layers and the branch ("container").
    pub stored: u32,
    /// First id as the mount shows it ("host").
    pub shown: u32,
    /// Number of ids in the range (at least 1).
    pub len: u32,
}

/// A list of ranges; empty means identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<Range>,
}

impl IdMap {
    /// Parses `C:H:N[:C:H:N...]`; a leading `:` is allowed, as
    /// containers-storage writes the list (`:0:1000:1:1:100000:65536`).
    pub fn parse(s: &str) -> Result<IdMap, String> {
        let nums: Vec<u32> = s
            .strip_prefix(':')
            .unwrap_or(s)
            .split(':')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("id mapping {s:?}: {p:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        if nums.is_empty() || nums.len() % 3 != 0 {
            return Err(format!(
                "id mapping {s:?}: expected CONTAINER:HOST:COUNT triples"
            ));
        }
        let mut ranges: Vec<Range> = Vec::new();
        for t in nums.chunks(3) {
            let r = Range {
                stored: t[0],
                shown: t[1],
                len: t[2],
            };
            if r.len == 0
                || r.stored.checked_add(r.len - 1).is_none()
                || r.shown.checked_add(r.len - 1).is_none()
            {
                return Err(format!(
                    "id mapping {s:?}: range {}:{}:{} is empty or overflows",
                    r.stored, r.shown, r.len
                ));
            }
            let hit =
                |a: u32, b: u32, n: u32| a < b.saturating_add(n) && b < a.saturating_add(r.len);
            if ranges
                .iter()
                .any(|q| hit(r.stored, q.stored, q.len) || hit(r.shown, q.shown, q.len))
            {
                return Err(format!("id mapping {s:?}: ranges overlap"));
            }
            ranges.push(r);
        }
        Ok(IdMap { ranges })
    }

    /// Is this the identity map (no ranges)?
    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The id the mount shows for stored id `id`.
    pub fn to_shown(&self, id: u32) -> u32 {
        if self.ranges.is_empty() {
            return id;
        }
        self.ranges
            .iter()
            .find(|r| id >= r.stored && id - r.stored < r.len)
            .map_or(OVERFLOW_ID, |r| r.shown + (id - r.stored))
    }

    /// The id to store for shown id `id`; `None` if no range maps it.
    pub fn to_stored(&self, id: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|r| id >= r.shown && id - r.shown < r.len)
            .map(|r| r.stored + (id - r.shown))
    }
}

/// Owner mapping of a mount: uid and gid maps and optional squashing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// The uid mapping (`uidmapping=`).
    pub uid: IdMap,
    /// The gid mapping (`gidmapping=`).
    pub gid: IdMap,
    /// Every owner shows as this uid (`squash_to_uid`, `squash_to_root`).
    pub squash_uid: Option<u32>,
    /// Every group owner shows as this gid (`squash_to_gid`, `squash_to_root`).
    pub squash_gid: Option<u32>,
}

impl Owners {
    /// Takes the owner options out of `-o` options, leaving the others.
    pub fn from_options(opts: &mut Vec<String>) -> Result<Owners, String> {
        let mut o = Owners::default();
        let mut rest = Vec::new();
        for opt in opts.drain(..) {
            let num = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("-o {opt}: {v:?} is not a number"))
            };
            if let Some(v) = opt.strip_prefix("uidmapping=") {
                o.uid = IdMap::parse(v)?;
            } else if let Some(v) = opt.strip_prefix("gidmapping=") {
                o.gid = IdMap::parse(v)?;
            } else if let Some(v) = opt.strip_prefix("squash_to_uid=") {
                o.squash_uid = Some(num(v)?);
            } else if let Some(v) = opt.strip_prefix("squash_to_gid=") {
                o.squash_gid = Some(num(v)?);
            } else if opt == "squash_to_root" {
                o.squash_uid = Some(0);
                o.squash_gid = Some(0);
            } else {
                rest.push(opt);
            }
        }
        *opts = rest;
        Ok(o)
    }

    /// Does the mount show ids as stored (no mapping, no squashing)?
    pub fn is_identity(&self) -> bool {
        *self == Owners::default()
    }

    /// (uid, gid) the mount shows for stored (uid, gid).
    pub fn shown(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            self.squash_uid.unwrap_or_else(|| self.uid.to_shown(uid)),
            self.squash_gid.unwrap_or_else(|| self.gid.to_shown(gid)),
        )
    }

    /// Stored uid for a uid given through the mount (chown, a creator).
    pub fn stored_uid(&self, uid: u32) -> Option<u32> {
        self.uid.to_stored(uid)
    }

    /// Stored gid for a gid given through the mount; `None` if no range maps it.
    pub fn stored_gid(&self, gid: u32) -> Option<u32> {
        self.gid.to_stored(gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_storage_spelling_with_a_leading_colon() {
        let m = IdMap::parse(":0:1:1002:1002:0:1:1003:1003:64534").unwrap();
        assert_eq!(
            m,
            IdMap::parse("0:1:1002:1002:0:1:1003:1003:64534").unwrap()
        );
        assert!(!m.is_identity());
        assert!(IdMap::parse("::0:1:1").is_err());
    }

    #[test]
    fn parses_fuse_overlayfs_syntax() {
        let m = IdMap::parse("0:1000:1:1:100000:65536").unwrap();
        assert_eq!(m.to_shown(0), 1000);
        assert_eq!(m.to_shown(1), 100000);
        assert_eq!(m.to_shown(65536), 165535);
        assert_eq!(m.to_shown(65537), OVERFLOW_ID);
        assert_eq!(m.to_stored(1000), Some(0));
        assert_eq!(m.to_stored(100005), Some(6));
        assert_eq!(m.to_stored(999), None);
        assert_eq!(m.to_stored(0), None);
    }

    #[test]
    fn identity_when_empty() {
        let m = IdMap::default();
        assert!(m.is_identity());
        assert_eq!(m.to_shown(42), 42);
        assert_eq!(m.to_stored(42), Some(42));
    }

    #[test]
    fn round_trips_inside_the_ranges() {
        let m = IdMap::parse("0:5000:10:100:7000:5").unwrap();
        for id in (0..10).chain(100..105) {
            assert_eq!(m.to_stored(m.to_shown(id)), Some(id), "{id}");
        }
        assert_eq!(m.to_shown(50), OVERFLOW_ID);
    }

    #[test]
    fn bad_mappings_are_refused() {
        for bad in [
            "",
            "0:1000",
            "0:1000:0",
            "a:b:c",
            "0:1000:1:0:2000:1",
            "0:1000:5:10:1002:1",
            "4294967295:0:2",
        ] {
            assert!(IdMap::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_are_taken_out() {
        let mut opts: Vec<String> = ["allow_other", "uidmapping=0:1000:1", "squash_to_root", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Owners::from_options(&mut opts).unwrap();
        assert_eq!(opts, vec!["allow_other", "x"]);
        assert_eq!(o.shown(0, 7), (0, 0));
        assert_eq!(o.stored_uid(1000), Some(0));
        let mut opts = vec!["gidmapping=0:1000:1".to_string()];
        let o = Owners::from_options(&mut opts).unwrap();
        assert_eq!(o.shown(3, 0), (3, 1000));
        assert_eq!(o.shown(3, 1), (3, OVERFLOW_ID));
        assert_eq!(o.stored_gid(1000), Some(0));
        let mut opts = vec!["squash_to_uid=1000".to_string()];
        let o = Owners::from_options(&mut opts).unwrap();
        assert_eq!(o.shown(0, 5), (1000, 5));
    }
}
