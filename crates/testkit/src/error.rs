//! The harness's errors: one variant per cause.
//!
//! Operating-system failures keep their source (`std::io::Error` or the
//! errno of a system call), so `anyhow`'s `{:#}` in a test shows the whole
//! chain. A variant's own message never repeats its source.

use std::fmt::Write as _;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// What went wrong in the harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command line with no program (given to [`Lab::run`](crate::Lab::run),
    /// [`Lab::spawn`](crate::Lab::spawn) or used internally).
    #[error("empty command line")]
    EmptyCommand,

    /// A name the harness would create or look up has the wrong shape.
    #[error("invalid {kind} name {name:?} ({rule})")]
    InvalidName {
        /// What was being named: host, segment, interface, process label, namespace.
        kind: &'static str,
        /// The name given.
        name: String,
        /// What a valid name looks like.
        rule: &'static str,
    },

    /// [`Lab::simple`](crate::Lab::simple) asked for more hosts than its
    /// /24 holds.
    #[error("at most {max} hosts fit in 198.18.0.0/24, {asked} asked for")]
    TooManyHosts {
        /// The limit.
        max: usize,
        /// The number of hosts asked for.
        asked: usize,
    },

    /// A host, segment, interface or switch port of that name exists
    /// already in the lab.
    #[error("{what} exists already")]
    AlreadyExists {
        /// The thing, e.g. `host "a"`.
        what: String,
    },

    /// A host, segment or attachment that is not part of the lab.
    #[error("no {what}")]
    NotFound {
        /// The thing, e.g. `host HostId(3) in lab dk12a-`.
        what: String,
    },

    /// The operation needs the lab's switch, which exists only once a
    /// segment does.
    #[error("lab {prefix} has no segment, so no switch")]
    NoSwitch {
        /// The lab's prefix.
        prefix: String,
    },

    /// The lab was torn down and cannot be used or extended any more.
    #[error("lab {prefix} has been torn down")]
    TornDown {
        /// The lab's prefix.
        prefix: String,
    },

    /// A loss rate above 100 %.
    #[error("loss of {0}% is not a percentage")]
    NotAPercentage(u32),

    /// An address in CIDR form whose prefix length is not a number.
    #[error("bad prefix length in {addr:?}")]
    InvalidAddress {
        /// The address given.
        addr: String,
        /// Why the prefix length did not parse.
        #[source]
        source: std::num::ParseIntError,
    },

    /// A file, directory, thread or child-process operation failed.
    #[error("{what}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// An external command could not be started.
    #[error("starting `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },

    /// An external command ran past its deadline and was killed with its
    /// process group.
    #[error("`{command}` timed out after {timeout:?}; output so far: {stderr}")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The deadline it was given.
        timeout: Duration,
        /// What it had written to stderr.
        stderr: String,
    },

    /// An external command exited non-zero.
    #[error("`{command}`{place} failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Where it ran, e.g. ` in a` (empty when on the host itself).
        place: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },

    /// A command's output (`ip -j`, `nft --echo`) is not JSON.
    #[error("parsing the output of `{command}`")]
    Json {
        /// The command line.
        command: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A command's output lacks what the harness reads from it.
    #[error("no {what} in the output of `{command}`: {output:?}")]
    UnexpectedOutput {
        /// What was looked for.
        what: &'static str,
        /// The command line.
        command: String,
        /// The output.
        output: String,
    },

    /// Entering a network namespace from a thread failed.
    #[error("entering netns {ns}")]
    EnterNetns {
        /// The namespace.
        ns: String,
        /// The `setns` errno.
        #[source]
        source: Errno,
    },

    /// Looking at a spawned process with `waitid` failed.
    #[error("waiting for process {pid}")]
    Wait {
        /// The process.
        pid: u32,
        /// The `waitid` errno.
        #[source]
        source: Errno,
    },

    /// A process group could not be signalled.
    #[error("sending {signal} to process group {pgid}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The process group.
        pgid: i32,
        /// The `killpg` errno.
        #[source]
        source: Errno,
    },

    /// A signal for a process that has exited and been reaped: its pid
    /// may name another process by now.
    #[error("process {pid} has exited already")]
    Reaped {
        /// The process.
        pid: u32,
    },

    /// [`Proc::wait_log`](crate::Proc::wait_log): the process exited
    /// without logging the line.
    #[error("{label} (pid {pid}) exited before logging {needle:?}; {tail}")]
    ExitedBeforeLog {
        /// The process's label.
        label: String,
        /// Its pid.
        pid: u32,
        /// The text waited for.
        needle: String,
        /// The tail of its log.
        tail: String,
    },

    /// [`Proc::wait_log`](crate::Proc::wait_log): the line did not come in
    /// time.
    #[error("{label} (pid {pid}) did not log {needle:?} within {timeout:?}; {tail}")]
    LogTimeout {
        /// The process's label.
        label: String,
        /// Its pid.
        pid: u32,
        /// The text waited for.
        needle: String,
        /// How long it waited.
        timeout: Duration,
        /// The tail of its log.
        tail: String,
    },

    /// [`wait_for`](crate::wait_for) gave up.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
    },

    /// Making test certificates ([`write_certs`](crate::write_certs)).
    #[error("making test certificates for {name:?}")]
    Certificate {
        /// The CA or unit name.
        name: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },

    /// [`Lab::teardown`](crate::Lab::teardown) went on past these failures;
    /// calling it again retries them.
    #[error("tearing down lab {prefix}: {}", list(errors))]
    Teardown {
        /// The lab's prefix.
        prefix: String,
        /// Each failure.
        errors: Vec<Self>,
    },
}

/// The harness's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// `e` and its sources, `: `-separated (what `anyhow`'s `{:#}` prints), for
/// the harness's own messages on stderr.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

fn list(errors: &[Error]) -> String {
    errors.iter().map(|e| chain(e)).collect::<Vec<_>>().join("; ")
}
