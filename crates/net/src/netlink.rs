//! Links, IPv4 addresses and macvlan interfaces over rtnetlink, and the
//! kernel's notifications of their changes.
//!
//! [`Netlink`] is an async handle on one `NETLINK_ROUTE` socket of the network
//! namespace of the thread that created it: look links up ([`Netlink::link`],
//! [`Netlink::links`]), add and remove IPv4 addresses idempotently, create a
//! macvlan with a given MAC (the virtual MAC of a vhid), delete links and set
//! them up or down. Every request is bounded by [`REQUEST_TIMEOUT`], so a
//! kernel that does not answer yields [`NetlinkError::Timeout`] instead of a
//! hang. [`watch`] opens a second socket subscribed to link and IPv4 address
//! notifications and turns them into [`NetEvent`]s on a bounded channel.
//!
//! It is not a cache and not a reconciler: every call asks the kernel afresh,
//! and deciding which addresses should be where is the caller's job. IPv6,
//! routes and neighbours are out of scope. It never shells out to `ip`.
//!
//! Both need a tokio runtime with IO and time enabled on the calling thread.
//!
//! Over 600 lines: the requests and the notification decoder share the
//! message builders; about a third is tests against the kernel in a
//! namespace.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as LinkInfoNla, LinkMessage, MacVlanMode};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{AddressMessageBuilder, LinkMacVlan, LinkUnspec, MulticastGroup};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How long one request may wait for the kernel's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Capacity of the channel [`watch`] returns.
pub const EVENT_QUEUE: usize = 256;

/// Receive buffer asked for the notification socket (the kernel caps it at
/// `net.core.rmem_max`): a burst of a few hundred changes, such as a
/// reconcile adding every VIP at once, should not overrun it.
const EVENT_SOCKET_BUFFER: libc::c_int = 1 << 20;

/// Lost events are reported at most this often.
const LOSS_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The longest interface name the kernel accepts (`IFNAMSIZ` less the NUL).
const IFNAME_MAX: usize = 15;

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Called on a thread without a tokio runtime.
    #[error("netlink needs a tokio runtime (IO and time enabled) on the calling thread")]
    NoRuntime,
    /// The netlink socket could not be opened or bound.
    #[error("cannot open a netlink route socket: {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
    /// A name the kernel would never accept for an interface: empty, longer
    /// than 15 bytes, `.` or `..`, or containing `/`, `:` or white space.
    #[error("{name:?} is not a valid interface name")]
    InvalidName { name: String },
    /// A prefix length over 32.
    #[error("{ifname}: {addr}/{prefix} has a prefix length over 32")]
    InvalidPrefix { ifname: String, addr: Ipv4Addr, prefix: u8 },
    /// There is no interface by that name.
    #[error("{ifname}: no such interface")]
    NotFound { ifname: String },
    /// An interface by that name exists already.
    #[error("{ifname}: an interface by that name exists already")]
    AlreadyExists { ifname: String },
    /// The kernel refused the request.
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("{what}: no answer from the kernel within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// The connection task has stopped (its socket failed), so the request
    /// was not sent or its answer was lost.
    #[error("{what}: the netlink connection is closed")]
    Closed { what: String },
    /// The kernel answered with something the request does not expect.
    #[error("{what}: unexpected answer from the kernel: {detail}")]
    Unexpected { what: String, detail: String },
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// Usable: administratively up (`IFF_UP`), with carrier (`IFF_LOWER_UP`)
    /// and operationally up (`IFF_RUNNING`, i.e. not dormant or testing).
    pub up: bool,
    /// Administratively up (`IFF_UP`), whatever the carrier.
    pub admin_up: bool,
    /// The hardware address, when it is a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
    /// The link kind of a virtual interface (`"veth"`, `"macvlan"`, ...);
    /// `None` for physical devices and loopback.
    pub kind: Option<String>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> Self {
        let flags = msg.header.flags;
        let admin_up = flags.contains(LinkFlags::Up);
        let mut info = Self {
            index: msg.header.index,
            name: String::new(),
            up: admin_up && flags.contains(LinkFlags::LowerUp) && flags.contains(LinkFlags::Running),
            admin_up,
            mac: None,
            kind: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => info.name.clone_from(name),
                LinkAttribute::Address(mac) => info.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
                LinkAttribute::LinkInfo(nlas) => {
                    info.kind = nlas.iter().find_map(|nla| match nla {
                        LinkInfoNla::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        info
    }
}

/// A kernel notification of a link or IPv4 address change
/// (`RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`), for reconcile loops and link
/// monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A link appeared or changed (flags, carrier, name, address...).
    Link(LinkInfo),
    /// A link was deleted (or moved to another namespace).
    LinkRemoved { index: u32, name: String },
    /// An IPv4 address was added to interface `index`.
    AddressAdded { index: u32, addr: Ipv4Addr, prefix: u8 },
    /// An IPv4 address was removed from interface `index`.
    AddressRemoved { index: u32, addr: Ipv4Addr, prefix: u8 },
}

impl NetEvent {
    /// The event a notification stands for, if it is one we report.
    ///
    /// Link messages of family `AF_BRIDGE` are skipped: the kernel sends them
    /// about bridge ports, and a `DELLINK` of that family means a port left
    /// its bridge, not that the link is gone.
    fn from_message(msg: RouteNetlinkMessage) -> Option<Self> {
        match msg {
            RouteNetlinkMessage::NewLink(link) if link.header.interface_family == AddressFamily::Unspec => {
                Some(Self::Link(LinkInfo::from_message(&link)))
            }
            RouteNetlinkMessage::DelLink(link) if link.header.interface_family == AddressFamily::Unspec => {
                let info = LinkInfo::from_message(&link);
                Some(Self::LinkRemoved { index: info.index, name: info.name })
            }
            RouteNetlinkMessage::NewAddress(addr) => {
                ipv4_of(&addr).map(|(a, prefix)| Self::AddressAdded { index: addr.header.index, addr: a, prefix })
            }
            RouteNetlinkMessage::DelAddress(addr) => {
                ipv4_of(&addr).map(|(a, prefix)| Self::AddressRemoved { index: addr.header.index, addr: a, prefix })
            }
            _ => None,
        }
    }
}

/// The local IPv4 address and prefix length of an address message; `None`
/// for other families. `IFA_LOCAL` is the interface's own address (on a
/// point-to-point link `IFA_ADDRESS` is the peer's), so it wins.
fn ipv4_of(msg: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(IpAddr::V4(a)) if want_local => Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) if !want_local => Some(*a),
            _ => None,
        })
    };
    pick(true).or_else(|| pick(false)).map(|a| (a, msg.header.prefix_len))
}

/// The checks of the kernel's `dev_valid_name`, so a bad name is reported
/// as such rather than as whatever the kernel says about it.
fn check_ifname(name: &str) -> Result<(), NetlinkError> {
    let valid = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_ascii_whitespace());
    if valid { Ok(()) } else { Err(NetlinkError::InvalidName { name: name.to_owned() }) }
}

/// Async handle on an rtnetlink socket of the creating thread's namespace.
///
/// Requests go through a connection task spawned on the current runtime,
/// which owns the socket and routes each answer back to its request; it is
/// aborted when the `Netlink` is dropped.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace (sockets
    /// stay in the namespace they were created in, so the handle may be used
    /// from any thread afterwards) and spawns its connection task.
    ///
    /// Must be called inside a tokio runtime with IO and time enabled.
    pub fn new() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        // The third value would carry unsolicited messages; this socket joins
        // no group, so there are none and it is dropped.
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| NetlinkError::Socket { source })?;
        Ok(Self { handle, connection: runtime.spawn(connection) })
    }

    /// The interface called `name`; [`NetlinkError::NotFound`] if none is.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        check_ifname(name)?;
        let what = || format!("{name}: cannot look the interface up");
        let mut answers = self.handle.link().get().match_name(name).execute();
        match self.ask(what, answers.try_next()).await? {
            Ok(Some(msg)) => Ok(LinkInfo::from_message(&msg)),
            Ok(None) => Err(NetlinkError::Unexpected { what: what(), detail: "no link in the answer".into() }),
            Err(libc::ENODEV) => Err(NetlinkError::NotFound { ifname: name.to_owned() }),
            Err(errno) => Err(refused(what(), errno)),
        }
    }

    /// Every interface of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let what = || "cannot list the interfaces".to_owned();
        let dump = self.handle.link().get().execute().map_ok(|msg| LinkInfo::from_message(&msg)).try_collect();
        self.ask(what, dump).await?.map_err(|errno| refused(what(), errno))
    }

    /// The IPv4 addresses of `ifname`, with their prefix lengths.
    pub async fn addresses(&self, ifname: &str) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let index = self.link(ifname).await?.index;
        let what = || format!("{ifname}: cannot list the IPv4 addresses");
        let mut request = self.handle.address().get().set_link_index_filter(index);
        // Ask for IPv4 only, so the kernel does not dump IPv6 addresses too.
        request.message_mut().header.family = AddressFamily::Inet;
        let dump = request.execute().try_collect::<Vec<_>>();
        let msgs = self.ask(what, dump).await?.map_err(|errno| refused(what(), errno))?;
        Ok(msgs.iter().filter_map(ipv4_of).collect())
    }

    /// Adds `addr/prefix` to `ifname`. Returns `true` if it was added, `false`
    /// if exactly that address and prefix were there already (the kernel's
    /// EEXIST, which is not an error here).
    pub async fn add_address(&self, ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<bool, NetlinkError> {
        self.change_address(AddressChange::Add, ifname, None, addr, prefix).await
    }

    /// As [`add_address`](Self::add_address) for an interface whose index
    /// the caller knows: one request instead of two (the takeover's hot
    /// path). `ifname` only names the interface in errors.
    pub async fn add_address_at(
        &self,
        ifname: &str,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError> {
        self.change_address(AddressChange::Add, ifname, Some(index), addr, prefix).await
    }

    /// Removes `addr/prefix` from `ifname`. Returns `true` if it was removed,
    /// `false` if `ifname` had no such address (the kernel's EADDRNOTAVAIL,
    /// not an error here). A missing interface is still
    /// [`NetlinkError::NotFound`], so a misspelt name does not pass silently.
    ///
    /// Note that removing an interface's primary address also removes the
    /// secondaries of the same subnet unless `promote_secondaries` is set.
    pub async fn del_address(&self, ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<bool, NetlinkError> {
        self.change_address(AddressChange::Remove, ifname, None, addr, prefix).await
    }

    /// Adds or removes `addr/prefix` on `ifname` (looked up unless its
    /// `index` is given). `Ok(false)` when the kernel says it is so already.
    async fn change_address(
        &self,
        change: AddressChange,
        ifname: &str,
        index: Option<u32>,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError> {
        check_prefix(ifname, addr, prefix)?;
        let index = match index {
            Some(i) => i,
            None => self.link(ifname).await?.index,
        };
        let verb = match change {
            AddressChange::Add => "add",
            AddressChange::Remove => "remove",
        };
        let what = || format!("{ifname}: cannot {verb} {addr}/{prefix}");
        let answer = match change {
            AddressChange::Add => {
                self.ask(what, self.handle.address().add(index, addr.into(), prefix).execute()).await?
            }
            AddressChange::Remove => {
                let msg = AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(addr, prefix).build();
                self.ask(what, self.handle.address().del(msg).execute()).await?
            }
        };
        match answer {
            Ok(()) => Ok(true),
            Err(errno) if errno == change.done_already() => Ok(false),
            Err(libc::ENODEV) => Err(NetlinkError::NotFound { ifname: ifname.to_owned() }),
            Err(errno) => Err(refused(what(), errno)),
        }
    }

    /// Creates macvlan `name` on `parent` with hardware address `mac`, and
    /// sets it up in the same request (if that fails, the kernel does not
    /// create it at all). [`NetlinkError::AlreadyExists`] if `name` is taken.
    ///
    /// The mode is *private*, as keepalived uses for its VRRP virtual MACs:
    /// the macvlan exchanges no frames with sibling macvlans of the same
    /// parent, not even broadcasts, so each VIP interface sees and is seen by
    /// the segment exactly as the wire carries it, and an announcement sent
    /// on one vhid's interface does not loop into another's. Bridge mode
    /// would only add a local shortcut between siblings, which duet does not
    /// need: traffic between local addresses never leaves through a NIC.
    pub async fn create_macvlan(&self, parent: &str, name: &str, mac: [u8; 6]) -> Result<(), NetlinkError> {
        check_ifname(name)?;
        let parent_index = self.link(parent).await?.index;
        let what = || format!("{name}: cannot create a macvlan on {parent}");
        let msg = LinkMacVlan::new(name, parent_index, MacVlanMode::Private).address(mac.to_vec()).up().build();
        match self.ask(what, self.handle.link().add(msg).execute()).await? {
            Ok(()) => Ok(()),
            Err(libc::EEXIST) => Err(NetlinkError::AlreadyExists { ifname: name.to_owned() }),
            // The parent went away between the lookup and the request.
            Err(libc::ENODEV) => Err(NetlinkError::NotFound { ifname: parent.to_owned() }),
            Err(errno) => Err(refused(what(), errno)),
        }
    }

    /// Deletes the interface called `name` (a veth takes its peer along).
    /// Returns `false` if there was none.
    ///
    /// The kernel looks the name up itself, so no other interface that got
    /// the index of a just-deleted one can be hit by mistake.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        check_ifname(name)?;
        let what = || format!("{name}: cannot delete the interface");
        let msg = LinkUnspec::new_with_name(name).build();
        match self.ask(what, self.handle.link().del_with_message(msg).execute()).await? {
            Ok(()) => Ok(true),
            Err(libc::ENODEV) => Ok(false),
            Err(errno) => Err(refused(what(), errno)),
        }
    }

    /// Sets `name` administratively up or down.
    pub async fn set_up(&self, name: &str, up: bool) -> Result<(), NetlinkError> {
        check_ifname(name)?;
        let what = || format!("{name}: cannot set the interface {}", if up { "up" } else { "down" });
        let builder = LinkUnspec::new_with_name(name);
        let msg = if up { builder.up() } else { builder.down() }.build();
        match self.ask(what, self.handle.link().set(msg).execute()).await? {
            Ok(()) => Ok(()),
            Err(libc::ENODEV) => Err(NetlinkError::NotFound { ifname: name.to_owned() }),
            Err(errno) => Err(refused(what(), errno)),
        }
    }

    /// Runs one request bounded by [`REQUEST_TIMEOUT`].
    ///
    /// A refusal by the kernel comes back as `Ok(Err(errno))` for the caller
    /// to judge, since some are expected answers (EEXIST, ENODEV...); every
    /// other failure is final and gets `what` as its context.
    async fn ask<T, W>(
        &self,
        what: W,
        request: impl Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<Result<T, i32>, NetlinkError>
    where
        W: Fn() -> String,
    {
        let Ok(answer) = tokio::time::timeout(REQUEST_TIMEOUT, request).await else {
            return Err(NetlinkError::Timeout { what: what(), timeout: REQUEST_TIMEOUT });
        };
        // A request whose answer stream ended because the connection task
        // died reads as a success (rtnetlink does not forward the ACK), so a
        // dead task makes any answer suspect. This errs on the safe side: a
        // task that died just after a genuine ACK also gives `Closed`, and
        // the caller's retry then finds the change made.
        if self.connection.is_finished() {
            return Err(NetlinkError::Closed { what: what() });
        }
        match answer {
            Ok(value) => Ok(Ok(value)),
            Err(rtnetlink::Error::NetlinkError(msg)) => match msg.to_io().raw_os_error() {
                Some(errno) if errno != 0 => Ok(Err(errno)),
                _ => Err(NetlinkError::Unexpected { what: what(), detail: msg.to_string() }),
            },
            Err(rtnetlink::Error::RequestFailed) => Err(NetlinkError::Closed { what: what() }),
            Err(other) => Err(NetlinkError::Unexpected { what: what(), detail: other.to_string() }),
        }
    }
}

/// The two changes of an interface's addresses.
#[derive(Debug, Clone, Copy)]
enum AddressChange {
    Add,
    Remove,
}

impl AddressChange {
    /// The kernel's answer when the change is made already (not an error).
    fn done_already(self) -> i32 {
        match self {
            Self::Add => libc::EEXIST,
            Self::Remove => libc::EADDRNOTAVAIL,
        }
    }
}

fn refused(what: String, errno: i32) -> NetlinkError {
    NetlinkError::Kernel { what, source: io::Error::from_raw_os_error(errno) }
}

fn check_prefix(ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
    if prefix > 32 {
        return Err(NetlinkError::InvalidPrefix { ifname: ifname.to_owned(), addr, prefix });
    }
    Ok(())
}

/// Subscribes to link and IPv4 address notifications of the calling
/// thread's network namespace.
///
/// Spawns a task on the current runtime (IO and time enabled) that reads a
/// netlink socket bound to `RTNLGRP_LINK` and `RTNLGRP_IPV4_IFADDR` and sends
/// each change as a [`NetEvent`] on a channel of [`EVENT_QUEUE`] entries. The
/// task never waits for the receiver: when the channel is full the event is
/// dropped and the next one goes on; so is a burst the kernel could not queue
/// on the socket. Either loss is counted in a warning logged at most every
/// 10 s. Consumers must therefore also poll the state now and then (they do
/// anyway, to repair what others change), which makes a lost event only a
/// late one. The task ends when the receiver is dropped, or if the socket
/// fails, which closes the channel.
pub fn watch() -> Result<mpsc::Receiver<NetEvent>, NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
    // The handle (second value) is for requests, which this socket never sends.
    let (mut connection, _, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr])
            .map_err(|source| NetlinkError::Socket { source })?;
    if let Err(e) = connection.socket_mut().socket_mut().set_rx_buf_sz(EVENT_SOCKET_BUFFER) {
        debug!("netlink events: cannot enlarge the socket buffer: {e}");
    }
    let (events, receiver) = mpsc::channel(EVENT_QUEUE);
    runtime.spawn(forward_events(connection, messages, events));
    Ok(receiver)
}

/// The body of [`watch`]'s task: drives the connection and forwards what it
/// reads.
///
/// netlink-proto hands notifications over through an unbounded channel
/// (`messages`). It cannot grow without bound here: it is filled only while
/// `connection` is polled, which is in this same task, and this loop takes
/// each message out at once, so it never holds more than one read of the
/// socket buffer.
async fn forward_events<C, M>(connection: C, mut messages: M, events: mpsc::Sender<NetEvent>)
where
    C: Future<Output = ()>,
    M: Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, rtnetlink::sys::SocketAddr)> + Unpin,
{
    tokio::pin!(connection);
    let mut queue_full = LossReport::new("netlink events: receiver is not keeping up; events dropped");
    let mut overrun = LossReport::new("netlink events: the kernel overran the socket buffer; events lost");
    loop {
        tokio::select! {
            () = events.closed() => return,
            () = &mut connection => {
                warn!("netlink events: the socket failed; no more link or address events");
                return;
            }
            message = messages.next() => {
                let Some((message, _)) = message else {
                    warn!("netlink events: the connection stopped; no more link or address events");
                    return;
                };
                match message.payload {
                    NetlinkPayload::InnerMessage(msg) => {
                        let Some(event) = NetEvent::from_message(msg) else { continue };
                        match events.try_send(event) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => queue_full.count(),
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    // netlink-proto turns ENOBUFS from the socket into this.
                    NetlinkPayload::Overrun(_) => overrun.count(),
                    _ => {}
                }
            }
        }
    }
}

/// Counts a kind of loss and warns about it at most once per
/// [`LOSS_WARNING_INTERVAL`]; losses in between are added to the next
/// warning.
#[derive(Debug)]
struct LossReport {
    message: &'static str,
    unreported: u64,
    total: u64,
    last_warning: Option<Instant>,
}

impl LossReport {
    fn new(message: &'static str) -> Self {
        Self { message, unreported: 0, total: 0, last_warning: None }
    }

    fn count(&mut self) {
        self.unreported += 1;
        self.total += 1;
        let now = Instant::now();
        if self.last_warning.is_none_or(|last| now.duration_since(last) >= LOSS_WARNING_INTERVAL) {
            warn!(lost = self.unreported, total = self.total, "{}", self.message);
            self.unreported = 0;
            self.last_warning = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::InfoKind;

    use super::*;

    fn link_message(flags: LinkFlags, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = flags;
        msg.attributes = attributes;
        msg
    }

    #[test]
    fn link_is_up_only_with_admin_carrier_and_running() {
        let all = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        let info = LinkInfo::from_message(&link_message(all, vec![]));
        assert!(info.up && info.admin_up);
        for missing in [LinkFlags::Up, LinkFlags::LowerUp, LinkFlags::Running] {
            let info = LinkInfo::from_message(&link_message(all - missing, vec![]));
            assert!(!info.up, "up without {missing:?}");
            assert_eq!(info.admin_up, missing != LinkFlags::Up);
        }
    }

    #[test]
    fn link_attributes_are_read() {
        let msg = link_message(
            LinkFlags::Up,
            vec![
                LinkAttribute::IfName("vip0".into()),
                LinkAttribute::Address(vec![0, 0, 0x5e, 0, 1, 10]),
                LinkAttribute::LinkInfo(vec![LinkInfoNla::Kind(InfoKind::MacVlan)]),
            ],
        );
        let info = LinkInfo::from_message(&msg);
        assert_eq!(info.index, 7);
        assert_eq!(info.name, "vip0");
        assert_eq!(info.mac, Some([0, 0, 0x5e, 0, 1, 10]));
        assert_eq!(info.kind.as_deref(), Some("macvlan"));

        let odd = link_message(LinkFlags::empty(), vec![LinkAttribute::Address(vec![1, 2, 3, 4])]);
        assert_eq!(LinkInfo::from_message(&odd).mac, None);
    }

    #[test]
    fn bridge_port_messages_are_not_link_events() {
        let mut port = link_message(LinkFlags::Up, vec![LinkAttribute::IfName("p0".into())]);
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(NetEvent::from_message(RouteNetlinkMessage::DelLink(port.clone())), None);
        assert_eq!(NetEvent::from_message(RouteNetlinkMessage::NewLink(port.clone())), None);
        port.header.interface_family = AddressFamily::Unspec;
        assert_eq!(
            NetEvent::from_message(RouteNetlinkMessage::DelLink(port)),
            Some(NetEvent::LinkRemoved { index: 7, name: "p0".into() })
        );
    }

    #[test]
    fn address_events_prefer_the_local_address() {
        let local = Ipv4Addr::new(198, 18, 0, 10);
        let peer = Ipv4Addr::new(198, 18, 0, 99);
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = 3;
        msg.header.prefix_len = 24;
        msg.attributes = vec![AddressAttribute::Address(peer.into()), AddressAttribute::Local(local.into())];
        assert_eq!(
            NetEvent::from_message(RouteNetlinkMessage::NewAddress(msg.clone())),
            Some(NetEvent::AddressAdded { index: 3, addr: local, prefix: 24 })
        );
        msg.attributes.retain(|a| matches!(a, AddressAttribute::Address(_)));
        assert_eq!(
            NetEvent::from_message(RouteNetlinkMessage::DelAddress(msg.clone())),
            Some(NetEvent::AddressRemoved { index: 3, addr: peer, prefix: 24 })
        );
        msg.header.family = AddressFamily::Inet6;
        assert_eq!(NetEvent::from_message(RouteNetlinkMessage::NewAddress(msg)), None);
    }

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for good in ["eth0", "vip-10", "eth0.100", "a23456789012345"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a234567890123456", "a/b", "a:1", "a b", "a\0"] {
            assert!(matches!(check_ifname(bad), Err(NetlinkError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn request_futures_can_be_spawned() {
        fn send<T: Send>(_: T) {}
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = rt.enter();
        // Opening a route socket needs no privilege; nothing is sent here.
        let nl = Netlink::new().unwrap();
        let addr = Ipv4Addr::LOCALHOST;
        send(nl.link("lo"));
        send(nl.links());
        send(nl.addresses("lo"));
        send(nl.add_address("lo", addr, 8));
        send(nl.del_address("lo", addr, 8));
        send(nl.create_macvlan("lo", "x", [0; 6]));
        send(nl.delete_link("x"));
        send(nl.set_up("lo", true));
        fn shared<T: Send + Sync>(_: &T) {}
        shared(&nl);
    }

    #[test]
    fn calls_outside_a_runtime_fail_cleanly() {
        assert!(matches!(Netlink::new(), Err(NetlinkError::NoRuntime)));
        assert!(matches!(watch(), Err(NetlinkError::NoRuntime)));
    }
}
