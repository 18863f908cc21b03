//! The error of a filesystem operation: the errno the kernel gets, plus,
//! for the failures worth a line in the mount's log, what was being done
//! (a message naming the path and the step) and the error underneath.
//!
//! Expected outcomes (ENOENT of a lookup, EEXIST, ENOTEMPTY, EACCES,
//! EROFS, ENODATA of an xattr...) are plain errnos, made with
//! `Error::from(errno)` or `?` on a `sys` result: no message, no
//! allocation. A failure the log should explain carries a message, given
//! with `err!` or [`ErrorContext::context`]. The error is logged once,
//! where the reply is sent (`fuse`), not here.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Result type of VFS operations.
pub type VResult<T> = std::result::Result<T, Error>;

/// A failed filesystem operation: an errno, what was being done, and the
/// error underneath (an `io::Error` of the step that failed, say).
#[derive(Clone, Debug)]
pub struct Error {
    errno: i32,
    /// What failed, outermost step first (`"copy-up of P: data copy"`);
    /// empty for a plain errno.
    message: Cow<'static, str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// An [`Error`] with errno `$errno` and a formatted message, optionally
/// with a source error (anything that converts into
/// `Box<dyn Error + Send + Sync>`, e.g. an `io::Error`):
/// `err!(libc::EIO, "entry {p} has no file")`,
/// `err!(libc::EIO, source: e, "reading {p}")`.
macro_rules! err {
    ($errno:expr, source: $source:expr, $($fmt:tt)+) => {
        $crate::fs::Error::new($errno)
            .with_message(format!($($fmt)+))
            .with_source($source)
    };
    ($errno:expr, $($fmt:tt)+) => {
        $crate::fs::Error::new($errno).with_message(format!($($fmt)+))
    };
}
pub(crate) use err;

impl Error {
    /// A plain errno, no message.
    pub const fn new(errno: i32) -> Error {
        Error {
            errno,
            message: Cow::Borrowed(""),
            source: None,
        }
    }

    /// The errno the kernel gets.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// What failed (empty for a plain errno).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Error {
        self.message = message.into();
        self
    }

    /// Sets the error underneath.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Puts `what` in front of the message (`"what: message"`): the step
    /// of an outer operation that met this error. The errno stays.
    pub fn context(mut self, what: impl Into<Cow<'static, str>>) -> Error {
        let what = what.into();
        self.message = if self.message.is_empty() {
            what
        } else {
            Cow::Owned(format!("{what}: {}", self.message))
        };
        self
    }
}

/// A plain errno (`sys` results, `Err(libc::ENOENT.into())`).
impl From<i32> for Error {
    fn from(errno: i32) -> Error {
        Error::new(errno)
    }
}

/// An I/O error keeps its errno (EIO if it has none, as
/// `sys::errno_of`) and becomes the source.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::new(e.raw_os_error().unwrap_or(libc::EIO)).with_source(e)
    }
}

/// `message: source`; without a source the errno's description stands in
/// for it, so a line in the log always says what the kernel was told.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.message.is_empty() {
            write!(f, "{}: ", self.message)?;
        }
        match &self.source {
            Some(s) => write!(f, "{s}"),
            None => write!(f, "{}", std::io::Error::from_raw_os_error(self.errno)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// [`Error::context`] on a result whose error converts into an [`Error`]
/// (`VResult`, `sys` results, `io::Result`); the message is built only
/// on failure.
pub trait ErrorContext<T> {
    /// Adds `what()` (what was being done) to the error, as [`Error::context`].
    fn context<S: Into<Cow<'static, str>>>(self, what: impl FnOnce() -> S) -> VResult<T>;
}

impl<T, E: Into<Error>> ErrorContext<T> for std::result::Result<T, E> {
    fn context<S: Into<Cow<'static, str>>>(self, what: impl FnOnce() -> S) -> VResult<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_errno_is_kept_and_described() {
        let e = Error::from(libc::ENOENT);
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(e.message(), "");
        assert!(std::error::Error::source(&e).is_none());
        let shown = e.to_string();
        assert!(shown.contains("No such file or directory"), "{shown}");
        let r: Result<(), i32> = Err(libc::EEXIST);
        let r: VResult<()> = r.map_err(Error::from);
        assert!(r.is_err_and(|e| e.errno() == libc::EEXIST));
    }

    #[test]
    fn display_shows_message_and_source() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = err!(libc::ENOSPC, source: io, "copying {}", "/b/f");
        assert_eq!(e.errno(), libc::ENOSPC);
        let shown = e.to_string();
        assert!(shown.starts_with("copying /b/f: "), "{shown}");
        assert!(shown.contains("No space left on device"), "{shown}");
        assert!(std::error::Error::source(&e).is_some());

        let e = err!(libc::EIO, "entry {} has no file", 7);
        assert_eq!(
            e.to_string(),
            format!(
                "entry 7 has no file: {}",
                std::io::Error::from_raw_os_error(libc::EIO)
            )
        );
    }

    #[test]
    fn io_errors_keep_their_errno_and_context_adds_steps() {
        let e = Error::from(std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(e.errno(), libc::EDQUOT);
        // No OS error: EIO, as sys::errno_of.
        let e = Error::from(std::io::Error::other("short"));
        assert_eq!(e.errno(), libc::EIO);

        let r: Result<(), i32> = Err(libc::ENOSPC);
        let e = r
            .context(|| "data copy")
            .context(|| format!("copy-up of {}", "/b/f"))
            .unwrap_err();
        assert_eq!(e.errno(), libc::ENOSPC);
        assert_eq!(e.message(), "copy-up of /b/f: data copy");
        assert!(e.to_string().contains("No space left on device"));
        let cloned = e.clone();
        assert_eq!(cloned.to_string(), e.to_string());
    }
}
