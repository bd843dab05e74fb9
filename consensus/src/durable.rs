//! Small durable file operations shared by the whole store: an atomic
//! replace of a small file (temporary file, fsync, rename, fsync of the
//! directory), the fsync of a directory and the creation of a private
//! directory.
//!
//! A reader of a file replaced by `atomic_write` sees either the old or the
//! new content, never a mix, and once `atomic_write` returns the new content
//! survives a power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary sibling a file is written to before it replaces `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, and the new content is on disk when this returns.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // The data must be on disk before the rename makes it visible: a
        // rename that reaches the disk first would leave an empty file.
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// A small file rewritten in place, without a new inode per write and
/// without waiting for the disk, for hints whose loss is harmless: a
/// checksum on the content tells a torn or mixed write from a good one.
pub struct HintFile {
    file: fs::File,
    len: usize,
}

impl HintFile {
    pub fn open(path: &Path) -> io::Result<HintFile> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        Ok(HintFile { file, len })
    }

    /// Replaces the content with `bytes` (one positioned write).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut framed = format!("{:08x}\n", crc32fast::hash(bytes)).into_bytes();
        framed.extend_from_slice(bytes);
        // Spaces cover the end of a longer earlier content; the checksum
        // line says where the content ends.
        let padded = framed.len().max(self.len);
        framed.resize(padded, b' ');
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&framed)?;
        self.len = padded;
        Ok(())
    }

    /// The content of the file at `path` when its checksum holds.
    pub fn read(path: &Path) -> Option<Vec<u8>> {
        let bytes = fs::read(path).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (crc, rest) = text.split_once('\n')?;
        let content = rest.trim_end_matches(' ').as_bytes();
        (u32::from_str_radix(crc, 16).ok()? == crc32fast::hash(content)).then(|| content.to_vec())
    }
}

/// Makes the directory holding `path` durable (the entry of a created,
/// renamed or removed file).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory. Windows cannot open a directory as a file and makes
/// renames durable by itself: nothing to do there.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and its parents; a directory created here is readable by
/// its owner only (it holds the cluster's state and this node's vote).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    sync_parent(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_reads_back_its_last_content_and_not_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hint.json");
        let mut hint = HintFile::open(&path).unwrap();
        assert_eq!(HintFile::read(&path), None);
        hint.write(b"{\"index\":1000}").unwrap();
        hint.write(b"{\"index\":7}").unwrap();
        assert_eq!(
            HintFile::read(&path).as_deref(),
            Some(&b"{\"index\":7}"[..])
        );
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.iter().position(|b| *b == b'7').unwrap();
        bytes[at] = b'9';
        fs::write(&path, bytes).unwrap();
        assert_eq!(HintFile::read(&path), None);
    }

    #[test]
    fn an_atomic_write_replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_created_store_directory_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("a/raft");
        create_private_dir(&store).unwrap();
        let mode = fs::metadata(&store).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
