//! Long-lived TCP connections through a load balancer, watched one by one:
//! an echo server (the real server) and a client that keeps K connections
//! open, each sending a small message every `interval` and reading it
//! back. At the end each connection is `ok`, `reset` (the connection was
//! refused, reset or broken) or `hung` (open, but no answer for
//! `hung_after`), and the longest silence each one saw (the data gap) is
//! reported. `duet-conns` is the command line, run inside namespaces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The message each connection sends: 16 bytes.
const MSG: &[u8; 16] = b"duet-conns-ping\n";

/// Serves echo on `listen` until killed.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    eprintln!("echo server on {listen}");
    loop {
        let (mut s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub target: SocketAddr,
    pub conns: usize,
    pub interval: Duration,
    /// How long the connections are kept after all are open.
    pub duration: Duration,
    /// Open connections over this long (not all in one burst).
    pub ramp: Duration,
    /// A connection without an answer this long at the end is hung.
    pub hung_after: Duration,
    /// Created when every connection is open and has had an answer.
    pub ready_file: Option<std::path::PathBuf>,
    /// The connections are kept until this file exists (or `duration`
    /// has passed, whichever comes first).
    pub stop_file: Option<std::path::PathBuf>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientReport {
    pub conns: usize,
    /// Opened and answered at least once.
    pub established: usize,
    pub ok: usize,
    pub reset: usize,
    pub hung: usize,
    /// Could not be opened at all.
    pub failed_connect: usize,
    /// Longest silence of each established connection: p50, p99, max (ms).
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
    /// The first few errors seen.
    pub errors: Vec<String>,
    /// When each hung connection last had an answer (wall clock, seconds
    /// since the UNIX epoch): whether it went silent before or after a
    /// fault.
    #[serde(default)]
    pub hung_last_answer: Vec<f64>,
}

#[derive(Debug)]
enum Outcome {
    NoConnect(String),
    Done { established: bool, reset: Option<String>, last_answer: Option<Instant>, max_gap: Duration },
}

async fn one(
    target: SocketAddr,
    interval: Duration,
    stop: Arc<AtomicBool>,
    answered: Arc<tokio::sync::Semaphore>,
) -> Outcome {
    let mut s = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::NoConnect(e.to_string()),
        Err(_) => return Outcome::NoConnect("connect timed out".into()),
    };
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.split();
    let mut last: Option<Instant> = None;
    let mut max_gap = Duration::ZERO;
    let mut first = true;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; 4096];
    let mut pending = 0usize;
    let reset = loop {
        if stop.load(Ordering::Relaxed) {
            break None;
        }
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = wr.write_all(MSG).await {
                    break Some(e.to_string());
                }
                pending += MSG.len();
            }
            r = rd.read(&mut buf) => match r {
                Ok(0) => break Some("closed by the peer".into()),
                Ok(n) => {
                    pending = pending.saturating_sub(n);
                    let now = Instant::now();
                    if let Some(l) = last {
                        max_gap = max_gap.max(now - l);
                    }
                    last = Some(now);
                    if first {
                        first = false;
                        answered.add_permits(1);
                    }
                }
                Err(e) => break Some(e.to_string()),
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let _ = pending;
    Outcome::Done { established: last.is_some(), reset, last_answer: last, max_gap }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Opens the connections, keeps them for `duration`, and reports.
pub async fn run_client(o: ClientOptions) -> anyhow::Result<ClientReport> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::with_capacity(o.conns);
    let gap = if o.conns > 1 { o.ramp / u32::try_from(o.conns).unwrap_or(u32::MAX) } else { Duration::ZERO };
    for _ in 0..o.conns {
        tasks.push(tokio::spawn(one(o.target, o.interval, Arc::clone(&stop), Arc::clone(&answered))));
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    // Everyone answered once (or the connections that will not, gave up).
    let all = u32::try_from(o.conns).unwrap_or(u32::MAX);
    let ready = tokio::time::timeout(Duration::from_secs(10), answered.acquire_many(all)).await;
    if ready.is_ok() {
        if let Some(f) = &o.ready_file {
            std::fs::write(f, b"ready\n")?;
        }
        eprintln!("all {} connections open and answered", o.conns);
    } else {
        eprintln!("not every connection was answered within 10 s");
    }
    let until = Instant::now() + o.duration;
    while Instant::now() < until && !o.stop_file.as_ref().is_some_and(|f| f.exists()) {
        tokio::time::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))).await;
    }
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut r = ClientReport { conns: o.conns, ..Default::default() };
    let mut gaps = Vec::new();
    for t in tasks {
        match t.await? {
            Outcome::NoConnect(e) => {
                r.failed_connect += 1;
                if r.errors.len() < 5 {
                    r.errors.push(format!("connect: {e}"));
                }
            }
            Outcome::Done { established, reset, last_answer, max_gap } => {
                if established {
                    r.established += 1;
                }
                // Silence up to the end counts as a gap too.
                let tail = last_answer.map_or(Duration::ZERO, |l| end.saturating_duration_since(l));
                gaps.push(max_gap.max(tail).as_secs_f64() * 1000.0);
                match reset {
                    Some(e) => {
                        r.reset += 1;
                        if r.errors.len() < 5 {
                            r.errors.push(e);
                        }
                    }
                    None if tail > o.hung_after => {
                        r.hung += 1;
                        let wall = std::time::SystemTime::now() - end.elapsed() - tail;
                        r.hung_last_answer
                            .push(wall.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
                    }
                    None => r.ok += 1,
                }
            }
        }
    }
    r.gap_p50_ms = pct(&mut gaps, 0.5);
    r.gap_p99_ms = pct(&mut gaps, 0.99);
    r.gap_max_ms = gaps.iter().copied().fold(0.0, f64::max);
    Ok(r)
}
