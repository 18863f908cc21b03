//! The archive members of a layer tar, walked block by block.
//!
//! The index builder walks the tar itself instead of through
//! `tar::Archive`, because the crate splits PAX records at newlines: a
//! legal `path` record that holds one made the whole entry fail ("malformed
//! pax extension"), and the crate's own path lookup silently fell back to
//! the truncated ustar name. Records are length-prefixed (`"%d %s=%s\n"`,
//! POSIX pax), so a value may hold any byte. Each 512-byte header is still
//! decoded by `tar::Header` (octal and base-256 numbers, the ustar prefix).
//!
//! Pure: it reads byte slices (the whole tar, or a window of it that the
//! caller maps, see [`Walk::window`]) and never does I/O.

use std::borrow::Cow;

use tar::{EntryType, Header};

const BLOCK: usize = 512;

/// A PAX record: key and value, borrowed from the archive.
pub type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// A malformed archive, at byte offset `at` of the tar.
#[derive(Debug, thiserror::Error)]
#[error("tar header at byte {at}: {what}")]
pub struct WalkError {
    /// Offset of the header that is wrong.
    pub at: u64,
    /// What is wrong with it.
    pub what: String,
}

/// One member, with the GNU long name / long link and PAX records of the
/// extension members before it applied.
pub struct Member<'a> {
    /// The member's own header.
    pub header: &'a Header,
    /// PAX `path`, else the GNU long name, else the header's name.
    pub path: Cow<'a, [u8]>,
    /// PAX `linkpath`, else the GNU long link, else the header's link name
    /// (`None` if empty).
    pub link: Option<Cow<'a, [u8]>>,
    /// The PAX records of the `x` member before this one, in order.
    pub pax: Vec<PaxRecord<'a>>,
    /// Data bytes (PAX `size` if given, else the header's).
    pub size: u64,
    /// Offset of the data in the tar.
    pub data_off: u64,
}

/// Parses the records of a PAX extended header (`x` or `g` member data).
/// A record's length counts itself, including its decimal length and the
/// final newline; trailing NUL padding is allowed.
pub fn pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .filter(|&i| i > 0 && i <= 20)
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("PAX record length does not match its record".into());
        }
        let kv = &data[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        out.push((&kv[..eq], &kv[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// The members of a tar, extension members folded into the member they
/// describe. Ends at the first all-zero block or at the end of the tar.
///
/// A walk reads a *window* of the tar: `win` holds the bytes from offset
/// `base` of a tar of `total` bytes (the whole tar, for [`Walk::new`]).
/// Only headers and extension data are read, never file data, so a
/// window need not hold a member's data. When the next member's headers
/// run past the window, [`Walk::step`] asks for another
/// ([`Step::Refill`]), and the walk goes on in a new `Walk` over it.
pub struct Walk<'a> {
    win: &'a [u8],
    base: u64,
    total: u64,
    pos: u64,
    failed: bool,
}

/// What [`Walk::step`] found.
pub enum Step<'a> {
    /// The next member.
    Member(Member<'a>),
    /// The end of the archive (or of a walk that failed).
    End,
    /// The next member's headers are not all in the window: walk on with
    /// a window of at least `len` bytes from offset `at` (`at + len` is
    /// inside the tar).
    Refill {
        /// Where the next member's first header starts.
        at: u64,
        /// How many bytes from `at` the walk needs to read the member's
        /// headers (more are welcome).
        len: u64,
    },
}

impl<'a> Walk<'a> {
    /// Walks `tar` from its first byte.
    pub fn new(tar: &'a [u8]) -> Walk<'a> {
        Walk::window(tar, 0, tar.len() as u64)
    }

    /// Walks a tar of `total` bytes from offset `base`, where `win` holds
    /// its bytes from `base` on (`base` is the start of a header: 0, or
    /// an `at` a [`Step::Refill`] gave).
    pub fn window(win: &'a [u8], base: u64, total: u64) -> Walk<'a> {
        debug_assert!(base + win.len() as u64 <= total);
        Walk {
            win,
            base,
            total,
            pos: base,
            failed: false,
        }
    }

    fn err(&mut self, at: u64, what: impl Into<String>) -> Result<Step<'a>, WalkError> {
        self.failed = true;
        Err(WalkError {
            at,
            what: what.into(),
        })
    }

    /// Asks for a window holding `start..end`; the member starting at
    /// `start` is read again from its first header (a walk asked to step
    /// on asks the same).
    fn refill(&mut self, start: u64, end: u64) -> Step<'a> {
        self.pos = start;
        Step::Refill {
            at: start,
            len: end - start,
        }
    }

    /// The window's bytes `from..to` (absolute offsets), if it holds them.
    fn bytes(&self, from: u64, to: u64) -> Option<&'a [u8]> {
        let win: &'a [u8] = self.win;
        let s = usize::try_from(from.checked_sub(self.base)?).ok()?;
        let e = usize::try_from(to.checked_sub(self.base)?).ok()?;
        win.get(s..e)
    }
}

/// A header's checksum is right (summed unsigned, as every writer since
/// POSIX does, or signed, as some old ones did).
fn checksum_ok(block: &[u8], h: &Header) -> bool {
    let Ok(want) = h.cksum() else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    want == unsigned || i64::from(want) == i64::from(signed)
}

/// The bytes of a GNU long name or long link: NUL-terminated. Only the
/// terminating NULs go; one inside stays, for the builder to refuse.
fn gnu_long(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &data[..end]
}

impl<'a> Iterator for Walk<'a> {
    type Item = Result<Member<'a>, WalkError>;

    /// The next member of a walk whose window is the whole tar
    /// ([`Walk::new`]), which never needs a refill.
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Step::Member(m)) => Some(Ok(m)),
            Ok(Step::End) => None,
            Ok(Step::Refill { .. }) => unreachable!("a walk of a whole tar needs no other window"),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<'a> Walk<'a> {
    /// The next member, the end, or the window the next member needs.
    pub fn step(&mut self) -> Result<Step<'a>, WalkError> {
        if self.failed {
            return Ok(Step::End);
        }
        let total = self.total;
        let start = self.pos;
        let mut long_name: Option<&'a [u8]> = None;
        let mut long_link: Option<&'a [u8]> = None;
        let mut pax: Option<Vec<PaxRecord<'a>>> = None;
        loop {
            let at = self.pos;
            let Some(end) = at.checked_add(BLOCK as u64).filter(|&e| e <= total) else {
                if at < total {
                    return self.err(at, "the tar ends inside a header (truncated?)");
                }
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return self.err(at, "the tar ends after an extension header");
                }
                self.failed = true;
                return Ok(Step::End);
            };
            let Some(block) = self.bytes(at, end) else {
                return Ok(self.refill(start, end));
            };
            if block.iter().all(|&b| b == 0) {
                self.failed = true; // the end: nothing more is read
                return Ok(Step::End);
            }
            let h = Header::from_byte_slice(block);
            if !checksum_ok(block, h) {
                return self.err(at, "header checksum mismatch (not a tar, or corrupt)");
            }
            let etype = h.entry_type();
            let Ok(hsize) = h.entry_size() else {
                return self.err(at, "bad size field");
            };
            let pax_size = if matches!(etype, EntryType::XHeader | EntryType::XGlobalHeader) {
                None
            } else {
                match pax
                    .as_ref()
                    .and_then(|p| p.iter().rev().find(|(k, _)| *k == b"size"))
                {
                    None => None,
                    Some((_, v)) => {
                        match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
                            Some(n) => Some(n),
                            None => return self.err(at, "bad PAX size"),
                        }
                    }
                }
            };
            let size: u64 = pax_size.unwrap_or(hsize);
            let data_off = end;
            let data_end = data_off.checked_add(size).filter(|&e| e <= total);
            let padded = data_end
                .and_then(|e| e.checked_add(BLOCK as u64 - 1))
                .map(|e| e / BLOCK as u64 * BLOCK as u64);
            let is_ext = matches!(
                etype,
                EntryType::XHeader
                    | EntryType::XGlobalHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            );
            let (Some(data_end), Some(next)) = (data_end, padded) else {
                if is_ext {
                    return self.err(at, "extension header data runs past the end of the tar");
                }
                // A member whose data is cut short: the builder says which
                // one; nothing after it can be read.
                self.failed = true;
                return Ok(Step::Member(
                    self.member(h, long_name, long_link, pax, size, data_off),
                ));
            };
            if !is_ext {
                self.pos = next;
                return Ok(Step::Member(
                    self.member(h, long_name, long_link, pax, size, data_off),
                ));
            }
            let Some(data) = self.bytes(data_off, data_end) else {
                return Ok(self.refill(start, data_end));
            };
            self.pos = next;
            match etype {
                EntryType::XHeader => {
                    if pax.is_some() {
                        return self.err(at, "two PAX headers describe one member");
                    }
                    match pax_records(data) {
                        Ok(r) => pax = Some(r),
                        Err(e) => return self.err(at, e),
                    }
                }
                // Global records: validated, then ignored, as Go's
                // archive/tar (Docker) and the tar crate do.
                EntryType::XGlobalHeader => {
                    if let Err(e) = pax_records(data) {
                        return self.err(at, e);
                    }
                }
                EntryType::GNULongName => long_name = Some(gnu_long(data)),
                _ => long_link = Some(gnu_long(data)), // GNULongLink
            }
        }
    }

    fn member(
        &self,
        header: &'a Header,
        long_name: Option<&'a [u8]>,
        long_link: Option<&'a [u8]>,
        pax: Option<Vec<PaxRecord<'a>>>,
        size: u64,
        data_off: u64,
    ) -> Member<'a> {
        let pax = pax.unwrap_or_default();
        let rec = |key: &[u8]| pax.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let path = match rec(b"path").or(long_name) {
            Some(p) => Cow::Borrowed(p),
            None => header.path_bytes(),
        };
        let link = match rec(b"linkpath").or(long_link) {
            Some(l) => Some(Cow::Borrowed(l)),
            None => header.link_name_bytes(),
        }
        .filter(|l| !l.is_empty());
        Member {
            header,
            path,
            link,
            pax,
            size,
            data_off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut n = body.len() + 2;
        while format!("{n} ").len() + body.len() != n {
            n += 1;
        }
        [format!("{n} ").as_bytes(), &body[..]].concat()
    }

    #[test]
    fn pax_records_hold_any_byte() {
        let data = [
            record("path", b"a\nb=c"),
            record("mtime", b"1.5"),
            vec![0; 7],
        ]
        .concat();
        let r = pax_records(&data).unwrap();
        assert_eq!(r, [(&b"path"[..], &b"a\nb=c"[..]), (b"mtime", b"1.5")]);
    }

    #[test]
    fn bad_pax_records_are_refused() {
        for bad in [
            &b"5 a=b\n"[..], // length too short for the record
            b"30 path=x\n",  // past the end
            b"8 path\n\n",   // no '='
            b"x path=y\n",   // no length
            b"7 a=bc!",      // no final newline
            b" 6 a=b\n",     // empty length
        ] {
            assert!(
                pax_records(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let pax: Vec<(&str, &[u8])> = entries.to_vec();
        b.append_pax_extensions(pax).unwrap();
        let mut h = Header::new_ustar();
        h.set_path("placeholder").unwrap();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_pax_path_with_a_newline_names_the_member() {
        let tar = tar_with(&[("path", b"dir/two\nlines"), ("uid", b"7")]);
        let ms: Vec<_> = Walk::new(&tar).collect::<Result<_, _>>().unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!(&ms[0].path[..], b"dir/two\nlines");
        assert_eq!(ms[0].size, 3);
        assert_eq!(&tar[ms[0].data_off as usize..][..3], b"abc");
        assert!(ms[0].pax.contains(&(&b"uid"[..], &b"7"[..])));
    }

    /// (path, data offset, size) of each member, walking `tar` in windows
    /// of `window` bytes as a caller that maps them would.
    fn walk_in_windows(tar: &[u8], window: u64) -> Vec<(Vec<u8>, u64, u64)> {
        let mut out = Vec::new();
        let (mut at, mut need) = (0u64, 0u64);
        loop {
            let len = window.max(need).min(tar.len() as u64 - at);
            let win = &tar[at as usize..(at + len) as usize];
            let mut walk = Walk::window(win, at, tar.len() as u64);
            loop {
                match walk.step().unwrap() {
                    Step::Member(m) => out.push((m.path.to_vec(), m.data_off, m.size)),
                    Step::End => return out,
                    Step::Refill { at: a, len: l } => {
                        assert!(a > at || l > len, "a refill must ask for more");
                        (at, need) = (a, l);
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn a_walk_in_windows_finds_what_a_whole_walk_finds() {
        let mut b = tar::Builder::new(Vec::new());
        for (i, len) in [0usize, 700, 3, 1500, 0].into_iter().enumerate() {
            b.append_pax_extensions([("path", format!("{i}{}", "p".repeat(len)).as_bytes())])
                .unwrap();
            let mut h = Header::new_gnu();
            h.set_size(len as u64);
            h.set_mode(0o644);
            let name = format!("{}/{i}", "long".repeat(40));
            b.append_data(&mut h, name, &vec![7u8; len][..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let whole: Vec<_> = Walk::new(&tar)
            .map(|m| m.map(|m| (m.path.to_vec(), m.data_off, m.size)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(whole.len(), 5);
        // Windows smaller than one member's headers, not block-aligned,
        // and larger than the tar.
        for window in [1, 512, 777, 2048, 1 << 20] {
            assert_eq!(walk_in_windows(&tar, window), whole, "window {window}");
        }
    }

    #[test]
    fn a_corrupt_header_is_an_error_not_the_end() {
        let mut tar = tar_with(&[("path", b"x")]);
        tar[1024 + 100] ^= 1; // the member header's mode field
        let err = Walk::new(&tar).find_map(Result::err).expect("an error");
        assert!(err.what.contains("checksum"), "{err}");
        assert!(
            Walk::new(&tar[..700]).any(|m| m.is_err()),
            "cut inside the PAX data"
        );
    }
}
