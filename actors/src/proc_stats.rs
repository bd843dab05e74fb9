//! This process's resource use, for the heartbeats peers receive.

/// Resident memory in bytes (0 where the platform does not tell cheaply).
pub fn rss_bytes() -> i64 {
    #[cfg(target_os = "linux")]
    {
        // "VmRSS:   7712 kB": in kB whatever the page size.
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<i64>().ok())
            })
            .map_or(0, |kib| kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn a_running_process_has_some_resident_memory() {
        assert!(super::rss_bytes() > 1024 * 1024);
    }
}
