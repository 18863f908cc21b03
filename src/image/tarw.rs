//! Writing tar entries the way layer tars need them: exact names as bytes
//! (PAX `path`/`linkpath` when too long for the header), PAX `mtime` with
//! nanoseconds, and extended attributes as PAX `SCHILY.xattr.*` records
//! (the form `index::build` reads back). Used by `export` and `commit`.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

/// The type of a tar entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarType {
    /// A regular file with data.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (the target is the link name).
    Symlink,
    /// A hard link to an earlier entry (its path is the link target).
    HardLink,
    /// A character device (`rdev`).
    Char,
    /// A block device (`rdev`).
    Block,
    /// A named pipe.
    Fifo,
}

/// Metadata of one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarMeta {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time: seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time (written as a PAX `mtime` when not 0).
    pub mtime_nsec: u32,
    /// (major, minor) of a device; ignored for other types.
    pub rdev: (u32, u32),
    /// Extended attributes as (name, value), written as `SCHILY.xattr.*`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One PAX record: `LEN key=value\n`, LEN counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends one entry. `path` is relative, without `./`; a directory's
/// path gets its trailing `/` here (the root is `./`). `link` is the target
/// of a symlink or hard link; `data` holds `size` bytes for a file.
pub fn append<W: Write>(
    b: &mut tar::Builder<W>,
    path: &[u8],
    ty: TarType,
    meta: &TarMeta,
    link: &[u8],
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut name = if path.is_empty() {
        b"./".to_vec()
    } else {
        path.to_vec()
    };
    if ty == TarType::Dir && !name.ends_with(b"/") {
        name.push(b'/');
    }
    let mut pax = Vec::new();
    if name.len() > 100 {
        pax_record(&mut pax, b"path", &name);
    }
    if link.len() > 100 {
        pax_record(&mut pax, b"linkpath", link);
    }
    // Ids past the 7 octal digits of ustar: a PAX record for POSIX readers
    // (the header keeps GNU's base-256 form for the others).
    if meta.uid > 0o7777777 {
        pax_record(&mut pax, b"uid", meta.uid.to_string().as_bytes());
    }
    if meta.gid > 0o7777777 {
        pax_record(&mut pax, b"gid", meta.gid.to_string().as_bytes());
    }
    let mtime = meta.mtime.max(0) as u64;
    if meta.mtime_nsec != 0 || meta.mtime < 0 {
        let v = format!("{}.{:09}", meta.mtime.max(0), meta.mtime_nsec);
        pax_record(&mut pax, b"mtime", v.as_bytes());
    }
    if meta
        .xattrs
        .iter()
        .any(|(k, v)| std::str::from_utf8(k).is_err() || std::str::from_utf8(v).is_err())
    {
        pax_record(&mut pax, b"hdrcharset", b"BINARY");
    }
    for (k, v) in &meta.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax_record(&mut pax, &key, v);
    }
    if !pax.is_empty() {
        let mut h = Header::new_ustar();
        let pname = b"././@PaxHeader";
        h.as_ustar_mut().unwrap().name[..pname.len()].copy_from_slice(pname);
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(pax.len() as u64);
        h.set_mtime(mtime);
        h.set_cksum();
        b.append(&h, &pax[..])?;
    }
    let mut h = Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        let n = name.len().min(100);
        u.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        u.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_entry_type(match ty {
        TarType::File => EntryType::Regular,
        TarType::Dir => EntryType::Directory,
        TarType::Symlink => EntryType::Symlink,
        TarType::HardLink => EntryType::Link,
        TarType::Char => EntryType::Char,
        TarType::Block => EntryType::Block,
        TarType::Fifo => EntryType::Fifo,
    });
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(meta.uid as u64);
    h.set_gid(meta.gid as u64);
    h.set_mtime(mtime);
    let size = if ty == TarType::File { size } else { 0 };
    h.set_size(size);
    if matches!(ty, TarType::Char | TarType::Block) {
        h.set_device_major(meta.rdev.0)?;
        h.set_device_minor(meta.rdev.1)?;
    }
    h.set_cksum();
    b.append(&h, data.take(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in [1usize, 80, 95, 96, 97, 990, 995, 996] {
            let mut out = Vec::new();
            pax_record(&mut out, b"path", &vec![b'a'; n]);
            let (len, _) = std::str::from_utf8(&out).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{n}");
        }
    }

    #[test]
    fn long_names_xattrs_and_nanoseconds_read_back() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("d/{}", "x".repeat(150));
        let meta = TarMeta {
            mode: 0o640,
            uid: 7,
            gid: 8,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            xattrs: vec![(b"user.bin".to_vec(), vec![0, 0xff])],
            ..TarMeta::default()
        };
        append(
            &mut b,
            long.as_bytes(),
            TarType::File,
            &meta,
            b"",
            3,
            &b"abc"[..],
        )
        .unwrap();
        append(
            &mut b,
            b"l",
            TarType::Symlink,
            &meta,
            long.as_bytes(),
            0,
            io::empty(),
        )
        .unwrap();
        let tar = b.into_inner().unwrap();
        let (idx, _) = crate::layer::index::build_index(&tar).unwrap();
        let idx = crate::layer::index::Index::from_bytes(idx, "t").unwrap();
        let f = idx.entry(idx.lookup_path(long.as_bytes()).unwrap());
        assert_eq!((f.size, f.mode, f.uid, f.gid), (3, 0o640, 7, 8));
        assert_eq!((f.mtime, f.mtime_nsec), (1_700_000_000, 5));
        let x: Vec<_> = idx.xattrs(&f).collect();
        assert_eq!(x, vec![(&b"user.bin"[..], &[0u8, 0xff][..])]);
        let l = idx.entry(idx.lookup_path(b"l").unwrap());
        assert_eq!(idx.target(&l), long.as_bytes());
    }

    #[test]
    fn large_ids_get_pax_records() {
        let mut b = tar::Builder::new(Vec::new());
        let meta = TarMeta {
            mode: 0o600,
            uid: 4_000_000_000,
            gid: 3_000_000,
            ..TarMeta::default()
        };
        append(&mut b, b"f", TarType::File, &meta, b"", 0, io::empty()).unwrap();
        let tar = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let pax: Vec<(String, String)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value().unwrap().to_string())
            })
            .collect();
        assert!(
            pax.contains(&("uid".into(), "4000000000".into())),
            "{pax:?}"
        );
        assert!(pax.contains(&("gid".into(), "3000000".into())), "{pax:?}");
        let (idx, _) = crate::layer::index::build_index(&tar).unwrap();
        let idx = crate::layer::index::Index::from_bytes(idx, "t").unwrap();
        let f = idx.entry(idx.lookup_path(b"f").unwrap());
        assert_eq!((f.uid, f.gid), (4_000_000_000, 3_000_000));
    }
}
