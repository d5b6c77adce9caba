//! A file replaced in a directory, as an event: an inotify watch on the
//! directory (crash-safe writers rename the new version into place, which a
//! watch on the file itself would lose), so nothing polls the file.

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::inotify;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Watches one file name in one directory.
#[derive(Debug)]
pub struct FileWatch {
    fd: AsyncFd<OwnedFd>,
    name: OsString,
    buf: Vec<MaybeUninit<u8>>,
}

impl FileWatch {
    /// Watches `dir` for `name` being written or renamed into place.
    pub fn new(dir: &Path, name: &str) -> io::Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, dir, inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::CLOSE_WRITE)?;
        Ok(Self { fd: register(fd)?, name: name.into(), buf: vec![MaybeUninit::uninit(); 4096] })
    }

    /// Returns once the file has been written or replaced since the last
    /// call (several changes in between count as one).
    pub async fn changed(&mut self) -> io::Result<()> {
        let Self { fd, name, buf } = self;
        loop {
            let mut guard = fd.readable().await?;
            let mut hit = false;
            let read = guard.try_io(|fd| -> io::Result<()> {
                let mut r = inotify::Reader::new(fd.get_ref(), buf);
                loop {
                    let ev = r.next()?;
                    hit |= ev.file_name().is_some_and(|n| n.to_bytes() == name.as_bytes());
                }
            });
            // Err(_): read to the end (it would block), readiness cleared.
            if let Ok(Err(e)) = read {
                return Err(e);
            }
            if hit {
                return Ok(());
            }
        }
    }
}

/// Registers the inotify descriptor with tokio's reactor for readability.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns its descriptor and closes it on drop; it is
    // moved into the `AsyncFd`, which drops it last, and is never cloned.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_replaced_file_is_seen_and_other_names_are_not() {
        let dir = std::env::temp_dir().join(format!("duet-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = FileWatch::new(&dir, "history.json").unwrap();
        duet_files::write_atomic_cached(&dir.join("other.json"), b"x").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
        assert!(quiet.is_err(), "another file's write woke the watch");
        duet_files::write_atomic(&dir.join("history.json"), b"1").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed()).await.expect("no event").unwrap();
        // Consumed: quiet again until the next write.
        assert!(tokio::time::timeout(Duration::from_millis(200), w.changed()).await.is_err());
        std::fs::write(dir.join("history.json"), b"2").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed()).await.expect("no event").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
