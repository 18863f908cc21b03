//! POSIX ACLs of new objects, for mounts where the kernel caches and
//! enforces ACLs (FUSE_POSIX_ACL) and leaves the create mode to us
//! (FUSE_DONT_MASK): what `posix_acl_create` does in the kernel for a
//! local filesystem. A parent with a default ACL gives a new object an
//! access ACL (its default ACL masked by the requested mode) and, to a
//! directory, its default ACL, and the umask does not apply; without one
//! the mode loses the umask bits.
//!
//! The ACL xattr format (`system.posix_acl_*`, as the kernel hands it to
//! a FUSE daemon and stores it on disk): a little-endian u32 version (2),
//! then one (u16 tag, u16 perm, u32 id) per entry.
//!
//! Not here: chmod of a file with an ACL and setting an access ACL (the
//! branch's own filesystem keeps mode and ACL in step: see
//! doc/SEMANTICS.md, "ACLs on writable mounts").

/// Name of the access ACL xattr.
pub(super) const ACCESS: &[u8] = b"system.posix_acl_access";
/// Name of the default ACL xattr.
pub(super) const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One ACL entry: tag, permission bits (rwx = 4|2|1), id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// The ACLs a new object gets besides its mode (xattr values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct NewAcls {
    /// `system.posix_acl_access`, where the inherited ACL says more than
    /// the mode.
    pub(super) access: Option<Vec<u8>>,
    /// `system.posix_acl_default` (directories only).
    pub(super) default: Option<Vec<u8>>,
}

fn parse(v: &[u8]) -> Option<Vec<AclEntry>> {
    let (head, rest) = v.split_at_checked(4)?;
    if u32::from_le_bytes(head.try_into().ok()?) != VERSION || rest.len() % 8 != 0 {
        return None;
    }
    let entries = rest
        .chunks_exact(8)
        .map(|c| AclEntry {
            tag: u16::from_le_bytes([c[0], c[1]]),
            perm: u16::from_le_bytes([c[2], c[3]]),
            id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Some(entries)
}

fn format(acl: &[AclEntry]) -> Vec<u8> {
    let mut out = VERSION.to_le_bytes().to_vec();
    for e in acl {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// The kernel's `posix_acl_create_masq`: masks `acl` (a copy of the
/// parent's default ACL) with the requested `mode` and the mode with it.
/// Returns whether the ACL says more than the mode (named entries or a
/// mask), or `None` for an ACL the kernel would refuse (EIO).
fn create_masq(acl: &mut [AclEntry], mode: &mut u32) -> Option<bool> {
    let mut m = *mode;
    let mut not_equiv = false;
    let (mut group_obj, mut mask_obj) = (None, None);
    for (i, e) in acl.iter_mut().enumerate() {
        match e.tag {
            USER_OBJ => {
                e.perm &= ((m >> 6) & 7) as u16;
                m &= (u32::from(e.perm) << 6) | !0o700;
            }
            USER | GROUP => not_equiv = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                e.perm &= (m & 7) as u16;
                m &= u32::from(e.perm) | !0o007;
            }
            MASK => {
                mask_obj = Some(i);
                not_equiv = true;
            }
            _ => return None,
        }
    }
    let g = &mut acl[mask_obj.or(group_obj)?];
    g.perm &= ((m >> 3) & 7) as u16;
    m &= (u32::from(g.perm) << 3) | !0o070;
    *mode = (*mode & !0o777) | (m & 0o777);
    Some(not_equiv)
}

/// The permission bits and ACLs of a new object of `perm` (the mode its
/// creator asked for, S_IFMT bits left out) in a directory whose default
/// ACL is `parent_default` (`None`: it has none), made by a process with
/// `umask`. A default ACL that cannot be parsed counts as none.
pub(super) fn new_object(
    perm: u32,
    dir: bool,
    parent_default: Option<&[u8]>,
    umask: u32,
) -> (u32, NewAcls) {
    let Some(mut acl) = parent_default.and_then(parse).filter(|a| !a.is_empty()) else {
        return (perm & !(umask & 0o777), NewAcls::default());
    };
    let mut mode = perm;
    let Some(not_equiv) = create_masq(&mut acl, &mut mode) else {
        return (perm & !(umask & 0o777), NewAcls::default());
    };
    let acls = NewAcls {
        access: not_equiv.then(|| format(&acl)),
        default: dir.then(|| parent_default.unwrap_or_default().to_vec()),
    };
    (mode, acls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let e: Vec<AclEntry> = entries
            .iter()
            .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
            .collect();
        format(&e)
    }

    #[test]
    fn no_default_acl_applies_the_umask() {
        assert_eq!(new_object(0o666, false, None, 0o022).0, 0o644);
        assert_eq!(new_object(0o4777, true, None, 0o077).0, 0o4700);
    }

    #[test]
    fn minimal_default_acl_masks_the_mode_and_gives_no_access_acl() {
        // default: u::rwx g::r-x o::---, as `setfacl -d -m o::-` leaves it.
        let d = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)]);
        let (mode, acls) = new_object(0o666, false, Some(&d), 0o022);
        assert_eq!(mode, 0o640, "umask ignored, mode masked by the ACL");
        assert_eq!(acls, NewAcls::default());
        let (mode, acls) = new_object(0o777, true, Some(&d), 0o077);
        assert_eq!(mode, 0o750);
        assert_eq!(acls.default.as_deref(), Some(&d[..]));
        assert_eq!(acls.access, None);
    }

    #[test]
    fn named_entries_give_an_access_acl_whose_mask_is_the_group_bits() {
        let d = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        let (mode, acls) = new_object(0o640, false, Some(&d), 0o777);
        assert_eq!(mode, 0o640);
        let got = parse(acls.access.as_deref().unwrap()).unwrap();
        let perms: Vec<(u16, u16)> = got.iter().map(|e| (e.tag, e.perm)).collect();
        assert_eq!(
            perms,
            [
                (USER_OBJ, 6),
                (USER, 7),
                (GROUP_OBJ, 5),
                (MASK, 4),
                (OTHER, 0)
            ]
        );
    }

    #[test]
    fn malformed_default_acl_counts_as_none() {
        assert_eq!(new_object(0o666, false, Some(b"xx"), 0o022).0, 0o644);
        let no_group = acl(&[(USER_OBJ, 7, 0), (OTHER, 0, 0)]);
        assert_eq!(new_object(0o666, false, Some(&no_group), 0o022).0, 0o644);
    }
}
