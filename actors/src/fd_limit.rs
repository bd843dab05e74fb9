//! The process's limit on open descriptors: every connection (IPC, HTTP,
//! gRPC, PostgreSQL) and the spool and Raft files share it, so the daemon
//! raises the soft limit to the hard one at start, and each server caps its
//! connections below it (a flood of idle clients must not starve the rest).

/// What [`ensure_open_files`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFiles {
    /// The soft limit already allowed `wanted` descriptors.
    Enough,
    /// The soft limit was raised from the first value to the second.
    Raised(u64, u64),
    /// The hard limit is below `wanted`; the soft limit is now the hard one.
    Capped(u64),
}

/// Makes room for `wanted` open descriptors: service managers commonly
/// start daemons with a soft limit of 1024, which a full set of IPC
/// connections would exhaust, turning accepts into EMFILE errors instead
/// of the clear "too many connections" answer. The soft limit is raised
/// toward the hard one, never above it.
#[cfg(unix)]
pub fn ensure_open_files(wanted: u64) -> std::io::Result<OpenFiles> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= wanted {
        return Ok(OpenFiles::Enough);
    }
    let target = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(std::io::Error::from)?;
    Ok(if target < wanted {
        OpenFiles::Capped(target)
    } else {
        OpenFiles::Raised(soft, target)
    })
}

#[cfg(not(unix))]
pub fn ensure_open_files(_wanted: u64) -> std::io::Result<OpenFiles> {
    Ok(OpenFiles::Enough)
}

/// The soft limit on open descriptors now (`None` where there is none).
#[cfg(unix)]
pub fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(not(unix))]
pub fn open_files_limit() -> Option<u64> {
    None
}

/// How many connections one of `workers` HTTP workers may hold: together
/// at most a quarter of the descriptors, so that idle probe clients leave
/// the rest to PostgreSQL, gRPC, IPC and the files; never fewer than 16.
pub fn http_connections_per_worker(limit: Option<u64>, workers: usize) -> usize {
    const MOST: usize = 25_000;
    match limit {
        None => MOST,
        Some(limit) => {
            let share = usize::try_from(limit / 4).unwrap_or(MOST);
            (share / workers.max(1)).clamp(16, MOST)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_connections_stay_within_a_quarter_of_the_descriptors() {
        assert_eq!(http_connections_per_worker(Some(1280), 2), 160);
        assert_eq!(http_connections_per_worker(Some(1 << 20), 2), 25_000);
        assert_eq!(http_connections_per_worker(Some(40), 2), 16);
        assert_eq!(http_connections_per_worker(None, 2), 25_000);
    }
}
