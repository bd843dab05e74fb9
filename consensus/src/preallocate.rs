//! Disk space reserved ahead of the Raft log's writes.
//!
//! An fsync of a record appended at the end of a file also has to write the
//! file's new size (one more block, and on this project's test machines a
//! third more time per fsync); a record written into space reserved
//! beforehand needs only its data written. etcd reserves its WAL segments
//! the same way. The log keeps its own end (`LogStore` writes at it), so
//! the reserved space is zeros after the last record, which reading the
//! log tells from a torn record.
//!
//! Only Linux reserves (`fallocate`); elsewhere nothing is reserved and the
//! file grows with each write, as before.

use std::fs::File;
use std::io;

/// Reserves `len` bytes of `file` from `offset`, growing the file to the
/// end of the range. Ok(false) where this platform reserves nothing.
#[cfg(target_os = "linux")]
pub fn reserve(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // fallocate reads nothing from our memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if rc == 0 {
        Ok(true)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reserves nothing: the file grows with each write.
#[cfg(not(target_os = "linux"))]
pub fn reserve(_file: &File, _offset: u64, _len: u64) -> io::Result<bool> {
    Ok(false)
}

/// Whether a failed reservation means this file system never reserves
/// (then the log stops asking).
#[cfg(target_os = "linux")]
pub fn unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

/// Nothing is reserved here, so nothing is asked again.
#[cfg(not(target_os = "linux"))]
pub fn unsupported(_error: &io::Error) -> bool {
    true
}
