//! The compact builder (`tree.rs`, windowed reads) against the builder it
//! replaced (`reference.rs`): random layer tars must give the same index
//! bytes and counts, or the same error, from a slice, from a file read in
//! windows of any size, and from a walk's entries.

use std::io::{Cursor, Write};
use std::os::unix::ffi::OsStrExt;

use proptest::prelude::*;
use tar::{EntryType, Header};

use super::build::{build_index, build_index_from_entries, write_index_windowed, BuildStats};
use super::build::{BuildError, Meta, RawEntry};
use super::{reference, Index, Kind};

/// How a name (a path or a link target) is written.
#[derive(Clone, Copy, Debug)]
enum Enc {
    /// In the header (its ustar prefix too, if it does not fit; else PAX).
    Header,
    /// A GNU long name / long link member before it.
    Gnu,
    /// A PAX `path` / `linkpath` record.
    Pax,
}

#[derive(Clone, Debug)]
enum K {
    Dir,
    /// A regular file whose name ends in `/` (pre-POSIX directories).
    OldDir,
    File(usize),
    /// A hard link to the path of an earlier entry (resolved to `Hard`).
    HardTo(prop::sample::Index),
    Hard(Vec<u8>),
    Sym(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct E {
    path: Vec<u8>,
    kind: K,
    enc: Enc,
    link_enc: Enc,
    gnu: bool,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    pax: Vec<(String, Vec<u8>)>,
}

fn names(v: &[&[u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(v.iter().map(|n| n.to_vec()).collect::<Vec<_>>())
}

fn long(c: u8) -> Vec<u8> {
    [vec![b'L'; 70], vec![c]].concat()
}

/// The last component of a path.
fn comp() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        24 => names(&[b"a", b"b", b"c", b"a b\n"]),
        6 => names(&[b".wh.a", b".wh.b", b".wh..wh..opq"]),
        4 => prop::sample::select(vec![long(b'1'), long(b'2')]),
        1 => Just(b".wh..wh.plnk".to_vec()),
    ]
}

/// A component before the last: rarely a whiteout or `..` (refused).
fn dir_comp() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        100 => names(&[b"a", b"b", b"c"]),
        20 => prop::sample::select(vec![long(b'1'), long(b'2')]),
        6 => names(&[b".", b".wh..wh.plnk"]),
        1 => names(&[b".wh.a", b".."]),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    let path = (
        prop::collection::vec(dir_comp(), 0..=2),
        comp(),
        prop_oneof![800 => Just(&b""[..]), 200 => Just(&b"./"[..]), 1 => Just(&b"/"[..])],
        prop_oneof![6 => Just(&b""[..]), 1 => Just(&b"/"[..])],
    )
        .prop_map(|(mut comps, last, pre, post)| {
            comps.push(last);
            [pre, &comps.join(&b'/'), post].concat()
        });
    // `a//b`: an empty component.
    let path = path.prop_map(|mut p| {
        if let Some(i) = p.windows(2).position(|w| w == b"c/") {
            p.insert(i + 1, b'/');
        }
        p
    });
    prop_oneof![300 => path, 1 => names(&[b"./", b".", b""])]
}

fn kind() -> impl Strategy<Value = K> {
    prop_oneof![
        4 => Just(K::Dir),
        1 => Just(K::OldDir),
        5 => prop_oneof![3 => 0usize..4, 1 => 0usize..1200].prop_map(K::File),
        2 => any::<prop::sample::Index>().prop_map(K::HardTo),
        2 => path().prop_map(K::Sym),
        1 => (0u32..300, 0u32..300).prop_map(|(a, b)| K::Char(a, b)),
        1 => (0u32..9, 0u32..9).prop_map(|(a, b)| K::Block(a, b)),
        1 => Just(K::Fifo),
    ]
}

fn enc() -> impl Strategy<Value = Enc> {
    prop_oneof![3 => Just(Enc::Header), 1 => Just(Enc::Gnu), 1 => Just(Enc::Pax)]
}

fn pax() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let rec = prop_oneof![
        prop_oneof![
            40 => prop::sample::select(vec!["1700000000.5", "-1.25", "12", "3.000000001"]),
            1 => Just("x"),
        ]
        .prop_map(|v| ("mtime".to_string(), v.as_bytes().to_vec())),
        prop::sample::select(vec!["4000000000", "7"])
            .prop_map(|v| ("uid".to_string(), v.as_bytes().to_vec())),
        prop::sample::select(vec!["3000000", "0"])
            .prop_map(|v| ("gid".to_string(), v.as_bytes().to_vec())),
        (0u8..3, prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(k, v)| (format!("SCHILY.xattr.user.k{k}"), v)),
        Just(("comment".to_string(), b"ignored".to_vec())),
    ];
    prop_oneof![
        3 => Just(Vec::new()),
        2 => prop::collection::vec(rec, 1..4),
    ]
}

/// Up to `n` entries, hard links pointing at the paths of earlier ones,
/// non-directories without whiteout names if there are (or at a missing
/// one, or none, for the first).
fn entries(n: usize) -> impl Strategy<Value = Vec<E>> {
    prop::collection::vec(entry(), 0..n).prop_map(|mut v| {
        for i in 0..v.len() {
            if let K::HardTo(ix) = &v[i].kind {
                let t = if i == 0 && ix.index(2) == 0 {
                    b"missing".to_vec()
                } else if i == 0 {
                    v[0].kind = K::File(1);
                    continue;
                } else {
                    let pick = ix.index(i);
                    let bad = |e: &E| {
                        matches!(e.kind, K::Dir | K::OldDir)
                            || e.path.windows(4).any(|w| w == b".wh.")
                    };
                    let j = (0..i)
                        .map(|d| (pick + d) % i)
                        .find(|&j| !bad(&v[j]))
                        .unwrap_or(pick);
                    v[j].path.clone()
                };
                v[i].kind = K::Hard(t);
            }
        }
        v
    })
}

fn entry() -> impl Strategy<Value = E> {
    (
        (path(), kind(), enc(), enc(), any::<bool>()),
        (0u32..0o10000, 0u32..3, 0u32..3, 0u64..5, pax()),
    )
        .prop_map(
            |((path, kind, enc, link_enc, gnu), (mode, uid, gid, mtime, pax))| E {
                path,
                kind,
                enc,
                link_enc,
                gnu,
                mode,
                uid,
                gid,
                mtime,
                pax,
            },
        )
}

/// A GNU long name (`L`) or long link (`K`) member holding `name`.
fn gnu_long(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &[u8]) {
    let mut h = Header::new_gnu();
    h.as_mut_bytes()[..13].copy_from_slice(b"././@LongLink");
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_size(name.len() as u64 + 1);
    h.set_cksum();
    b.append(&h, &[name, b"\0"].concat()[..]).unwrap();
}

/// Puts `name` in the header field `field` (name or link name) if it fits,
/// else says it must go elsewhere.
fn in_field(h: &mut Header, field: std::ops::Range<usize>, name: &[u8]) -> bool {
    if name.len() > field.len() {
        return false;
    }
    let bytes = &mut h.as_mut_bytes()[field.clone()];
    bytes.fill(0);
    bytes[..name.len()].copy_from_slice(name);
    true
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = if e.gnu {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        let (etype, size, link) = match &e.kind {
            K::Dir => (EntryType::Directory, 0, None),
            K::OldDir => (EntryType::Regular, 0, None),
            K::File(n) => (EntryType::Regular, *n, None),
            K::Hard(t) => (EntryType::Link, 0, Some(t)),
            K::HardTo(_) => unreachable!("resolved"),
            K::Sym(t) => (EntryType::Symlink, 0, Some(t)),
            K::Char(..) => (EntryType::Char, 0, None),
            K::Block(..) => (EntryType::Block, 0, None),
            K::Fifo => (EntryType::Fifo, 0, None),
        };
        let mut path = e.path.clone();
        if matches!(e.kind, K::OldDir) && !path.ends_with(b"/") {
            path.push(b'/');
        }
        h.set_entry_type(etype);
        h.set_size(size as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid.into());
        h.set_gid(e.gid.into());
        h.set_mtime(e.mtime);
        if let K::Char(ma, mi) | K::Block(ma, mi) = e.kind {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        let mut pax: Vec<(String, Vec<u8>)> = e.pax.clone();
        match e.enc {
            Enc::Header => {
                let fits = in_field(&mut h, 0..100, &path)
                    || (!e.gnu && h.set_path(std::ffi::OsStr::from_bytes(&path)).is_ok());
                if !fits {
                    pax.push(("path".into(), path.clone()));
                }
            }
            Enc::Gnu => {
                gnu_long(&mut b, EntryType::GNULongName, &path);
                in_field(&mut h, 0..100, &path[..path.len().min(100)]);
            }
            Enc::Pax => pax.push(("path".into(), path.clone())),
        }
        if let Some(t) = link {
            match e.link_enc {
                Enc::Header if in_field(&mut h, 157..257, t) => {}
                Enc::Gnu => gnu_long(&mut b, EntryType::GNULongLink, t),
                _ => pax.push(("linkpath".into(), t.clone())),
            }
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), &v[..])))
                .unwrap();
        }
        h.set_cksum();
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

type Built = Result<(Vec<u8>, BuildStats), String>;

fn shown(r: Result<(Vec<u8>, BuildStats), BuildError>) -> Built {
    r.map_err(|e| e.to_string())
}

/// The index of `tar` written from a file read `window` bytes at a time.
fn windowed(tar: &[u8], window: u64) -> Built {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(tar).unwrap();
    // Written after something, as into a file that is not empty.
    let mut out = Cursor::new(b"before".to_vec());
    out.set_position(6);
    let stats = write_index_windowed(&f, &mut out, window).map_err(|e| e.to_string())?;
    let end = out.position() as usize;
    let all = out.into_inner();
    assert_eq!(&all[..6], b"before");
    assert_eq!(end, all.len(), "left at the end of the index");
    Ok((all[6..].to_vec(), stats))
}

/// The entries a directory walk would give for the same list.
fn raws(entries: &[E]) -> Vec<RawEntry<'_>> {
    entries
        .iter()
        .map(|e| {
            let (kind, size, link, target, rdev) = match &e.kind {
                K::Dir | K::OldDir => (Kind::Dir, 0, None, Vec::new(), (0, 0)),
                K::File(n) => (Kind::File, *n as u64, None, Vec::new(), (0, 0)),
                K::Hard(t) => (Kind::File, 0, Some(t.clone()), Vec::new(), (0, 0)),
                K::HardTo(_) => unreachable!("resolved"),
                K::Sym(t) => (Kind::Symlink, 0, None, t.clone(), (0, 0)),
                K::Char(a, b) => (Kind::Char, 0, None, Vec::new(), (*a, *b)),
                K::Block(a, b) => (Kind::Block, 0, None, Vec::new(), (*a, *b)),
                K::Fifo => (Kind::Fifo, 0, None, Vec::new(), (0, 0)),
            };
            let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = e
                .pax
                .iter()
                .filter_map(|(k, v)| {
                    let name = k.strip_prefix("SCHILY.xattr.")?;
                    Some((name.as_bytes().to_vec(), v.clone()))
                })
                .collect();
            xattrs.sort();
            xattrs.dedup_by(|a, b| a.0 == b.0);
            RawEntry {
                path: &e.path,
                kind,
                meta: Meta {
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime as i64,
                    mtime_nsec: e.uid * 7,
                    xattrs,
                },
                link,
                size,
                data_off: 0,
                target,
                rdev,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_compact_builder_writes_the_reference_bytes(
        entries in entries(24),
        cut in prop_oneof![6 => Just(None), 1 => (0usize..8000).prop_map(Some)],
        window in prop::sample::select(vec![512u64, 700, 1024, 1536, 4096, 1 << 20]),
    ) {
        let mut tar = tar_of(&entries);
        if let Some(c) = cut {
            tar.truncate(c.min(tar.len()));
        }
        let want = shown(reference::build_index(&tar));
        if let Ok((bytes, _)) = &want {
            Index::from_bytes(bytes.clone(), "reference").expect("the reference validates");
        }
        prop_assert_eq!(&shown(build_index(&tar)), &want);
        prop_assert_eq!(&windowed(&tar, window), &want);

        let walk = shown(build_index_from_entries(raws(&entries)));
        prop_assert_eq!(walk, shown(reference::build_index_from_entries(raws(&entries))));
    }
}

/// A tar member named `name` with a PAX header (an xattr) and a GNU long
/// name, as bytes.
fn extended_member(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.x", &b"1"[..])])
        .unwrap();
    let mut h = Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, name, data).unwrap();
    let mut v = b.into_inner().unwrap();
    v.truncate(v.len() - 1024); // the end-of-archive blocks
    v
}

#[test]
fn headers_straddling_a_window_are_read_whole() {
    use std::io::{Seek, SeekFrom};
    const W: u64 = super::build::WINDOW;
    let long = format!("{}/straddles", "d".repeat(150));
    let mut f = tempfile::tempfile().unwrap();
    // A file whose data ends 512 bytes before the window's end: the next
    // member's PAX header is the window's last block, its records and
    // its GNU long name lie past it.
    let mut h = Header::new_ustar();
    h.set_size(W - 1024);
    h.set_mode(0o644);
    h.set_path("big").unwrap();
    h.set_cksum();
    f.write_all(h.as_bytes()).unwrap();
    f.seek(SeekFrom::Start(W - 512)).unwrap();
    f.write_all(&extended_member(&long, b"hello")).unwrap();
    // A member whose header is the first block of the next window.
    let pos = f.stream_position().unwrap();
    let pad = (2 * W - pos) as usize;
    let mut h = Header::new_ustar();
    h.set_size(pad as u64 - 512);
    h.set_mode(0o644);
    h.set_path("pad").unwrap();
    h.set_cksum();
    f.write_all(h.as_bytes()).unwrap();
    f.seek(SeekFrom::Start(2 * W)).unwrap();
    f.write_all(&extended_member("after", b"x")).unwrap();
    f.write_all(&[0; 1024]).unwrap();

    let mut out = Cursor::new(Vec::new());
    let stats = super::write_index_of(&f, &mut out).unwrap();
    assert_eq!(stats.files, 4);
    let tar = read_all(&mut f);
    let (want, want_stats) = reference::build_index(&tar).unwrap();
    assert_eq!(stats, want_stats);
    assert!(
        out.get_ref() == &want,
        "index bytes differ from the reference"
    );
    let idx = Index::from_bytes(out.into_inner(), "t").unwrap();
    for (path, off, data) in [
        // PAX header and records, GNU long name header and name, header.
        (&long[..], W - 512 + 5 * 512, &b"hello"[..]),
        ("after", 2 * W + 3 * 512, b"x"),
    ] {
        let e = idx.entry(idx.lookup_path(path.as_bytes()).expect(path));
        assert_eq!((e.data_off, e.size), (off, data.len() as u64), "{path}");
        assert_eq!(&tar[off as usize..][..data.len()], data);
        assert_eq!(idx.xattrs(&e).count(), 1, "{path}: its PAX record");
    }
}

/// The whole file, read (not mapped).
fn read_all(f: &mut std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn a_later_entry_for_a_path_wins() {
    let file = |p: &str, data: &[u8]| {
        let mut h = Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_path(p).unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        (h, data.to_vec())
    };
    let dir = |p: &str, mode: u32| {
        let mut h = Header::new_ustar();
        h.set_size(0);
        h.set_mode(mode);
        h.set_path(p).unwrap();
        h.set_entry_type(EntryType::Directory);
        h.set_cksum();
        (h, Vec::new())
    };
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in [
        file("a", b"1"),
        file("a", b"22"),
        dir("d", 0o700),
        file("d/x", b""),
        file("d", b"333"), // a file over a directory: d/x goes
        dir("d", 0o755),   // and a directory again: empty, opaque
        file("d/y", b""),
        dir("e", 0o700),
        file("e/z", b""),
        dir("e", 0o750), // a directory over a directory: metadata only
    ] {
        b.append(&h, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let (bytes, _) = build_index(&tar).unwrap();
    assert_eq!(bytes, reference::build_index(&tar).unwrap().0);
    let idx = Index::from_bytes(bytes, "t").unwrap();
    let a = idx.entry(idx.lookup_path(b"a").unwrap());
    assert_eq!((a.size, a.nlink), (2, 1));
    assert_eq!(&tar[a.data_off as usize..][..2], b"22");
    let d = idx.entry(idx.lookup_path(b"d").unwrap());
    assert!(d.is_dir() && d.is_opaque() && !d.is_implicit());
    assert_eq!(d.mode, 0o755);
    let names: Vec<_> = idx.children(&d).map(|c| idx.path(c)).collect();
    assert_eq!(names, [b"d/y".to_vec()]);
    let e = idx.entry(idx.lookup_path(b"e").unwrap());
    assert_eq!((e.mode, e.is_opaque()), (0o750, false));
    assert!(idx.lookup_path(b"e/z").is_some());
    assert_eq!(idx.len(), 6); // root, a, d, e, d/y, e/z: nothing of d/x
}
