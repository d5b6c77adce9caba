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

/// Removes the temporary files a process killed mid-write left in `dir`
/// (`.<name>.tmp.<pid>`, of any process but this one), for a directory
/// with one writer, at its start. Returns the names removed.
pub fn remove_leftovers(dir: &Path) -> io::Result<Vec<String>> {
    let own = format!(".tmp.{}", std::process::id());
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let leftover = name.starts_with('.')
            && name
                .rsplit_once(".tmp.")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            && !name.ends_with(&own);
        if leftover {
            fs::remove_file(dir.join(&name))?;
            removed.push(name);
        }
    }
    Ok(removed)
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

    #[test]
    fn leftovers_of_other_processes_are_removed_and_nothing_else() {
        let d = std::env::temp_dir().join(format!("duet-leftovers-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let own = format!(".gen-3.pb.tmp.{}", std::process::id());
        for n in [".gen-2.pb.tmp.4711", "gen-2.pb", ".hidden", "x.tmp.12", own.as_str(), ".y.tmp.abc"] {
            fs::write(d.join(n), b"x").unwrap();
        }
        let mut removed = remove_leftovers(&d).unwrap();
        removed.sort();
        assert_eq!(removed, vec![".gen-2.pb.tmp.4711".to_owned()]);
        let mut left: Vec<String> =
            fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            vec![own.clone(), ".hidden".into(), ".y.tmp.abc".into(), "gen-2.pb".into(), "x.tmp.12".into()]
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
