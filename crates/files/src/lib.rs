//! Crash-safe small files: write to a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory. A
//! crash at any moment leaves the old content or the new, never a mix.
//!
//! [`write_atomic_cached`] is the same without the fsyncs, for state
//! rewritten many times a second: still old or new after a process crash
//! (the page cache survives it), but a power loss may lose the last
//! seconds of writes. Its callers pair it with a periodic [`write_atomic`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `data` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write(path, data, true)
}

/// Replaces `path` with `data` atomically, without waiting for the disk:
/// see the module's documentation.
pub fn write_atomic_cached(path: &Path, data: &[u8]) -> io::Result<()> {
    write(path, data, false)
}

fn write(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if durable { File::open(dir)?.sync_all() } else { Ok(()) }
}

/// Reads `path`, or `None` if it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary() {
        let d = std::env::temp_dir().join(format!("duet-fsutil-{}", std::process::id()));
        let p = d.join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read_optional(&p).unwrap().unwrap(), b"two");
        write_atomic_cached(&p, b"three").unwrap();
        assert_eq!(read_optional(&p).unwrap().unwrap(), b"three");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        assert!(read_optional(&d.join("missing")).unwrap().is_none());
        fs::remove_dir_all(&d).unwrap();
    }
}
