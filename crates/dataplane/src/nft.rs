//! Running the `nft` binary, bounded in time.
//!
//! The child is forked from the calling thread, so it runs in that thread's
//! network namespace (which is how the tests program a lab host).

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::DataplaneError;

/// Bound on one `nft` run. A transaction of a few thousand rules and
/// elements takes well under a second; this only catches a hung binary.
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `nft <args>` with `input` on stdin (for `-f -`), returns stdout.
pub(crate) fn run(args: &[&str], input: Option<&str>) -> Result<String, DataplaneError> {
    let command = args.join(" ");
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DataplaneError::Spawn { source })?;

    // Drain stdout and stderr on their own threads, so a large listing can
    // never fill a pipe while this thread is still writing stdin.
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    // Stdin too, so that a hung nft that stops reading cannot block us past
    // the deadline. A write error (EPIPE) means nft stopped reading early;
    // it then exits non-zero with the reason on stderr, which we report.
    // The thread drops stdin when done, which closes it: nft sees the end.
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_owned();
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }

    let deadline = Instant::now() + NFT_TIMEOUT;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(DataplaneError::Spawn { source }),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DataplaneError::Timeout { command, after: NFT_TIMEOUT });
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    let stdout = join(out).map_err(|source| DataplaneError::Spawn { source })?;
    let stderr = join(err).map_err(|source| DataplaneError::Spawn { source })?;
    if !status.success() {
        return Err(DataplaneError::Nft { command, status, stderr: stderr.trim().to_owned() });
    }
    Ok(stdout)
}

type Reader = Option<thread::JoinHandle<io::Result<String>>>;

fn reader(pipe: Option<impl Read + Send + 'static>) -> Reader {
    pipe.map(|mut p| {
        thread::spawn(move || {
            let mut s = String::new();
            p.read_to_string(&mut s)?;
            Ok(s)
        })
    })
}

fn join(r: Reader) -> io::Result<String> {
    match r {
        None => Ok(String::new()),
        Some(h) => h.join().unwrap_or_else(|_| Err(io::Error::other("pipe reader panicked"))),
    }
}
