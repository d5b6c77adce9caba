//! The kernel's connection-tracking table over ctnetlink: dump it, create
//! or update entries (NAT bindings included), delete them, and follow the
//! kernel's notifications of its changes.
//!
//! [`Conntrack`] is a synchronous handle on one `NETLINK_NETFILTER` socket of
//! the network namespace of the thread that opened it. [`Conntrack::dump`]
//! lists the IPv4 flows; [`Conntrack::upsert`] writes many flows with a few
//! large `send`s (hundreds of netlink messages each, the kernel answering
//! only for failures and for the last message of each batch), creating each
//! one with the NAT bindings its tuples imply, or updating it if it exists;
//! [`Conntrack::delete`] removes one. [`events`] subscribes to the
//! `NFNLGRP_CONNTRACK_{NEW,UPDATE,DESTROY}` groups and yields [`CtEvent`]s
//! from an async [`CtEvents::next`]; an overrun of its socket buffer is an
//! item of its own, [`CtEvent::Overrun`], after which the caller must
//! resynchronise with a dump.
//!
//! This is what the replicator needs to copy the active unit's flows to the
//! standby ahead of a failover, and no more: only IPv4 flows of protocols
//! with ports (TCP, UDP, SCTP, DCCP, UDP-Lite) are read, ICMP and IPv6
//! entries are skipped; helpers, expectations, labels, sequence adjustment,
//! counters and timestamps are neither read nor written. It keeps no state
//! between calls and shells out to nothing. Every call needs
//! `CAP_NET_ADMIN` in the namespace.
//!
//! [`Conntrack`] blocks (each wait for the kernel is bounded by
//! [`REQUEST_TIMEOUT`]): call it from a blocking thread
//! (`tokio::task::spawn_blocking`) rather than from an async task.
//! [`CtEvents`] needs a tokio runtime with IO enabled.
//!
//! # Wire format
//!
//! Each message is a netlink header, then `struct nfgenmsg` (family
//! `AF_INET`, version 0, `res_id` 0), then attributes. Type is
//! `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_{NEW,GET,DELETE}`. A flow as
//! [`Conntrack::upsert`] writes it (`linux/netfilter/nfnetlink_conntrack.h`;
//! `N` marks a nest, which carries `NLA_F_NESTED`; multi-byte values in
//! network byte order unless said otherwise):
//!
//! ```text
//! CTA_TUPLE_ORIG N           CTA_TUPLE_REPLY N (same layout; untranslated
//!                            when NAT attributes follow)
//!   CTA_TUPLE_IP N             CTA_IP_V4_SRC, CTA_IP_V4_DST   4 bytes each
//!   CTA_TUPLE_PROTO N          CTA_PROTO_NUM u8, CTA_PROTO_{SRC,DST}_PORT be16
//! CTA_ZONE be16                (only when not 0)
//! CTA_STATUS be32              IPS_* bits (which ones: see below)
//! CTA_TIMEOUT be32             seconds
//! CTA_MARK be32
//! CTA_PROTOINFO N              (TCP only)
//!   CTA_PROTOINFO_TCP N
//!     CTA_PROTOINFO_TCP_STATE u8, CTA_PROTOINFO_TCP_WSCALE_{ORIGINAL,REPLY} u8,
//!     CTA_PROTOINFO_TCP_FLAGS_{ORIGINAL,REPLY} struct nf_ct_tcp_flags { u8 flags; u8 mask }
//! CTA_NAT_DST N, CTA_NAT_SRC N (creation only)
//!   CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP   4 bytes each
//!   CTA_NAT_PROTO N            CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX be16
//! ```
//!
//! Kernel behaviour this relies on (`net/netfilter/nf_conntrack_netlink.c`):
//! - creation needs both tuples and `CTA_TIMEOUT`; with `CTA_NAT_*` the
//!   kernel recomputes the reply tuple from the original one and the NAT
//!   ranges (exactly the translated address and port here), and sets
//!   `IPS_{SRC,DST}_NAT` (without which packets are not rewritten) only if
//!   that changes the reply tuple it was given: a NAT'd flow is created
//!   with the untranslated reply tuple (the original one reversed);
//! - a manipulation without its `CTA_NAT_*` attribute gets a null binding
//!   when the other one is given;
//! - `CTA_NAT_*` on an existing entry is refused (`EOPNOTSUPP`): NAT can only
//!   be set at creation, hence create with `NLM_F_EXCL` first and update
//!   without NAT on `EEXIST`;
//! - `CTA_STATUS` may not flip `IPS_EXPECTED`, `IPS_CONFIRMED` or `IPS_DYING`
//!   (`EBUSY`), and `IPS_CONFIRMED` is already set when it is applied at
//!   creation: the status sent always has `IPS_CONFIRMED` and never the other
//!   two (as libnetfilter_conntrack does). NAT and offload bits are ignored;
//!   an update that would clear `IPS_SEEN_REPLY` or `IPS_ASSURED` is refused
//!   (`EBUSY`, reported per flow);
//! - TCP window scales are applied only when both directions' flags have
//!   `IP_CT_TCP_FLAG_WINDOW_SCALE`, flags are applied first.
//!
//! Over 600 lines: ctnetlink's messages both ways (encode for writes, decode
//! for dumps and events) with their attribute tables; about half is tests,
//! many against the kernel.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use rtnetlink::sys::protocols::NETLINK_NETFILTER;
use rtnetlink::sys::{Socket, SocketAddr};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::debug;

/// How long a [`Conntrack`] call waits for each answer of the kernel.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer asked for by [`events`]: room for tens of thousands of
/// notifications, a burst such as a flush or a SYN flood. The kernel grants
/// it to `CAP_NET_ADMIN` whatever `net.core.rmem_max` says.
pub const EVENT_SOCKET_BUFFER: usize = 32 << 20;

/// At most this many per-flow errors are kept in an [`UpsertReport`].
pub const MAX_REPORTED_ERRORS: usize = 16;

/// Receive buffer of the request socket. It must hold the kernel's answers
/// to a whole batch in the worst case, one per message (see
/// [`ANSWER_TRUESIZE`]).
const CONTROL_SOCKET_BUFFER: usize = 8 << 20;

/// Send buffer of the request socket: the kernel refuses a `send` longer
/// than the buffer.
const CONTROL_SEND_BUFFER: usize = 1 << 20;

/// Bytes of netlink messages per `send`. Larger batches save syscalls but
/// the kernel copies each into one buffer; measured with `duet-bench
/// conntrack`, gains stop well below this.
const BATCH_BYTES: usize = 128 << 10;

/// Generous upper bound of one encoded flow message (about 240 bytes).
const MAX_FLOW_MESSAGE: usize = 512;

/// Kernel memory charged to the receive buffer for one error answer (a
/// small skb): used to bound a batch so that even all-failed answers fit.
const ANSWER_TRUESIZE: usize = 1024;

/// Bounds of the number of messages per batch.
const MIN_BATCH_MESSAGES: usize = 16;
const MAX_BATCH_MESSAGES: usize = 4096;

/// Receive buffer for one datagram of answers (a dump part is at most about
/// 32 KiB).
const RECV_BUFFER: usize = 64 << 10;

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNETLINK_V0: u8 = 0;
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const AF_INET: u8 = libc::AF_INET as u8;

// linux/netfilter/nfnetlink_conntrack.h
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_NAT_SRC: u16 = 6;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_NAT_DST: u16 = 13;
const CTA_ZONE: u16 = 18;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;

const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;

const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: u16 = 2;
const CTA_PROTOINFO_TCP_WSCALE_REPLY: u16 = 3;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;

const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
const CTA_NAT_PROTO: u16 = 3;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;

/// IP protocol numbers of [`Tuple::proto`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

// Status bits of [`Flow::status`] (`enum ip_conntrack_status`).
/// An expected (related) connection, e.g. FTP data. Cannot be set through
/// ctnetlink; cleared from what [`Conntrack::upsert`] sends.
pub const IPS_EXPECTED: u32 = 1 << 0;
/// Packets have been seen both ways.
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
/// Never dropped early when the table is full.
pub const IPS_ASSURED: u32 = 1 << 2;
/// In the table (every entry a dump returns has it).
pub const IPS_CONFIRMED: u32 = 1 << 3;
/// The source is translated (the reply tuple says to what).
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// The destination is translated (the reply tuple says to what).
pub const IPS_DST_NAT: u32 = 1 << 5;
/// Source NAT binding done (possibly a null binding).
pub const IPS_SRC_NAT_DONE: u32 = 1 << 7;
/// Destination NAT binding done (possibly a null binding).
pub const IPS_DST_NAT_DONE: u32 = 1 << 8;
/// Being removed; seen in destroy events.
pub const IPS_DYING: u32 = 1 << 9;

// TCP states of [`TcpInfo::state`] (`enum tcp_conntrack`).
pub const TCP_CONNTRACK_NONE: u8 = 0;
pub const TCP_CONNTRACK_SYN_SENT: u8 = 1;
pub const TCP_CONNTRACK_SYN_RECV: u8 = 2;
pub const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
pub const TCP_CONNTRACK_FIN_WAIT: u8 = 4;
pub const TCP_CONNTRACK_CLOSE_WAIT: u8 = 5;
pub const TCP_CONNTRACK_LAST_ACK: u8 = 6;
pub const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
pub const TCP_CONNTRACK_CLOSE: u8 = 8;

// Per-direction TCP flags of [`TcpInfo`] (`IP_CT_TCP_FLAG_*`).
/// The sender advertised window scaling.
pub const IP_CT_TCP_FLAG_WINDOW_SCALE: u8 = 0x01;
/// The sender permitted SACK.
pub const IP_CT_TCP_FLAG_SACK_PERM: u8 = 0x02;
/// The sender sent the first FIN.
pub const IP_CT_TCP_FLAG_CLOSE_INIT: u8 = 0x04;
/// Do not check this direction's sequence numbers against the window.
pub const IP_CT_TCP_FLAG_BE_LIBERAL: u8 = 0x08;

/// Why a conntrack operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netlink socket could not be opened or set up.
    #[error("cannot set up the ctnetlink socket ({what}): {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// [`events`] was called on a thread without a tokio runtime.
    #[error("conntrack events need a tokio runtime (IO enabled) on the calling thread")]
    NoRuntime,
    /// Sending to the kernel failed.
    #[error("cannot send to ctnetlink: {source}")]
    Send {
        #[source]
        source: io::Error,
    },
    /// Receiving from the kernel failed.
    #[error("cannot receive from ctnetlink: {source}")]
    Recv {
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer within [`REQUEST_TIMEOUT`].
    #[error("{what}: no answer from the kernel within {REQUEST_TIMEOUT:?}")]
    Timeout { what: &'static str },
    /// The caller lacks `CAP_NET_ADMIN` in the socket's namespace.
    #[error("{what}: permission denied (needs CAP_NET_ADMIN)")]
    PermissionDenied { what: &'static str },
    /// The kernel refused a request that is not about one flow.
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel dropped some of its answers to a batch (receive buffer
    /// overrun), so which flows of the call were written is unknown. Writes
    /// are idempotent: the call can be repeated.
    #[error("{what}: the kernel dropped answers (receive buffer overrun); outcome unknown, retry")]
    AnswersLost { what: &'static str },
    /// A message from the kernel could not be decoded.
    #[error("undecodable ctnetlink message: {0}")]
    Decode(#[from] DecodeError),
}

/// Why a message from the kernel could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A netlink header whose length runs past the datagram, or a datagram
    /// larger than the receive buffer.
    #[error("truncated message")]
    Truncated,
    /// No `nfgenmsg` header after the netlink header.
    #[error("no nfgenmsg header")]
    NoHeader,
    /// The original or reply tuple is missing.
    #[error("no {0} tuple")]
    MissingTuple(&'static str),
    /// A tuple without both IPv4 addresses.
    #[error("a tuple without both IPv4 addresses")]
    MissingAddress,
    /// A tuple without a protocol number.
    #[error("a tuple without a protocol number")]
    MissingProtocol,
    /// An attribute shorter than its type requires.
    #[error("attribute {0} is too short")]
    ShortAttribute(u16),
}

/// One direction of a connection as conntrack sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol: [`PROTO_TCP`], [`PROTO_UDP`], ...
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    /// The same connection seen from the other end: what the reply tuple
    /// of a flow without NAT is.
    pub fn reversed(&self) -> Self {
        Self { proto: self.proto, src: self.dst, dst: self.src, sport: self.dport, dport: self.sport }
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => return write!(f, "proto {} {}:{} -> {}:{}", self.proto, self.src, self.sport, self.dst, self.dport),
        };
        write!(f, "{proto} {}:{} -> {}:{}", self.src, self.sport, self.dst, self.dport)
    }
}

/// TCP tracking state of a flow (`CTA_PROTOINFO_TCP`).
///
/// Sequence and window positions are not carried (ctnetlink does not
/// expose them): an entry created from this picks them up from the next
/// packets, as for a connection seen mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpInfo {
    /// `TCP_CONNTRACK_*`.
    pub state: u8,
    /// Window scale shifts of each direction; applied by the kernel only
    /// when both flags have [`IP_CT_TCP_FLAG_WINDOW_SCALE`].
    pub wscale_orig: u8,
    pub wscale_reply: u8,
    /// `IP_CT_TCP_FLAG_*` of each direction. Written as given: bits clear
    /// here are cleared in the kernel too.
    pub flags_orig: u8,
    pub flags_reply: u8,
}

/// One conntrack entry.
///
/// Entries read from events are partial: an update carries [`Flow::tcp`]
/// only when the TCP state changed (`None` otherwise), a destroy has
/// `timeout_s` 0 and only the TCP state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// As the first packet came in.
    pub orig: Tuple,
    /// As answers are expected: the reversed original tuple, with the NAT
    /// translations applied (see [`Flow::dnat`], [`Flow::snat`]).
    pub reply: Tuple,
    /// `IPS_*` bits.
    pub status: u32,
    /// Seconds until the entry expires unless a packet refreshes it.
    pub timeout_s: u32,
    /// The connection mark (`ct mark`).
    pub mark: u32,
    /// Conntrack zone (0 is the default); directional zones are not
    /// supported.
    pub zone: u16,
    /// TCP tracking state; `None` for other protocols (or, in an update
    /// event, when it did not change).
    pub tcp: Option<TcpInfo>,
}

impl Flow {
    /// Where the destination was translated to, if it was: the reply
    /// tuple's source differs from the original destination.
    pub fn dnat(&self) -> Option<(Ipv4Addr, u16)> {
        let (to, port) = (self.reply.src, self.reply.sport);
        (to != self.orig.dst || port != self.orig.dport).then_some((to, port))
    }

    /// Where the source was translated to, if it was: the reply tuple's
    /// destination differs from the original source.
    pub fn snat(&self) -> Option<(Ipv4Addr, u16)> {
        let (to, port) = (self.reply.dst, self.reply.dport);
        (to != self.orig.src || port != self.orig.sport).then_some((to, port))
    }
}

/// The kind of a conntrack notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An entry was created (by a packet or through ctnetlink).
    New,
    /// An entry changed: status, TCP state, mark...
    Update,
    /// An entry was removed (expired, deleted or flushed).
    Destroy,
}

/// One item of [`CtEvents`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtEvent {
    /// A change of one IPv4 flow with ports.
    Flow(EventKind, Flow),
    /// The kernel had to drop notifications because the socket buffer was
    /// full: the caller's copy of the table is now stale and must be
    /// rebuilt from a [`Conntrack::dump`]. Events go on after this. The
    /// kernel reports the loss on the next read, so notifications queued
    /// before it may still follow this item; they are older than a dump
    /// started now.
    Overrun,
}

/// A flow [`Conntrack::upsert`] could not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowError {
    /// The flow's original tuple (and zone).
    pub orig: Tuple,
    pub zone: u16,
    /// The kernel's errno. `EEXIST` here means another entry holds the
    /// flow's reply tuple.
    pub errno: i32,
}

impl FlowError {
    /// The errno as an [`io::Error`].
    pub fn error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (zone {}): {}", self.orig, self.zone, self.error())
    }
}

/// What [`Conntrack::upsert`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertReport {
    /// Flows created.
    pub created: usize,
    /// Flows that existed and were updated (timeout, status, TCP state,
    /// mark; not their NAT binding, which the kernel cannot change).
    pub updated: usize,
    /// Flows the kernel refused.
    pub failed: usize,
    /// The first [`MAX_REPORTED_ERRORS`] refusals.
    pub errors: Vec<FlowError>,
}

impl UpsertReport {
    fn fail(&mut self, flow: &Flow, errno: i32) {
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(FlowError { orig: flow.orig, zone: flow.zone, errno });
        }
    }
}

/// How a flow message is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Create only (`NLM_F_CREATE | NLM_F_EXCL`), with NAT bindings.
    Create,
    /// Change an existing entry (no flags), without NAT.
    Update,
}

/// A synchronous ctnetlink handle; see the [module](self) documentation.
#[derive(Debug)]
pub struct Conntrack {
    sock: Socket,
    seq: u32,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    batch_bytes: usize,
    batch_messages: usize,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace (sockets
    /// stay in the namespace they were created in, so the handle may move
    /// to another thread afterwards). Needs no privilege; the requests do.
    pub fn open() -> Result<Self, ConntrackError> {
        let setup = |what| move |source| ConntrackError::Socket { what, source };
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(setup("socket"))?;
        sock.bind_auto().map_err(setup("bind"))?;
        // Errors then echo only the failed message's header, not the whole
        // message: smaller answers, more of them fit in the buffer.
        sock.set_cap_ack(true).map_err(setup("NETLINK_CAP_ACK"))?;
        let recv = grow_buffer(&sock, Direction::Receive, CONTROL_SOCKET_BUFFER);
        let send = grow_buffer(&sock, Direction::Send, CONTROL_SEND_BUFFER);
        SockRef::from(&sock).set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(setup("SO_RCVTIMEO"))?;
        // The kernel refuses a send longer than its send buffer less 32 bytes.
        let batch_bytes = BATCH_BYTES.min(send.saturating_sub(64)).max(MAX_FLOW_MESSAGE);
        let batch_messages = (recv / ANSWER_TRUESIZE).clamp(MIN_BATCH_MESSAGES, MAX_BATCH_MESSAGES);
        Ok(Self {
            sock,
            seq: 1,
            send_buf: Vec::with_capacity(batch_bytes + MAX_FLOW_MESSAGE),
            recv_buf: Vec::with_capacity(RECV_BUFFER),
            batch_bytes,
            batch_messages,
        })
    }

    /// Every IPv4 flow with ports in the table, all zones.
    ///
    /// The kernel walks its hash table while the dump is read: entries
    /// created or removed meanwhile may or may not be in it.
    pub fn dump(&mut self) -> Result<Vec<Flow>, ConntrackError> {
        self.dump_filtered(|_| true)
    }

    /// As [`dump`](Self::dump), keeping only the flows `keep` accepts, e.g.
    /// `|f| f.orig.dst == vip`; the others are dropped as they are decoded.
    pub fn dump_filtered(&mut self, mut keep: impl FnMut(&Flow) -> bool) -> Result<Vec<Flow>, ConntrackError> {
        let what = "dump";
        let seq = self.next_seqs(1);
        self.send_buf.clear();
        Writer::new(&mut self.send_buf, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq).finish();
        self.send()?;
        let mut flows = Vec::new();
        loop {
            self.recv(what)?;
            for msg in Messages::new(&self.recv_buf) {
                let msg = msg?;
                if msg.seq != seq {
                    continue; // a late answer to an earlier request
                }
                match msg.ty {
                    NLMSG_DONE => {
                        return match error_code(msg.payload) {
                            Some(errno) if errno < 0 => Err(kernel_error(what, -errno)),
                            _ => Ok(flows),
                        };
                    }
                    NLMSG_ERROR => match error_code(msg.payload) {
                        Some(0) => {}
                        Some(errno) if -errno == libc::EPERM => return Err(ConntrackError::PermissionDenied { what }),
                        Some(errno) => return Err(kernel_error(what, -errno)),
                        None => return Err(DecodeError::Truncated.into()),
                    },
                    ty if ty == ct_type(IPCTNL_MSG_CT_NEW) => {
                        if let Some(flow) = parse_flow(msg.payload)?
                            && keep(&flow)
                        {
                            flows.push(flow);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Creates each flow, or updates it if an entry with its original
    /// tuple (and zone) exists.
    ///
    /// A new entry gets the NAT bindings its tuples imply ([`Flow::dnat`],
    /// [`Flow::snat`]; identity bindings when only the `*_NAT_DONE` status
    /// bits say NAT had run), the status (see the module notes on which bits
    /// are written), timeout, mark, zone and TCP state, so it is the same
    /// connection as on the unit it was dumped from. An existing entry gets
    /// all of that except the NAT bindings, which the kernel cannot change:
    /// if its reply tuple differs, it keeps it.
    ///
    /// Messages go out in batches of about 128 KiB (some 500 flows) per
    /// `send`, and the kernel answers only for failures and for each batch's
    /// last message. Flows whose creation finds them existing are sent
    /// again as updates, and those that vanished in between as creations.
    /// Per-flow refusals are counted in the report, not returned as errors;
    /// an `Err` means the outcome of some flows is unknown (repeating the
    /// call is safe).
    pub fn upsert(&mut self, flows: &[Flow]) -> Result<UpsertReport, ConntrackError> {
        let mut report = UpsertReport::default();
        let mut existing = Vec::new();
        self.write(flows, 0..flows.len(), Write::Create, |i, errno| match errno {
            0 => report.created += 1,
            libc::EEXIST => existing.push(i),
            _ => report.fail(&flows[i], errno),
        })?;
        let mut vanished = Vec::new();
        self.write(flows, existing.iter().copied(), Write::Update, |i, errno| match errno {
            0 => report.updated += 1,
            // It expired between the two requests, or the creation collided
            // with another entry on the reply tuple; a second creation tells.
            libc::ENOENT => vanished.push(i),
            _ => report.fail(&flows[i], errno),
        })?;
        self.write(flows, vanished.iter().copied(), Write::Create, |i, errno| match errno {
            0 => report.created += 1,
            _ => report.fail(&flows[i], errno),
        })?;
        Ok(report)
    }

    /// Deletes the entry whose original tuple is `orig`, in zone 0.
    /// Returns `false` if there was none.
    pub fn delete(&mut self, orig: &Tuple) -> Result<bool, ConntrackError> {
        self.delete_in_zone(orig, 0)
    }

    /// As [`delete`](Self::delete), in conntrack zone `zone`.
    pub fn delete_in_zone(&mut self, orig: &Tuple, zone: u16) -> Result<bool, ConntrackError> {
        let what = "delete";
        let seq = self.next_seqs(1);
        self.send_buf.clear();
        let mut w = Writer::new(&mut self.send_buf, IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq);
        put_tuple(&mut w, CTA_TUPLE_ORIG, orig);
        if zone != 0 {
            w.attr(CTA_ZONE, &zone.to_be_bytes());
        }
        w.finish();
        self.send()?;
        let mut outcome = 0;
        self.collect_answers(what, seq, 1, |_, errno| outcome = errno)?;
        match outcome {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            errno => Err(ConntrackError::Kernel {
                what: format!("cannot delete {orig} (zone {zone})"),
                source: io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Sends `flows[i]` for each `i` of `indices` as `how`, in batches, and
    /// calls `outcome(i, errno)` for each (0: done).
    fn write(
        &mut self,
        flows: &[Flow],
        indices: impl IntoIterator<Item = usize>,
        how: Write,
        mut outcome: impl FnMut(usize, i32),
    ) -> Result<(), ConntrackError> {
        let what = match how {
            Write::Create => "create flows",
            Write::Update => "update flows",
        };
        let mut indices = indices.into_iter().peekable();
        let mut batch = Vec::with_capacity(self.batch_messages);
        while indices.peek().is_some() {
            batch.clear();
            self.send_buf.clear();
            let base = self.seq;
            let mut last = 0;
            while let Some(&i) = indices.peek() {
                if batch.len() == self.batch_messages || self.send_buf.len() + MAX_FLOW_MESSAGE > self.batch_bytes {
                    break;
                }
                indices.next();
                last = self.send_buf.len();
                encode_flow(&mut self.send_buf, &flows[i], how, base.wrapping_add(batch.len() as u32));
                batch.push(i);
            }
            // Only the last message asks for an acknowledgement: the kernel
            // handles a batch's messages in order, so its answer to that one
            // comes after those to every failure before it.
            set_flags(&mut self.send_buf, last, NLM_F_ACK);
            self.next_seqs(batch.len() as u32);
            self.send()?;
            self.collect_answers(what, base, batch.len(), |k, errno| outcome(batch[k], errno))?;
        }
        Ok(())
    }

    /// Reads the kernel's answers to the `count` messages numbered from
    /// `base`, until the one to the last message, calling `outcome(k,
    /// errno)` for each message `k` (0: no error).
    fn collect_answers(
        &mut self,
        what: &'static str,
        base: u32,
        count: usize,
        mut outcome: impl FnMut(usize, i32),
    ) -> Result<(), ConntrackError> {
        let mut next = 0; // messages before this one have had their outcome
        while next < count {
            self.recv(what)?;
            for msg in Messages::new(&self.recv_buf) {
                let msg = msg?;
                let k = msg.seq.wrapping_sub(base) as usize;
                if msg.ty != NLMSG_ERROR || k >= count || k < next {
                    continue; // not an answer to this batch
                }
                let errno = error_code(msg.payload).ok_or(DecodeError::Truncated)?.saturating_neg();
                if errno == libc::EPERM {
                    // Without CAP_NET_ADMIN the kernel refuses the whole
                    // datagram with one answer to its first message.
                    return Err(ConntrackError::PermissionDenied { what });
                }
                // Silence from the kernel means success.
                for ok in next..k {
                    outcome(ok, 0);
                }
                outcome(k, errno);
                next = k + 1;
            }
        }
        Ok(())
    }

    fn next_seqs(&mut self, count: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(count);
        first
    }

    fn send(&mut self) -> Result<(), ConntrackError> {
        loop {
            match self.sock.send(&self.send_buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ConntrackError::Send { source }),
            }
        }
    }

    /// Receives one datagram into `recv_buf`.
    fn recv(&mut self, what: &'static str) -> Result<(), ConntrackError> {
        loop {
            self.recv_buf.clear();
            match self.sock.recv(&mut self.recv_buf, libc::MSG_TRUNC) {
                // With MSG_TRUNC the datagram's real length is returned.
                Ok(n) if n > self.recv_buf.len() => return Err(DecodeError::Truncated.into()),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(ConntrackError::Timeout { what }),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(ConntrackError::AnswersLost { what });
                }
                Err(source) => return Err(ConntrackError::Recv { source }),
            }
        }
    }
}

/// Subscribes to conntrack notifications (new, updated and destroyed
/// entries) of the calling thread's network namespace, with a receive
/// buffer of [`EVENT_SOCKET_BUFFER`]. Needs `CAP_NET_ADMIN` and a tokio
/// runtime with IO enabled.
pub fn events() -> Result<CtEvents, ConntrackError> {
    CtEvents::open(EVENT_SOCKET_BUFFER)
}

/// A subscription to conntrack notifications; see [`events`].
///
/// Nothing is queued in user space beyond the datagram being read: the
/// kernel's socket buffer is the queue, so a consumer that lags makes the
/// kernel drop notifications, which it reports as [`CtEvent::Overrun`].
/// Notifications about IPv6 entries and flows without ports are skipped.
#[derive(Debug)]
pub struct CtEvents {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
    pending: VecDeque<CtEvent>,
    buffer_size: usize,
    undecodable: u64,
}

impl CtEvents {
    /// As [`events`], asking for a receive buffer of `recv_buffer` bytes
    /// (the kernel doubles the figure for its bookkeeping and has a floor
    /// of a few KiB).
    pub fn open(recv_buffer: usize) -> Result<Self, ConntrackError> {
        tokio::runtime::Handle::try_current().map_err(|_| ConntrackError::NoRuntime)?;
        let setup = |what| move |source| ConntrackError::Socket { what, source };
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(setup("socket"))?;
        let groups = [NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY]
            .iter()
            .fold(0, |mask, group| mask | (1 << (group - 1)));
        sock.bind(&SocketAddr::new(0, groups)).map_err(setup("bind to the conntrack groups"))?;
        sock.set_non_blocking(true).map_err(setup("non-blocking"))?;
        let buffer_size = grow_buffer(&sock, Direction::Receive, recv_buffer);
        let fd = register(sock).map_err(setup("register with tokio"))?;
        Ok(Self { fd, buf: Vec::with_capacity(RECV_BUFFER), pending: VecDeque::new(), buffer_size, undecodable: 0 })
    }

    /// The next notification. Cancel safe: dropping the future loses
    /// nothing.
    pub async fn next(&mut self) -> Result<CtEvent, ConntrackError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let received = {
                let mut guard = self.fd.readable().await.map_err(|source| ConntrackError::Recv { source })?;
                let buf = &mut self.buf;
                guard.try_io(|fd| {
                    buf.clear();
                    fd.get_ref().recv(buf, libc::MSG_TRUNC)
                })
            };
            // Everything from here on is synchronous, so a cancelled `next`
            // has either read nothing or queued what it read.
            match received {
                Err(_would_block) => {}
                Ok(Ok(n)) if n > self.buf.len() => self.skip_undecodable(DecodeError::Truncated),
                Ok(Ok(_)) => self.decode(),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(CtEvent::Overrun),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(source)) => return Err(ConntrackError::Recv { source }),
            }
        }
    }

    /// The receive buffer the kernel granted, in bytes (its doubled figure).
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// Notifications skipped because they could not be decoded (none is
    /// expected from a sane kernel).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    fn decode(&mut self) {
        let mut failed = None;
        for msg in Messages::new(&self.buf) {
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if msg.ty >> 8 != NFNL_SUBSYS_CTNETLINK {
                continue;
            }
            let kind = match msg.ty & 0xff {
                IPCTNL_MSG_CT_DELETE => EventKind::Destroy,
                IPCTNL_MSG_CT_NEW if msg.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => EventKind::New,
                IPCTNL_MSG_CT_NEW => EventKind::Update,
                _ => continue,
            };
            match parse_flow(msg.payload) {
                Ok(Some(flow)) => self.pending.push_back(CtEvent::Flow(kind, flow)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.skip_undecodable(e);
        }
    }

    fn skip_undecodable(&mut self, e: DecodeError) {
        self.undecodable += 1;
        debug!(total = self.undecodable, "conntrack events: skipping an undecodable notification: {e}");
    }
}

/// Registers the event socket with tokio's reactor for readability.
#[allow(unsafe_code)]
fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor (it closes it on drop) and
    // `as_raw_fd` always returns that one; it is moved into the `AsyncFd`,
    // which drops it last, and is never cloned.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }.map_err(io::Error::from)
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Receive,
    Send,
}

/// Asks for a socket buffer of `bytes`, past `net.core.{r,w}mem_max` when
/// privileged (`SO_{RCV,SND}BUFFORCE`), up to the limit otherwise. Returns
/// the size the kernel granted (doubled, as it reports it); on failure the
/// buffer stays as it was, which only makes batches smaller.
fn grow_buffer(sock: &Socket, direction: Direction, bytes: usize) -> usize {
    let sock = SockRef::from(sock);
    let (force, plain) = match direction {
        Direction::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        Direction::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    };
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if set_socket_option(&sock, force, value).is_err()
        && let Err(e) = set_socket_option(&sock, plain, value)
    {
        debug!("conntrack: cannot resize a socket buffer to {bytes} bytes: {e}");
    }
    let granted = match direction {
        Direction::Receive => sock.recv_buffer_size(),
        Direction::Send => sock.send_buffer_size(),
    };
    granted.unwrap_or(0)
}

/// `setsockopt(SOL_SOCKET, name, value)` for an integer option.
#[allow(unsafe_code)]
fn set_socket_option(sock: &SockRef<'_>, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, a live `c_int`, which
    // the kernel only reads during the call; the descriptor is borrowed from
    // an open socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn kernel_error(what: &'static str, errno: i32) -> ConntrackError {
    ConntrackError::Kernel { what: what.to_owned(), source: io::Error::from_raw_os_error(errno) }
}

fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// The status written for `flow` (see the module notes).
fn status_to_send(status: u32) -> u32 {
    (status & !(IPS_EXPECTED | IPS_DYING)) | IPS_CONFIRMED
}

/// A NAT binding to exactly this address and port.
type Binding = Option<(Ipv4Addr, u16)>;

/// The NAT bindings to ask for when creating `flow`: destination, source.
fn nat_bindings(flow: &Flow) -> (Binding, Binding) {
    let (dnat, snat) = (flow.dnat(), flow.snat());
    if dnat.is_none() && snat.is_none() && flow.status & (IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE) != 0 {
        // NAT ran on the original without translating: bind the
        // destination to itself (the kernel adds the same for the source),
        // as the NAT hooks would have, so the status bits match.
        return (Some((flow.orig.dst, flow.orig.dport)), None);
    }
    (dnat, snat)
}

/// Appends the message writing `flow` as `how`, numbered `seq`.
fn encode_flow(buf: &mut Vec<u8>, flow: &Flow, how: Write, seq: u32) {
    let (flags, (dnat, snat)) = match how {
        Write::Create => (NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, nat_bindings(flow)),
        Write::Update => (NLM_F_REQUEST, (None, None)),
    };
    // With NAT, the kernel derives the reply tuple from the original one and
    // the bindings, and marks the entry translated (IPS_*_NAT, which makes
    // its packets rewritten) only if that changes the reply tuple it was
    // given: so it gets the untranslated one.
    let reply = if dnat.is_some() || snat.is_some() { flow.orig.reversed() } else { flow.reply };
    let mut w = Writer::new(buf, IPCTNL_MSG_CT_NEW, flags, seq);
    put_tuple(&mut w, CTA_TUPLE_ORIG, &flow.orig);
    put_tuple(&mut w, CTA_TUPLE_REPLY, &reply);
    if flow.zone != 0 {
        w.attr(CTA_ZONE, &flow.zone.to_be_bytes());
    }
    w.attr(CTA_STATUS, &status_to_send(flow.status).to_be_bytes());
    w.attr(CTA_TIMEOUT, &flow.timeout_s.to_be_bytes());
    w.attr(CTA_MARK, &flow.mark.to_be_bytes());
    if let Some(tcp) = &flow.tcp {
        w.nest(CTA_PROTOINFO, |w| {
            w.nest(CTA_PROTOINFO_TCP, |w| {
                w.attr(CTA_PROTOINFO_TCP_STATE, &[tcp.state]);
                w.attr(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, &[tcp.wscale_orig]);
                w.attr(CTA_PROTOINFO_TCP_WSCALE_REPLY, &[tcp.wscale_reply]);
                // struct nf_ct_tcp_flags { flags, mask }: every bit written.
                w.attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &[tcp.flags_orig, 0xff]);
                w.attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, &[tcp.flags_reply, 0xff]);
            });
        });
    }
    if let Some((addr, port)) = dnat {
        put_nat(&mut w, CTA_NAT_DST, addr, port);
    }
    if let Some((addr, port)) = snat {
        put_nat(&mut w, CTA_NAT_SRC, addr, port);
    }
    w.finish();
}

fn put_tuple(w: &mut Writer<'_>, ty: u16, t: &Tuple) {
    w.nest(ty, |w| {
        w.nest(CTA_TUPLE_IP, |w| {
            w.attr(CTA_IP_V4_SRC, &t.src.octets());
            w.attr(CTA_IP_V4_DST, &t.dst.octets());
        });
        w.nest(CTA_TUPLE_PROTO, |w| {
            w.attr(CTA_PROTO_NUM, &[t.proto]);
            w.attr(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
            w.attr(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
        });
    });
}

/// A NAT binding to exactly `addr:port`.
fn put_nat(w: &mut Writer<'_>, ty: u16, addr: Ipv4Addr, port: u16) {
    w.nest(ty, |w| {
        w.attr(CTA_NAT_V4_MINIP, &addr.octets());
        w.attr(CTA_NAT_V4_MAXIP, &addr.octets());
        w.nest(CTA_NAT_PROTO, |w| {
            w.attr(CTA_PROTONAT_PORT_MIN, &port.to_be_bytes());
            w.attr(CTA_PROTONAT_PORT_MAX, &port.to_be_bytes());
        });
    });
}

/// ORs `flags` into the netlink header at `offset` of `buf`.
fn set_flags(buf: &mut [u8], offset: usize, flags: u16) {
    if let Some(field) = buf.get_mut(offset + 6..offset + 8) {
        let old = u16::from_ne_bytes([field[0], field[1]]);
        field.copy_from_slice(&(old | flags).to_ne_bytes());
    }
}

/// Appends one ctnetlink message to a buffer: the netlink header, the
/// `nfgenmsg` (AF_INET, version 0, resource 0) and attributes; the lengths
/// are filled in as nests and the message end.
///
/// Messages are far below 64 KiB, so attribute lengths fit their u16.
struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut Vec<u8>, msg: u16, flags: u16, seq: u32) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&ct_type(msg).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.extend_from_slice(&[AF_INET, NFNETLINK_V0, 0, 0]);
        Self { buf, start }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len() + (align4(len) - len), 0);
    }

    fn nest(&mut self, ty: u16, body: impl FnOnce(&mut Self)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        body(self);
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(self) {
        let len = (self.buf.len() - self.start) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    /// What follows the netlink header.
    payload: &'a [u8],
}

/// The netlink messages of a datagram; stops after the first malformed one
/// (yielded as an error).
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Self { rest: datagram }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.len() < NLMSG_HDRLEN {
            // Nothing, or padding.
            self.rest = &[];
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            self.rest = &[];
            return Some(Err(DecodeError::Truncated));
        }
        let msg = Message {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        self.rest = &rest[align4(len).min(rest.len())..];
        Some(Ok(msg))
    }
}

/// The flows of a datagram of ctnetlink messages as the kernel sends them
/// (one result per message: a flow, `None` for one this module does not
/// handle, or why it cannot be read). The parser every dump and event goes
/// through, open for the fuzzer and tools.
pub fn decode_datagram(datagram: &[u8]) -> Vec<Result<Option<Flow>, DecodeError>> {
    Messages::new(datagram).map(|m| m.and_then(|m| parse_flow(m.payload))).collect()
}

/// `flow` as the message that creates it (with its NAT bindings), as sent
/// to the kernel: what [`decode_datagram`] reads back.
pub fn encode_create(flow: &Flow) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_flow(&mut buf, flow, Write::Create, 1);
    buf
}

/// The (negative) errno of an `NLMSG_ERROR` or `NLMSG_DONE` payload.
fn error_code(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// The attributes of a payload: type (without the nested and byte-order
/// flags) and value. Stops at the first malformed header, whose value would
/// run past the end.
struct Attrs<'a> {
    rest: &'a [u8],
}

fn attrs(payload: &[u8]) -> Attrs<'_> {
    Attrs { rest: payload }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            self.rest = &[];
            return None;
        }
        self.rest = &rest[align4(len).min(rest.len())..];
        Some((ty, &rest[4..len]))
    }
}

fn u8_of(ty: u16, value: &[u8]) -> Result<u8, DecodeError> {
    value.first().copied().ok_or(DecodeError::ShortAttribute(ty))
}

fn be16_of(ty: u16, value: &[u8]) -> Result<u16, DecodeError> {
    let bytes = value.get(..2).ok_or(DecodeError::ShortAttribute(ty))?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn be32_of(ty: u16, value: &[u8]) -> Result<u32, DecodeError> {
    let bytes = value.get(..4).ok_or(DecodeError::ShortAttribute(ty))?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn ipv4_of(ty: u16, value: &[u8]) -> Result<Ipv4Addr, DecodeError> {
    be32_of(ty, value).map(Ipv4Addr::from)
}

/// Reads a ctnetlink flow message (what follows the netlink header).
/// `Ok(None)` for flows this module does not handle: not IPv4, or without
/// ports.
fn parse_flow(payload: &[u8]) -> Result<Option<Flow>, DecodeError> {
    let header = payload.get(..4).ok_or(DecodeError::NoHeader)?;
    if header[0] != AF_INET {
        return Ok(None);
    }
    let mut orig = None;
    let mut reply = None;
    let mut flow = Flow {
        orig: Tuple { proto: 0, src: Ipv4Addr::UNSPECIFIED, dst: Ipv4Addr::UNSPECIFIED, sport: 0, dport: 0 },
        reply: Tuple { proto: 0, src: Ipv4Addr::UNSPECIFIED, dst: Ipv4Addr::UNSPECIFIED, sport: 0, dport: 0 },
        status: 0,
        timeout_s: 0,
        mark: 0,
        zone: 0,
        tcp: None,
    };
    for (ty, value) in attrs(&payload[4..]) {
        match ty {
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(value)?),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(value)?),
            CTA_STATUS => flow.status = be32_of(ty, value)?,
            CTA_TIMEOUT => flow.timeout_s = be32_of(ty, value)?,
            CTA_MARK => flow.mark = be32_of(ty, value)?,
            CTA_ZONE => flow.zone = be16_of(ty, value)?,
            CTA_PROTOINFO => {
                if let Some((_, tcp)) = attrs(value).find(|(ty, _)| *ty == CTA_PROTOINFO_TCP) {
                    flow.tcp = Some(parse_tcp(tcp)?);
                }
            }
            _ => {}
        }
    }
    let (Some(orig), Some(reply)) =
        (orig.ok_or(DecodeError::MissingTuple("original"))?, reply.ok_or(DecodeError::MissingTuple("reply"))?)
    else {
        return Ok(None);
    };
    flow.orig = orig;
    flow.reply = reply;
    Ok(Some(flow))
}

/// Reads a `CTA_TUPLE_*` nest; `Ok(None)` if it has no ports.
fn parse_tuple(nest: &[u8]) -> Result<Option<Tuple>, DecodeError> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for (ty, value) in attrs(nest) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, value) in attrs(value) {
                    match ty {
                        CTA_IP_V4_SRC => src = Some(ipv4_of(ty, value)?),
                        CTA_IP_V4_DST => dst = Some(ipv4_of(ty, value)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, value) in attrs(value) {
                    match ty {
                        CTA_PROTO_NUM => proto = Some(u8_of(ty, value)?),
                        CTA_PROTO_SRC_PORT => sport = Some(be16_of(ty, value)?),
                        CTA_PROTO_DST_PORT => dport = Some(be16_of(ty, value)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(DecodeError::MissingAddress);
    };
    let proto = proto.ok_or(DecodeError::MissingProtocol)?;
    Ok(sport.zip(dport).map(|(sport, dport)| Tuple { proto, src, dst, sport, dport }))
}

/// Reads a `CTA_PROTOINFO_TCP` nest; absent fields are 0.
fn parse_tcp(nest: &[u8]) -> Result<TcpInfo, DecodeError> {
    let mut tcp = TcpInfo::default();
    for (ty, value) in attrs(nest) {
        match ty {
            CTA_PROTOINFO_TCP_STATE => tcp.state = u8_of(ty, value)?,
            CTA_PROTOINFO_TCP_WSCALE_ORIGINAL => tcp.wscale_orig = u8_of(ty, value)?,
            CTA_PROTOINFO_TCP_WSCALE_REPLY => tcp.wscale_reply = u8_of(ty, value)?,
            // struct nf_ct_tcp_flags { flags, mask }; the kernel sends mask 0.
            CTA_PROTOINFO_TCP_FLAGS_ORIGINAL => tcp.flags_orig = u8_of(ty, value)?,
            CTA_PROTOINFO_TCP_FLAGS_REPLY => tcp.flags_reply = u8_of(ty, value)?,
            _ => {}
        }
    }
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 101);

    fn tuple(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
        Tuple { proto, src, dst, sport, dport }
    }

    /// A TCP connection to the VIP, DNAT'd to a real server.
    fn dnat_tcp() -> Flow {
        Flow {
            orig: tuple(PROTO_TCP, CLIENT, 40000, VIP, 80),
            reply: tuple(PROTO_TCP, REAL, 8080, CLIENT, 40000),
            status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_DST_NAT | IPS_DST_NAT_DONE | IPS_SRC_NAT_DONE,
            timeout_s: 431_999,
            mark: 0x2a,
            zone: 0,
            tcp: Some(TcpInfo {
                state: TCP_CONNTRACK_ESTABLISHED,
                wscale_orig: 7,
                wscale_reply: 9,
                flags_orig: IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM,
                flags_reply: IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL,
            }),
        }
    }

    fn encode(flow: &Flow, how: Write) -> Vec<u8> {
        // Junk in front: nothing may depend on the message starting at 0.
        let mut buf = vec![0xa5; 3];
        encode_flow(&mut buf, flow, how, 77);
        buf.split_off(3)
    }

    fn decode(msg: &[u8]) -> Result<Option<Flow>, DecodeError> {
        let mut all = Messages::new(msg);
        let first = all.next().expect("one message")?;
        assert!(all.next().is_none());
        parse_flow(first.payload)
    }

    /// The top-level attribute types of a message, in order.
    fn top_level(msg: &[u8]) -> Vec<u16> {
        attrs(&msg[NLMSG_HDRLEN + 4..]).map(|(ty, _)| ty).collect()
    }

    #[test]
    fn nat_is_derived_from_the_tuples() {
        let flow = dnat_tcp();
        assert_eq!(flow.dnat(), Some((REAL, 8080)));
        assert_eq!(flow.snat(), None);

        let plain = Flow { reply: flow.orig.reversed(), ..flow.clone() };
        assert_eq!((plain.dnat(), plain.snat()), (None, None));

        let port_only = Flow { reply: tuple(PROTO_TCP, VIP, 8080, CLIENT, 40000), ..flow.clone() };
        assert_eq!(port_only.dnat(), Some((VIP, 8080)));

        let masq = Ipv4Addr::new(198, 19, 0, 1);
        let full = Flow { reply: tuple(PROTO_TCP, REAL, 8080, masq, 61000), ..flow };
        assert_eq!(full.dnat(), Some((REAL, 8080)));
        assert_eq!(full.snat(), Some((masq, 61000)));
    }

    #[test]
    fn a_udp_creation_has_this_exact_layout() {
        let flow = Flow {
            orig: tuple(PROTO_UDP, CLIENT, 5353, VIP, 53),
            reply: tuple(PROTO_UDP, REAL, 53, CLIENT, 5353),
            status: IPS_SEEN_REPLY | IPS_ASSURED,
            timeout_s: 120,
            mark: 7,
            zone: 0,
            tcp: None,
        };
        let ne16 = |v: u16| v.to_ne_bytes();
        let mut want = Vec::new();
        let mut put = |bytes: &[u8]| want.extend_from_slice(bytes);
        // nlmsghdr: length, NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW,
        // REQUEST | CREATE | EXCL, seq, port id.
        put(&188u32.to_ne_bytes());
        put(&ne16(0x0100));
        put(&ne16(0x0601));
        put(&77u32.to_ne_bytes());
        put(&0u32.to_ne_bytes());
        put(&[2, 0, 0, 0]); // nfgenmsg: AF_INET, version 0, res_id 0
        for (nest, (src, sport, dst, dport)) in
            // The reply tuple goes untranslated: the kernel applies the NAT.
            [(0x8001, (CLIENT, 5353u16, VIP, 53u16)), (0x8002, (VIP, 53, CLIENT, 5353))]
        {
            put(&ne16(52));
            put(&ne16(nest)); // CTA_TUPLE_ORIG / REPLY | NLA_F_NESTED
            put(&ne16(20));
            put(&ne16(0x8001)); // CTA_TUPLE_IP
            put(&ne16(8));
            put(&ne16(1));
            put(&src.octets());
            put(&ne16(8));
            put(&ne16(2));
            put(&dst.octets());
            put(&ne16(28));
            put(&ne16(0x8002)); // CTA_TUPLE_PROTO
            put(&ne16(5));
            put(&ne16(1));
            put(&[17, 0, 0, 0]); // CTA_PROTO_NUM, padded
            put(&ne16(6));
            put(&ne16(2));
            put(&sport.to_be_bytes());
            put(&[0, 0]);
            put(&ne16(6));
            put(&ne16(3));
            put(&dport.to_be_bytes());
            put(&[0, 0]);
        }
        put(&ne16(8));
        put(&ne16(3));
        put(&[0, 0, 0, 0x0e]); // CTA_STATUS: SEEN_REPLY | ASSURED | CONFIRMED
        put(&ne16(8));
        put(&ne16(7));
        put(&120u32.to_be_bytes()); // CTA_TIMEOUT
        put(&ne16(8));
        put(&ne16(8));
        put(&7u32.to_be_bytes()); // CTA_MARK
        put(&ne16(40));
        put(&ne16(0x800d)); // CTA_NAT_DST
        put(&ne16(8));
        put(&ne16(1));
        put(&REAL.octets()); // CTA_NAT_V4_MINIP
        put(&ne16(8));
        put(&ne16(2));
        put(&REAL.octets()); // CTA_NAT_V4_MAXIP
        put(&ne16(20));
        put(&ne16(0x8003)); // CTA_NAT_PROTO
        put(&ne16(6));
        put(&ne16(1));
        put(&[0, 53, 0, 0]); // CTA_PROTONAT_PORT_MIN
        put(&ne16(6));
        put(&ne16(2));
        put(&[0, 53, 0, 0]); // CTA_PROTONAT_PORT_MAX
        assert_eq!(encode(&flow, Write::Create), want);
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let tcp = dnat_tcp();
        let udp_zoned = Flow {
            orig: tuple(PROTO_UDP, CLIENT, 1234, VIP, 53),
            reply: tuple(PROTO_UDP, VIP, 53, CLIENT, 1234),
            status: IPS_CONFIRMED,
            timeout_s: 30,
            mark: u32::MAX,
            zone: 513,
            tcp: None,
        };
        for flow in [tcp.clone(), udp_zoned.clone()] {
            assert_eq!(decode(&encode(&flow, Write::Update)), Ok(Some(flow.clone())));
        }
        assert_eq!(decode(&encode(&udp_zoned, Write::Create)), Ok(Some(udp_zoned)));
        // A NAT'd creation carries the untranslated reply tuple.
        let untranslated = Flow { reply: tcp.orig.reversed(), ..tcp.clone() };
        assert_eq!(decode(&encode(&tcp, Write::Create)), Ok(Some(untranslated)));
    }

    #[test]
    fn nat_goes_only_into_creations() {
        let flow = dnat_tcp();
        let create = encode(&flow, Write::Create);
        assert!(top_level(&create).contains(&CTA_NAT_DST));
        assert!(!top_level(&create).contains(&CTA_NAT_SRC));
        assert_eq!(u16::from_ne_bytes([create[6], create[7]]), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
        let update = encode(&flow, Write::Update);
        assert!(!top_level(&update).iter().any(|ty| [CTA_NAT_DST, CTA_NAT_SRC].contains(ty)));
        assert_eq!(u16::from_ne_bytes([update[6], update[7]]), NLM_F_REQUEST);

        // NAT ran but translated nothing: an identity binding keeps the bits.
        let null = Flow { reply: flow.orig.reversed(), status: IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE, ..flow.clone() };
        let msg = encode(&null, Write::Create);
        let (_, nat) = attrs(&msg[20..]).find(|(ty, _)| *ty == CTA_NAT_DST).expect("a null binding");
        let (_, min) = attrs(nat).next().expect("min ip");
        assert_eq!(min, VIP.octets());
        let untouched = Flow { status: IPS_ASSURED, ..null };
        assert!(!top_level(&encode(&untouched, Write::Create)).contains(&CTA_NAT_DST));
    }

    #[test]
    fn status_keeps_confirmed_and_drops_what_the_kernel_refuses() {
        assert_eq!(status_to_send(0), IPS_CONFIRMED);
        assert_eq!(status_to_send(IPS_EXPECTED | IPS_ASSURED | IPS_DYING), IPS_ASSURED | IPS_CONFIRMED);
        let nat = IPS_DST_NAT | IPS_DST_NAT_DONE;
        assert_eq!(status_to_send(nat), nat | IPS_CONFIRMED);
    }

    #[test]
    fn the_last_message_of_a_batch_asks_for_an_ack() {
        let mut buf = Vec::new();
        encode_flow(&mut buf, &dnat_tcp(), Write::Create, 1);
        let second = buf.len();
        encode_flow(&mut buf, &dnat_tcp(), Write::Update, 2);
        set_flags(&mut buf, second, NLM_F_ACK);
        let flags: Vec<u16> = Messages::new(&buf).map(|m| m.unwrap().flags).collect();
        assert_eq!(flags, [NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, NLM_F_REQUEST | NLM_F_ACK]);
    }

    #[test]
    fn other_families_and_portless_flows_are_skipped() {
        let mut msg = encode(&dnat_tcp(), Write::Update);
        msg[NLMSG_HDRLEN] = libc::AF_INET6 as u8;
        assert_eq!(decode(&msg), Ok(None));

        // An ICMP echo: id, type and code instead of ports.
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, IPCTNL_MSG_CT_NEW, 0, 1);
        for ty in [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY] {
            w.nest(ty, |w| {
                w.nest(CTA_TUPLE_IP, |w| {
                    w.attr(CTA_IP_V4_SRC, &CLIENT.octets());
                    w.attr(CTA_IP_V4_DST, &VIP.octets());
                });
                w.nest(CTA_TUPLE_PROTO, |w| {
                    w.attr(CTA_PROTO_NUM, &[1]);
                    w.attr(4, &7u16.to_be_bytes());
                    w.attr(5, &[8]);
                    w.attr(6, &[0]);
                });
            });
        }
        w.finish();
        assert_eq!(decode(&buf), Ok(None));
    }

    #[test]
    fn missing_or_short_fields_are_errors() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, IPCTNL_MSG_CT_NEW, 0, 1);
        w.attr(CTA_STATUS, &[0, 0]);
        w.finish();
        assert_eq!(decode(&buf), Err(DecodeError::ShortAttribute(CTA_STATUS)));

        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, IPCTNL_MSG_CT_NEW, 0, 1);
        put_tuple(&mut w, CTA_TUPLE_ORIG, &dnat_tcp().orig);
        w.finish();
        assert_eq!(decode(&buf), Err(DecodeError::MissingTuple("reply")));

        assert_eq!(parse_flow(&[2, 0]), Err(DecodeError::NoHeader));
    }

    #[test]
    fn truncated_and_random_bytes_never_panic() {
        let msg = encode(&dnat_tcp(), Write::Create);
        for len in 0..msg.len() {
            let _ = Messages::new(&msg[..len]).collect::<Vec<_>>();
            let _ = parse_flow(&msg[NLMSG_HDRLEN.min(len)..len]);
        }
        // xorshift: reproducible junk, also spliced into a valid message.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (random() % 300) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| random() as u8).collect();
            let _ = Messages::new(&junk).collect::<Vec<_>>();
            let _ = parse_flow(&junk);
            let mut spliced = msg.clone();
            let at = (random() as usize) % spliced.len();
            junk.truncate(8);
            let end = (at + junk.len()).min(spliced.len());
            spliced[at..end].copy_from_slice(&junk[..end - at]);
            for m in Messages::new(&spliced).flatten() {
                let _ = parse_flow(m.payload);
            }
        }
    }

    #[test]
    fn tuples_display_readably() {
        assert_eq!(dnat_tcp().orig.to_string(), "tcp 198.18.0.100:40000 -> 198.18.0.10:80");
        assert_eq!(tuple(132, CLIENT, 1, VIP, 2).to_string(), "proto 132 198.18.0.100:1 -> 198.18.0.10:2");
    }

    #[test]
    fn events_need_a_runtime() {
        assert!(matches!(events(), Err(ConntrackError::NoRuntime)));
    }
}
