//! A file read from its first byte while another thread still writes it:
//! a pull's blob, decompressed and indexed as it downloads. The writer (the
//! download) appends to the file and publishes how many bytes are there
//! ([`Growing::wrote`]); a [`FollowReader`] on the same file reads up to
//! that count and then blocks until there is more, the download ends (end
//! of file, only once the writer has verified the whole blob) or fails (an
//! error). Because the reader reads the file, not a pipe, whatever the
//! writer does to fill it (an earlier pull's bytes kept and resumed, a
//! `Range` request after a lost connection) is invisible to it. A writer
//! that starts the file again from byte 0 says so first ([`Growing::rewind`]):
//! a reader that has read anything then fails with an error its caller
//! can tell ([`Watch::rewound`]) and start again from the complete file.
//!
//! The decision of a read is pure ([`step`]); the rest is a mutex, a
//! condition variable and `pread`.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{bail, Result};

/// How far the writer of one file has got, shared with its readers.
#[derive(Debug, Default)]
pub struct Growing {
    state: Mutex<State>,
    changed: Condvar,
}

/// What the writer has said so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct State {
    /// The writer has the file open, and `written` counts its bytes.
    pub(super) started: bool,
    /// Bytes `0..written` are in the file and will not change (unless
    /// `generation` moves on).
    pub(super) written: u64,
    /// How many times the writer started the file again from byte 0.
    pub(super) generation: u64,
    /// The end: `Ok` once every byte is written and verified, or why not.
    pub(super) end: Option<std::result::Result<(), String>>,
}

/// What a reader at byte `pos` of generation `generation` does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Read bytes `pos..upto`.
    Read(u64),
    /// Nothing new yet: wait for the writer.
    Wait,
    /// The file is complete and `pos` is its end.
    End,
    /// The writer failed, saying this.
    Fail(String),
    /// The writer started the file again after the reader read from it.
    Rewound,
}

/// The pure rule of [`FollowReader::read`].
pub(super) fn step(st: &State, generation: u64, pos: u64) -> Step {
    if st.generation != generation && pos > 0 {
        return Step::Rewound;
    }
    match &st.end {
        Some(Err(e)) => Step::Fail(e.clone()),
        _ if st.written > pos => Step::Read(st.written),
        Some(Ok(())) => Step::End,
        None => Step::Wait,
    }
}

impl Growing {
    /// A file nobody writes yet.
    pub fn new() -> Arc<Growing> {
        Arc::new(Growing::default())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut st = self.state.lock().expect("growing file");
        f(&mut st);
        self.changed.notify_all();
    }

    /// The writer has bytes `0..total` in the file (and has it open).
    pub fn wrote(&self, total: u64) {
        self.update(|st| {
            st.started = true;
            st.written = total;
        });
    }

    /// The writer is about to empty the file and write it again from byte
    /// 0: called before it truncates, so a reader that might read the new
    /// bytes in place of the old knows.
    pub fn rewind(&self) {
        self.update(|st| {
            st.generation += 1;
            st.written = 0;
        });
    }

    /// The writer is done: `Ok` when the file is complete and verified.
    /// The first end said is the one kept.
    pub fn finish(&self, end: std::result::Result<(), String>) {
        self.update(|st| {
            st.end.get_or_insert(end);
        });
    }

    /// What the writer has said so far.
    pub(super) fn state(&self) -> State {
        self.state.lock().expect("growing file").clone()
    }

    /// Waits until the writer has the file open or has ended; true if the
    /// file is complete, false if it is still being written.
    pub fn wait_started(&self) -> Result<bool> {
        let mut st = self.state.lock().expect("growing file");
        loop {
            match &st.end {
                Some(Ok(())) => return Ok(true),
                Some(Err(e)) => bail!("{e}"),
                None if st.started => return Ok(false),
                None => st = self.changed.wait(st).expect("growing file"),
            }
        }
    }

    /// Waits until the writer has ended; `Ok` if the file is complete.
    pub fn wait_end(&self) -> Result<()> {
        let mut st = self.state.lock().expect("growing file");
        loop {
            match &st.end {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => bail!("{e}"),
                None => st = self.changed.wait(st).expect("growing file"),
            }
        }
    }

    /// Blocks until [`step`] says something other than wait.
    fn next(&self, generation: &mut u64, pos: u64) -> Step {
        let mut st = self.state.lock().expect("growing file");
        loop {
            if pos == 0 {
                // Nothing read yet: a rewind changes nothing for us.
                *generation = st.generation;
            }
            match step(&st, *generation, pos) {
                Step::Wait => st = self.changed.wait(st).expect("growing file"),
                s => return s,
            }
        }
    }
}

/// Reads a file [`Growing`] describes, from byte 0, as it is written.
pub struct FollowReader {
    file: File,
    growing: Arc<Growing>,
    generation: u64,
    pos: u64,
}

/// A reader's view of its writer, kept by whoever hands the reader on.
#[derive(Clone)]
pub struct Watch {
    growing: Arc<Growing>,
    generation: u64,
}

impl Watch {
    /// Has the writer started the file again since the reader was made?
    pub fn rewound(&self) -> bool {
        self.growing.state().generation != self.generation
    }

    /// Waits until the writer has ended; `Ok` if the file is complete.
    pub fn wait_end(&self) -> Result<()> {
        self.growing.wait_end()
    }
}

/// The error a [`FollowReader`] gives when its writer started again.
pub const REWOUND: &str = "the download started again from its first byte";

impl FollowReader {
    /// A reader of `file` (opened on the file `growing` describes), at
    /// byte 0.
    pub fn new(file: File, growing: Arc<Growing>) -> FollowReader {
        let generation = growing.state().generation;
        FollowReader {
            file,
            growing,
            generation,
            pos: 0,
        }
    }

    /// A handle on the writer's state that outlives the reader.
    pub fn watch(&self) -> Watch {
        Watch {
            growing: self.growing.clone(),
            generation: self.generation,
        }
    }
}

impl Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let upto = match self.growing.next(&mut self.generation, self.pos) {
            Step::Read(upto) => upto,
            Step::End => return Ok(0),
            Step::Fail(e) => return Err(io::Error::other(e)),
            Step::Rewound => return Err(io::Error::other(REWOUND)),
            Step::Wait => unreachable!("next waits"),
        };
        let want = buf
            .len()
            .min((upto - self.pos).min(usize::MAX as u64) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        // A rewind published before the writer truncated: if this read
        // could have seen the truncation or the new bytes, it shows here.
        if self.growing.state().generation != self.generation {
            return Err(io::Error::other(REWOUND));
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended at byte {} while being written", self.pos),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn st(written: u64, generation: u64, end: Option<std::result::Result<(), String>>) -> State {
        State {
            started: true,
            written,
            generation,
            end,
        }
    }

    #[test]
    fn step_reads_what_is_written_waits_ends_and_fails() {
        assert_eq!(step(&st(10, 0, None), 0, 0), Step::Read(10));
        assert_eq!(step(&st(10, 0, None), 0, 4), Step::Read(10));
        assert_eq!(step(&st(10, 0, None), 0, 10), Step::Wait);
        assert_eq!(step(&st(0, 0, None), 0, 0), Step::Wait);
        // The end comes only after the last byte is read.
        assert_eq!(step(&st(10, 0, Some(Ok(()))), 0, 4), Step::Read(10));
        assert_eq!(step(&st(10, 0, Some(Ok(()))), 0, 10), Step::End);
        // A failure is said at once, even with bytes left to read.
        assert_eq!(
            step(&st(10, 0, Some(Err("lost".into()))), 0, 4),
            Step::Fail("lost".into())
        );
        // A rewind matters only to a reader that read something.
        assert_eq!(step(&st(3, 1, None), 0, 4), Step::Rewound);
        assert_eq!(step(&st(3, 1, None), 1, 2), Step::Read(3));
    }

    /// A file in a temporary directory, a writer handle on it, and a reader.
    fn setup() -> (tempfile::TempDir, File, Arc<Growing>, FollowReader) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        let w = File::create(&p).unwrap();
        let g = Growing::new();
        g.wrote(0);
        let r = FollowReader::new(File::open(&p).unwrap(), g.clone());
        (dir, w, g, r)
    }

    #[test]
    fn a_reader_blocks_until_bytes_arrive_and_ends_only_when_the_writer_is_done() {
        let (_dir, mut w, g, mut r) = setup();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).map(|_| got)
        });
        let mut all = Vec::new();
        for i in 0..5u8 {
            let chunk = vec![i; 1000 + i as usize];
            w.write_all(&chunk).unwrap();
            all.extend_from_slice(&chunk);
            g.wrote(all.len() as u64);
            std::thread::sleep(Duration::from_millis(20));
            assert!(!reader.is_finished(), "the reader ended before the writer");
        }
        // Bytes in the file beyond what was published are not read.
        w.write_all(b"not yet").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!reader.is_finished());
        all.extend_from_slice(b"not yet");
        g.wrote(all.len() as u64);
        g.finish(Ok(()));
        assert_eq!(reader.join().unwrap().unwrap(), all);
    }

    #[test]
    fn a_writer_failure_reaches_a_blocked_reader() {
        let (_dir, mut w, g, mut r) = setup();
        w.write_all(b"half").unwrap();
        g.wrote(4);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let e = r.read_to_end(&mut got).unwrap_err();
            (got, e.to_string())
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished());
        g.finish(Err("blob does not match its digest".into()));
        let (got, e) = reader.join().unwrap();
        assert_eq!(got, b"half");
        assert_eq!(e, "blob does not match its digest");
        // The first end is the one kept.
        g.finish(Ok(()));
        assert!(Growing::wait_end(&g).is_err());
    }

    #[test]
    fn a_rewind_fails_a_reader_that_read_and_not_one_that_did_not() {
        let (dir, mut w, g, mut r) = setup();
        let fresh = FollowReader::new(File::open(dir.path().join("blob")).unwrap(), g.clone());
        let watch = r.watch();
        w.write_all(b"old bytes").unwrap();
        g.wrote(9);
        let mut b = [0u8; 3];
        assert_eq!(r.read(&mut b).unwrap(), 3);
        assert!(!watch.rewound());
        g.rewind();
        w.set_len(0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&w, b"new", 0).unwrap();
        g.wrote(3);
        g.finish(Ok(()));
        let e = r.read(&mut b).unwrap_err();
        assert_eq!(e.to_string(), REWOUND);
        assert!(watch.rewound());
        watch.wait_end().unwrap();
        let mut got = Vec::new();
        let mut fresh = fresh;
        fresh.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"new");
    }

    #[test]
    fn wait_started_tells_a_file_in_progress_from_a_complete_one() {
        let g = Growing::new();
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_started().unwrap());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!t.is_finished());
        g.wrote(0);
        assert!(!t.join().unwrap());
        g.finish(Ok(()));
        assert!(g.wait_started().unwrap());
        let failed = Growing::new();
        failed.finish(Err("not downloaded".into()));
        assert_eq!(
            failed.wait_started().unwrap_err().to_string(),
            "not downloaded"
        );
    }
}
