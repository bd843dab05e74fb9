//! The system service's own account (Linux): `install` creates it when it
//! is missing (`useradd --system`, no login, no home of its own beyond the
//! state directory) and lets it read the files the configuration names,
//! so the daemon never needs root. Packages create the same account in
//! their maintainer scripts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Group, Uid, User};

/// Where `useradd` points the account's home: the service's state
/// directory (systemd's `StateDirectory=steep-repl`).
const HOME: &str = "/var/lib/steep-repl";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot look up the account {name}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("cannot create the system account {name} (useradd): {detail}")]
    Create { name: String, detail: String },
    #[error("cannot give the account {account} read access to {}: {source}", .path.display())]
    Grant {
        account: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The account's uid and primary gid, creating it (with a group of the same
/// name) when it does not exist. `Ok((.., true))` when it was created.
pub fn ensure(name: &str) -> Result<(Uid, Gid, bool), AccountError> {
    if let Some(user) = lookup(name)? {
        return Ok((user.uid, user.gid, false));
    }
    let out = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--home-dir", HOME, "--shell", "/usr/sbin/nologin"])
        .args(["--comment", "steep-repl daemon", name])
        .output()
        .map_err(|e| AccountError::Create {
            name: name.to_string(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(AccountError::Create {
            name: name.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    match lookup(name)? {
        Some(user) => Ok((user.uid, user.gid, true)),
        None => Err(AccountError::Create {
            name: name.to_string(),
            detail: "useradd succeeded but the account cannot be found".into(),
        }),
    }
}

fn lookup(name: &str) -> Result<Option<User>, AccountError> {
    User::from_name(name).map_err(|source| AccountError::Lookup {
        name: name.to_string(),
        source,
    })
}

/// The permission the account needs: to read a file, to pass through a
/// directory on the way to one.
fn need(path: &Path) -> u32 {
    if path.is_dir() {
        0o1
    } else {
        0o4
    }
}

/// Whether `uid` (primary group `gid`, supplementary `groups`) may read
/// `path` (a file) or pass through it (a directory) by its mode bits.
pub fn can_read(path: &Path, uid: Uid, gid: Gid, groups: &[Gid]) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if uid.is_root() {
        return true;
    }
    let (mode, bit) = (meta.mode(), need(path));
    if meta.uid() == uid.as_raw() {
        return mode & (bit << 6) != 0;
    }
    let in_group = meta.gid() == gid.as_raw() || groups.iter().any(|g| g.as_raw() == meta.gid());
    if in_group {
        return mode & (bit << 3) != 0;
    }
    mode & bit != 0
}

/// Makes `path` readable by the account through its group (chgrp, g+r;
/// g+x for a directory on the way), when it is not already. Returns what changed, for the operator.
/// Others never gain access: a key file stays private to its owner and the
/// service's group.
pub fn grant_read(
    path: &Path,
    account: &str,
    uid: Uid,
    gid: Gid,
) -> Result<Option<String>, AccountError> {
    let groups = supplementary_groups(account);
    if !path.exists() || can_read(path, uid, gid, &groups) {
        return Ok(None);
    }
    let err = |source: std::io::Error| AccountError::Grant {
        account: account.to_string(),
        path: path.to_path_buf(),
        source,
    };
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| err(e.into()))?;
    let meta = std::fs::metadata(path).map_err(err)?;
    let mode = (meta.mode() | (need(path) << 3)) & 0o7777;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    let group = Group::from_gid(gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string());
    let (what, bit) = if path.is_dir() {
        ("passage through", "x")
    } else {
        ("read access to", "r")
    };
    Ok(Some(format!(
        "gave group {group} {what} {} (chgrp {group}; chmod g+{bit})",
        path.display()
    )))
}

fn supplementary_groups(account: &str) -> Vec<Gid> {
    let Ok(name) = std::ffi::CString::new(account) else {
        return Vec::new();
    };
    let Ok(Some(user)) = User::from_name(account) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, user.gid).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readability_follows_owner_group_and_other_bits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "secret").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let (owner, group) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
        let stranger = Uid::from_raw(meta.uid().wrapping_add(4242));
        let other_gid = Gid::from_raw(meta.gid().wrapping_add(4242));
        let set = |mode| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode));

        set(0o600).unwrap();
        assert!(can_read(&file, owner, group, &[]));
        assert!(!can_read(&file, stranger, group, &[]));
        assert!(can_read(&file, Uid::from_raw(0), other_gid, &[]));
        set(0o640).unwrap();
        assert!(
            can_read(&file, stranger, group, &[]),
            "by the primary group"
        );
        assert!(
            can_read(&file, stranger, other_gid, &[group]),
            "by a supplementary group"
        );
        assert!(!can_read(&file, stranger, other_gid, &[]));
        set(0o644).unwrap();
        assert!(can_read(&file, stranger, other_gid, &[]));
        assert!(!can_read(&dir.path().join("missing"), owner, group, &[]));
    }

    #[test]
    fn grant_read_gives_the_group_read_access_and_nobody_else() {
        if !nix::unistd::geteuid().is_root() {
            return; // chgrp to a group we are not in needs root
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.key");
        std::fs::write(&file, "secret").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (uid, gid) = (Uid::from_raw(4243), Gid::from_raw(4243));
        let said = grant_read(&file, "no-such-account", uid, gid)
            .unwrap()
            .expect("a change");
        assert!(said.contains("chmod g+r"), "{said}");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.gid(), 4243);
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert!(can_read(&file, uid, gid, &[]));
        assert_eq!(
            grant_read(&file, "no-such-account", uid, gid).unwrap(),
            None
        );
    }
}
