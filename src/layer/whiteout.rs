//! The whiteout grammar of layer formats, decoded at the edge into one
//! meaning: AUFS/OCI names (`.wh.NAME`, `.wh..wh..opq`, other `.wh..wh.*`
//! bookkeeping) and kernel overlayfs' markers (character devices 0:0,
//! `overlay.opaque` / `overlay.whiteout` xattrs). Pure; used by the index
//! builder, directory layers, the union rules and the rw branch.

use super::index::Kind;

/// AUFS whiteout prefix.
pub const WH_PREFIX: &[u8] = b".wh.";
/// AUFS metadata prefix (`.wh..wh.plnk`, `.wh..wh.aufs`, ...).
pub const WH_META_PREFIX: &[u8] = b".wh..wh.";
/// Opaque directory marker.
pub const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// What a name in a layer tar means to the union.
#[derive(Debug, PartialEq, Eq)]
pub enum NameClass<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh.NAME`: hides NAME of lower layers.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the directory holding it hides all lower entries.
    Opaque,
    /// Other `.wh..wh.*` names: AUFS bookkeeping, never shown.
    Meta,
}

/// Classifies the last component of a path in a layer.
pub fn classify_name(name: &[u8]) -> NameClass<'_> {
    if name == WH_OPAQUE {
        NameClass::Opaque
    } else if name.starts_with(WH_META_PREFIX) {
        NameClass::Meta
    } else if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
        if hidden.is_empty() {
            NameClass::Meta
        } else {
            NameClass::Whiteout(hidden)
        }
    } else {
        NameClass::Plain
    }
}

/// Overlay's xattr namespaces: `trusted.overlay.*` (as root) and
/// `user.overlay.*` (overlayfs' `userxattr` mode).
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Is `name` an overlayfs bookkeeping xattr (never shown in the union)?
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What an object of an overlay-format lower directory means to the union,
/// besides being itself.
#[derive(Debug, PartialEq, Eq)]
pub enum OverlayMark {
    /// Nothing special.
    None,
    /// A whiteout: a character device 0:0, or a regular file carrying the
    /// `overlay.whiteout` xattr (newer kernels' form for nested overlays).
    Whiteout,
    /// A directory with `overlay.opaque` = "y": it hides lower content.
    Opaque,
}

/// Decodes kernel overlayfs' lower-layer markers from an object's kind,
/// device number and xattrs (the overlay ones are enough).
pub fn overlay_mark<'a>(
    kind: Kind,
    rdev: (u32, u32),
    xattrs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> OverlayMark {
    if kind == Kind::Char && rdev == (0, 0) {
        return OverlayMark::Whiteout;
    }
    for (name, value) in xattrs {
        let Some(key) = OVERLAY_XATTR_PREFIXES
            .iter()
            .find_map(|p| name.strip_prefix(*p))
        else {
            continue;
        };
        match (kind, key) {
            (Kind::Dir, b"opaque") if value == b"y" => return OverlayMark::Opaque,
            (Kind::File, b"whiteout") => return OverlayMark::Whiteout,
            _ => {}
        }
    }
    OverlayMark::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_marks() {
        let none: [(&[u8], &[u8]); 0] = [];
        assert_eq!(
            overlay_mark(Kind::Char, (0, 0), none),
            OverlayMark::Whiteout
        );
        assert_eq!(overlay_mark(Kind::Char, (1, 3), none), OverlayMark::None);
        assert_eq!(overlay_mark(Kind::Block, (0, 0), none), OverlayMark::None);
        let opq: [(&[u8], &[u8]); 1] = [(b"trusted.overlay.opaque", b"y")];
        assert_eq!(overlay_mark(Kind::Dir, (0, 0), opq), OverlayMark::Opaque);
        // Only on directories, and only "y" ("x": has xattr whiteouts).
        assert_eq!(overlay_mark(Kind::File, (0, 0), opq), OverlayMark::None);
        let x: [(&[u8], &[u8]); 1] = [(b"user.overlay.opaque", b"x")];
        assert_eq!(overlay_mark(Kind::Dir, (0, 0), x), OverlayMark::None);
        let u: [(&[u8], &[u8]); 2] = [(b"user.foo", b"y"), (b"user.overlay.opaque", b"y")];
        assert_eq!(overlay_mark(Kind::Dir, (0, 0), u), OverlayMark::Opaque);
        let wh: [(&[u8], &[u8]); 1] = [(b"trusted.overlay.whiteout", b"")];
        assert_eq!(overlay_mark(Kind::File, (0, 0), wh), OverlayMark::Whiteout);
        assert!(is_overlay_xattr(b"trusted.overlay.origin"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"user.overlayx"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
