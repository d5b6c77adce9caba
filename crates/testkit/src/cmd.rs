//! Running short external commands (`ip`, `nft`, a test's probe) with a
//! deadline.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Runs `argv` to completion or until `timeout`, whichever comes first.
///
/// The child gets its own process group so a timeout kills whatever it
/// started too. Its output goes to anonymous temporary files rather than
/// pipes: a grandchild that escaped the group and keeps a pipe open could
/// otherwise block the read forever.
pub(crate) fn output(argv: &[&str], timeout: Duration) -> Result<Output> {
    let (program, args) = argv.split_first().ok_or(Error::EmptyCommand)?;
    let command = || argv.join(" ");
    let mut stdout = tempfile::tempfile().map_err(Error::io("creating a temporary file for stdout"))?;
    let mut stderr = tempfile::tempfile().map_err(Error::io("creating a temporary file for stderr"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().map_err(Error::io("duplicating the stdout file"))?)
        .stderr(stderr.try_clone().map_err(Error::io("duplicating the stderr file"))?)
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn { command: command(), source })?;

    let deadline = Instant::now() + timeout;
    // Most commands here (`ip`, `nft`) finish in a few milliseconds; start
    // polling fast and back off so long ones do not cost CPU.
    let mut nap = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(Error::io(format!("waiting for `{}`", command())))? {
            break status;
        }
        if Instant::now() >= deadline {
            // The leader is not reaped yet, so its pid still names this group.
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            return Err(Error::CommandTimeout {
                command: command(),
                timeout,
                stderr: read_all(&mut stderr).trim().to_owned(),
            });
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(25));
    };
    Ok(Output { status, stdout: read_all(&mut stdout).into_bytes(), stderr: read_all(&mut stderr).into_bytes() })
}

/// Like [`output`], but a non-zero exit is an error carrying stderr; returns
/// stdout.
pub(crate) fn check(argv: &[&str], timeout: Duration) -> Result<String> {
    let out = output(argv, timeout)?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: argv.join(" "),
            place: String::new(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_all(file: &mut File) -> String {
    let mut buf = Vec::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
