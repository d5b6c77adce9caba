//! The lab: hosts, segments, processes and faults, torn down on drop.
//!
//! Over 600 lines: one type, the lab, with its hosts, segments, processes and
//! faults; splitting it would spread one teardown over several files.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::cmd;
use crate::error::{Error, Result, chain};
use crate::netns;
use crate::process::{self, Proc, Shared};

/// Name of the lab's switch namespace after the prefix; no host may use it.
const SWITCH: &str = "switch";
/// The nftables table (family `bridge`) in the switch namespace, with one
/// base chain `forward` where loss and extra rules go.
const NFT_TABLE: &str = "duet";
/// Bound for each `ip`/`nft`/[`Lab::run`] command unless changed with
/// [`Lab::set_cmd_timeout`].
const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// Set (to anything) to keep a lab's directory of logs after teardown; its
/// path is printed.
const KEEP_ENV: &str = "DUET_TESTKIT_KEEP";

/// A host of a [`Lab`], as returned by [`Lab::host`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostId(usize);

/// A layer-2 segment of a [`Lab`], as returned by [`Lab::segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentId(usize);

/// An nftables rule on the lab's switch (its nft handle), as returned by
/// [`Lab::add_loss`] and [`Lab::add_switch_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

#[derive(Debug)]
struct Host {
    name: String,
    ns: String,
    ports: Vec<Port>,
}

/// One attachment of a host to a segment.
#[derive(Debug)]
struct Port {
    /// Interface name inside the host.
    ifname: String,
    /// The veth end enslaved to the segment's bridge, in the switch netns.
    switch_port: String,
}

#[derive(Debug)]
struct Segment {
    name: String,
    bridge: String,
}

#[derive(Debug)]
struct Spawned {
    label: String,
    log_path: PathBuf,
    child: Shared,
}

/// A throw-away network of namespaces; see the [crate] documentation.
///
/// All names start with [`prefix`](Self::prefix): host `h1` lives in netns
/// `<prefix>h1`, the segments' bridges in netns `<prefix>switch`. Dropping the
/// lab, also during a panic, runs [`teardown`](Self::teardown); when dropped
/// during a panic it first prints the tail of every spawned process's log.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    tempdir: Option<TempDir>,
    hosts: Vec<Host>,
    segments: Vec<Segment>,
    switch_ns: Option<String>,
    nft_table: bool,
    /// Namespaces created and not yet deleted.
    live_ns: Vec<String>,
    procs: Vec<Spawned>,
    cmd_timeout: Duration,
    torn_down: bool,
}

impl Lab {
    /// Creates an empty lab for test `test`.
    ///
    /// Its prefix is `dk<pid><counter>-<tag>-`, the tag being up to 8 letters
    /// and digits of `test`, e.g. `dk1234a-pingtwoh-`. Before that, the
    /// namespaces of earlier runs that died without teardown are swept: any
    /// netns with the harness shape `dk<pid><letters>-...` whose pid no longer
    /// exists has its processes killed and is deleted. Others are never
    /// touched. Lab directories of such runs are removed too, unless
    /// `DUET_TESTKIT_KEEP` is set.
    pub fn new(test: &str) -> Result<Self> {
        netns::sweep();
        // A kept directory is there to be read; do not sweep it from under
        // the person debugging.
        if std::env::var_os(KEEP_ENV).is_none() {
            netns::sweep_dirs();
        }
        let existing = netns::list();
        let prefix = netns::new_prefix(test, |p| existing.iter().any(|n| n.starts_with(p)));
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("{}{prefix}", netns::DIR_PREFIX))
            .tempdir()
            .map_err(Error::io("creating the lab directory"))?;
        Ok(Self {
            prefix,
            dir: tempdir.path().to_owned(),
            tempdir: Some(tempdir),
            hosts: Vec::new(),
            segments: Vec::new(),
            switch_ns: None,
            nft_table: false,
            live_ns: Vec::new(),
            procs: Vec::new(),
            cmd_timeout: DEFAULT_CMD_TIMEOUT,
            torn_down: false,
        })
    }

    /// One segment `lan` and the given hosts, host `i` with
    /// `198.18.0.(i+1)/24` on `eth0`.
    pub fn simple(test: &str, hosts: &[&str]) -> Result<Self> {
        if hosts.len() > 253 {
            return Err(Error::TooManyHosts { max: 253, asked: hosts.len() });
        }
        let mut lab = Self::new(test)?;
        let lan = lab.segment("lan")?;
        for (i, name) in hosts.iter().enumerate() {
            let host = lab.host(name)?;
            lab.attach(host, lan, "eth0", &[&format!("198.18.0.{}/24", i + 1)])?;
        }
        Ok(lab)
    }

    /// The name prefix of everything this lab creates.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Per-lab temporary directory for logs, configs and state; removed at
    /// teardown unless `DUET_TESTKIT_KEEP` is set.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the bound on every later external command, including
    /// [`run`](Self::run) (default 20 s).
    pub fn set_cmd_timeout(&mut self, timeout: Duration) {
        self.cmd_timeout = timeout;
    }

    /// A layer-2 segment: a Linux bridge `br-<name>` in the lab's switch
    /// namespace (created with the first segment), with STP and multicast
    /// snooping off and forward delay 0, so frames flow at once and multicast
    /// floods to every port. `name`: up to 12 letters, digits, `-` or `_`.
    pub fn segment(&mut self, name: &str) -> Result<SegmentId> {
        self.check_live()?;
        check_name("segment", name, "1-12 letters, digits, '-' or '_'", 12)?;
        if self.segments.iter().any(|s| s.name == name) {
            return Err(Error::AlreadyExists { what: format!("segment {name:?}") });
        }
        let bridge = format!("br-{name}");
        if self.switch_name_taken(&bridge) {
            return Err(Error::AlreadyExists { what: format!("a switch port called {bridge} (for segment {name:?})") });
        }
        let sw = self.ensure_switch()?;
        self.ip(&[
            "-n",
            &sw,
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        self.ip(&["-n", &sw, "link", "set", &bridge, "up"])?;
        self.ensure_nft_table(&sw)?;
        self.segments.push(Segment { name: name.to_owned(), bridge });
        Ok(SegmentId(self.segments.len() - 1))
    }

    /// A host: its own netns `<prefix><name>` with `lo` up. `name`: up to 32
    /// letters, digits, `-` or `_`, and not `switch`.
    pub fn host(&mut self, name: &str) -> Result<HostId> {
        self.check_live()?;
        check_name("host", name, "1-32 letters, digits, '-' or '_'", 32)?;
        if name == SWITCH {
            return Err(Error::InvalidName {
                kind: "host",
                name: name.to_owned(),
                rule: "reserved for the lab's switch",
            });
        }
        if self.hosts.iter().any(|h| h.name == name) {
            return Err(Error::AlreadyExists { what: format!("host {name:?}") });
        }
        let ns = format!("{}{name}", self.prefix);
        self.add_ns(&ns)?;
        self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        self.hosts.push(Host { name: name.to_owned(), ns, ports: Vec::new() });
        Ok(HostId(self.hosts.len() - 1))
    }

    /// Wires `host` to `seg` with a veth pair: `ifname` inside the host, up,
    /// with the IPv4 addresses `addrs` in CIDR form (e.g. `198.18.0.1/24`);
    /// the other end is a port of the segment's bridge (see
    /// [`switch_port`](Self::switch_port)). Returns the host side's MAC.
    pub fn attach(&mut self, host: HostId, seg: SegmentId, ifname: &str, addrs: &[&str]) -> Result<String> {
        self.check_live()?;
        let h = self.host_ref(host)?;
        let ns = h.ns.clone();
        let bridge = self
            .segments
            .get(seg.0)
            .ok_or_else(|| Error::NotFound { what: format!("segment {seg:?} in lab {}", self.prefix) })?
            .bridge
            .clone();
        if ifname.is_empty() || ifname.len() > 15 || ifname == "lo" || !ifname.chars().all(is_name_char) {
            return Err(Error::InvalidName {
                kind: "interface",
                name: ifname.to_owned(),
                rule: "1-15 letters, digits, '-', '_' or '.', not lo",
            });
        }
        if h.ports.iter().any(|p| p.ifname == ifname) {
            return Err(Error::AlreadyExists { what: format!("{ifname} of host {}", h.name) });
        }
        // A readable port name for tcpdump and rules when it fits, otherwise
        // a numbered one.
        let readable = format!("{}-{ifname}", h.name);
        let port = if readable.len() <= 15 && !self.switch_name_taken(&readable) {
            readable
        } else {
            let n = self.hosts.iter().map(|h| h.ports.len()).sum::<usize>();
            (n..).map(|i| format!("p{i}")).find(|p| !self.switch_name_taken(p)).expect("unbounded")
        };
        let sw = self.switch()?.to_owned();
        self.ip(&["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", &ns])?;
        self.hosts[host.0].ports.push(Port { ifname: ifname.to_owned(), switch_port: port.clone() });
        self.ip(&["-n", &sw, "link", "set", &port, "master", &bridge, "up"])?;
        for addr in addrs {
            self.ip(&["-n", &ns, "addr", "add", addr, "dev", ifname])?;
        }
        self.ip(&["-n", &ns, "link", "set", ifname, "up"])?;
        self.mac(host, ifname)
    }

    /// The netns name of `host`.
    ///
    /// # Panics
    /// If `host` is not from this lab.
    pub fn ns(&self, host: HostId) -> String {
        match self.host_ref(host) {
            Ok(h) => h.ns.clone(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The id of the host called `name`.
    ///
    /// # Panics
    /// If there is no such host.
    pub fn host_id(&self, name: &str) -> HostId {
        match self.hosts.iter().position(|h| h.name == name) {
            Some(i) => HostId(i),
            None => panic!("no host {name:?} in lab {}", self.prefix),
        }
    }

    /// The lab's switch namespace, once a segment exists (for tcpdump on a
    /// bridge, or [`in_netns`](crate::in_netns)).
    pub fn switch_ns(&self) -> Option<&str> {
        self.switch_ns.as_deref()
    }

    /// The name, in the switch namespace, of the bridge port that `host`'s
    /// `ifname` is wired to; for rules such as `iifname "h1-eth0" drop`.
    pub fn switch_port(&self, host: HostId, ifname: &str) -> Result<&str> {
        let h = self.host_ref(host)?;
        h.ports
            .iter()
            .find(|p| p.ifname == ifname)
            .map(|p| p.switch_port.as_str())
            .ok_or_else(|| Error::NotFound { what: format!("{ifname} of host {} attached to a segment", h.name) })
    }

    /// Runs `argv` inside `host` (via `ip netns exec`), bounded by the
    /// command timeout; returns stdout, or an error with stderr if it exits
    /// non-zero.
    pub fn run(&self, host: HostId, argv: &[&str]) -> Result<String> {
        let out = self.run_status(host, argv)?;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                command: argv.join(" "),
                place: format!(" in {}", self.hosts[host.0].name),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`run`](Self::run), but returns the whole output whatever the exit
    /// status. Errors only if it cannot be started or times out.
    pub fn run_status(&self, host: HostId, argv: &[&str]) -> Result<Output> {
        if argv.is_empty() {
            return Err(Error::EmptyCommand);
        }
        let ns = self.host_ref(host)?.ns.as_str();
        let full: Vec<&str> = ["ip", "netns", "exec", ns].into_iter().chain(argv.iter().copied()).collect();
        cmd::output(&full, self.cmd_timeout)
    }

    /// Whether one `ping -c 1 -W 1 <addr>` from `host` gets an answer.
    pub fn ping(&self, host: HostId, addr: &str) -> Result<bool> {
        Ok(self.run_status(host, &["ping", "-n", "-q", "-c", "1", "-W", "1", addr])?.status.success())
    }

    /// Spawns a long-running `argv` inside `host` in its own process group,
    /// with the extra environment `env`, stdout and stderr appended to
    /// `<dir>/<label>.log`. The [`Proc`] stops it when dropped; so does the
    /// lab's teardown if the `Proc` is still around (or was leaked).
    pub fn spawn(&mut self, host: HostId, label: &str, argv: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
        self.check_live()?;
        if label.is_empty() || label.contains('/') || label.starts_with('.') {
            return Err(Error::InvalidName {
                kind: "process label",
                name: label.to_owned(),
                rule: "not empty, no '/', not starting with '.'",
            });
        }
        let ns = self.host_ref(host)?.ns.clone();
        let log_path = self.dir.join(format!("{label}.log"));
        let proc = process::spawn(&ns, label, log_path.clone(), argv, env)?;
        self.procs.push(Spawned { label: label.to_owned(), log_path, child: proc.shared() });
        Ok(proc)
    }

    /// Sets `ifname` inside `host` down (the switch side stays up).
    pub fn link_down(&self, host: HostId, ifname: &str) -> Result<()> {
        let ns = &self.host_ref(host)?.ns;
        self.ip(&["-n", ns, "link", "set", "dev", ifname, "down"])
    }

    /// Sets `ifname` inside `host` up again.
    pub fn link_up(&self, host: HostId, ifname: &str) -> Result<()> {
        let ns = &self.host_ref(host)?.ns;
        self.ip(&["-n", ns, "link", "set", "dev", ifname, "up"])
    }

    /// Cuts `host` off every segment, both directions, by setting its bridge
    /// ports down at the switch. Frames stop at once; the host also sees its
    /// links lose carrier (`NO-CARRIER`, operstate `DOWN`) within about a
    /// second (the kernel's link-watch delay). For a silent cut with the link
    /// up, drop its frames with [`add_switch_rule`](Self::add_switch_rule)
    /// and [`switch_port`](Self::switch_port).
    pub fn cut_off(&self, host: HostId) -> Result<()> {
        self.set_ports(host, "down")
    }

    /// Undoes [`cut_off`](Self::cut_off).
    pub fn reconnect(&self, host: HostId) -> Result<()> {
        self.set_ports(host, "up")
    }

    /// Drops `percent` (0-100) of the frames matching `filter` at random, as
    /// they cross the switch (every segment). `filter` is an nft match
    /// expression in the `bridge` family, e.g. `ip protocol 112`, or `""` for
    /// all frames. Remove with [`remove_rule`](Self::remove_rule).
    pub fn add_loss(&self, filter: &str, percent: u32) -> Result<RuleId> {
        let filter = filter.trim();
        let rule = match percent {
            // `numgen random mod 100 < 100` is rejected by nft; 0 % still
            // gets a (counting) rule so the caller has a handle to remove.
            0 => format!("{filter} counter"),
            1..=99 => format!("{filter} numgen random mod 100 < {percent} drop"),
            100 => format!("{filter} drop"),
            _ => return Err(Error::NotAPercentage(percent)),
        };
        self.add_switch_rule(rule.trim_start())
    }

    /// Appends an arbitrary nft rule to the switch's `bridge` forward chain,
    /// e.g. `ether daddr 01:00:5e:00:00:12 drop` or `iifname "h1-eth0" drop`.
    pub fn add_switch_rule(&self, rule: &str) -> Result<RuleId> {
        let sw = self.switch()?;
        let command = format!("add rule bridge {NFT_TABLE} forward {rule}");
        let out = self.nft(sw, &command, true)?;
        let handle = out
            .rsplit_once("# handle ")
            .and_then(|(_, h)| h.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| Error::UnexpectedOutput {
                what: "rule handle",
                command: format!("nft {command}"),
                output: out.clone(),
            })?;
        Ok(RuleId(handle))
    }

    /// Removes a rule added by [`add_loss`](Self::add_loss) or
    /// [`add_switch_rule`](Self::add_switch_rule).
    pub fn remove_rule(&self, id: RuleId) -> Result<()> {
        let sw = self.switch()?;
        self.nft(sw, &format!("delete rule bridge {NFT_TABLE} forward handle {}", id.0), false).map(drop)
    }

    /// MAC address of `ifname` inside `host`, e.g. `"6a:1f:..."`.
    pub fn mac(&self, host: HostId, ifname: &str) -> Result<String> {
        let ns = &self.host_ref(host)?.ns;
        let argv = ["ip", "-n", ns, "-j", "link", "show", "dev", ifname];
        let out = cmd::check(&argv, self.cmd_timeout)?;
        let links: Value =
            serde_json::from_str(&out).map_err(|source| Error::Json { command: argv.join(" "), source })?;
        links[0]["address"].as_str().map(str::to_owned).ok_or_else(|| Error::UnexpectedOutput {
            what: "MAC address",
            command: argv.join(" "),
            output: out.clone(),
        })
    }

    /// Whether `ifname` inside `host` has IPv4 or IPv6 address `addr`
    /// (`198.18.0.1` matches any prefix length, `198.18.0.1/24` only that
    /// one). A missing interface is `Ok(false)`.
    pub fn addr_present(&self, host: HostId, ifname: &str, addr: &str) -> Result<bool> {
        let ns = &self.host_ref(host)?.ns;
        let (ip, len) = match addr.split_once('/') {
            Some((ip, len)) => {
                let len =
                    len.parse::<u64>().map_err(|source| Error::InvalidAddress { addr: addr.to_owned(), source })?;
                (ip, Some(len))
            }
            None => (addr, None),
        };
        let argv = ["ip", "-n", ns, "-j", "addr", "show"];
        let out = cmd::check(&argv, self.cmd_timeout)?;
        let links: Value =
            serde_json::from_str(&out).map_err(|source| Error::Json { command: argv.join(" "), source })?;
        let found = links
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["ifname"] == ifname)
            .filter_map(|l| l["addr_info"].as_array())
            .flatten()
            .any(|a| a["local"] == ip && len.is_none_or(|len| a["prefixlen"] == len));
        Ok(found)
    }

    /// Tears the lab down: stops spawned processes (SIGTERM, SIGKILL after
    /// 2 s), kills anything else left in its namespaces, deletes the switch's
    /// nft table, the host namespaces and the switch namespace, and removes
    /// the lab directory (unless `DUET_TESTKIT_KEEP` is set). Goes on past
    /// failures and reports them together; calling it again retries what
    /// failed and is otherwise a no-op. The lab cannot be extended afterwards.
    pub fn teardown(&mut self) -> Result<()> {
        self.torn_down = true;
        let mut errors = Vec::new();

        let children: Vec<Shared> = self.procs.iter().map(|p| p.child.clone()).collect();
        for result in process::stop(&children, Proc::DROP_GRACE) {
            if let Err(e) = result {
                errors.push(e);
            }
        }
        self.procs.clear();

        // Whatever was started some other way (`run` with `&`, a daemon that
        // left its process group): a namespace outlives its deletion while a
        // process is inside.
        for ns in &self.live_ns {
            if netns::path(ns).exists()
                && let Err(e) = netns::kill_all_in(ns)
            {
                errors.push(e);
            }
        }

        if self.nft_table
            && let Some(sw) = self.switch_ns.clone()
        {
            match self.nft(&sw, &format!("delete table bridge {NFT_TABLE}"), false) {
                Ok(_) => self.nft_table = false,
                Err(e) => errors.push(e),
            }
        }

        // Hosts first, the switch last: it holds the other veth ends.
        let switch = self.switch_ns.clone();
        for last in [false, true] {
            let timeout = self.cmd_timeout;
            self.live_ns.retain(|ns| {
                if (Some(ns) == switch.as_ref()) != last {
                    return true;
                }
                match netns::delete(ns, timeout) {
                    Ok(()) => false,
                    Err(e) => {
                        errors.push(e);
                        true
                    }
                }
            });
        }

        if let Some(dir) = self.tempdir.take() {
            if std::env::var_os(KEEP_ENV).is_some() {
                eprintln!("duet-testkit: kept lab directory {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                errors.push(Error::Io { what: format!("removing {}", self.dir.display()), source: e });
            }
        }

        if errors.is_empty() { Ok(()) } else { Err(Error::Teardown { prefix: self.prefix.clone(), errors }) }
    }

    fn check_live(&self) -> Result<()> {
        if self.torn_down {
            return Err(Error::TornDown { prefix: self.prefix.clone() });
        }
        Ok(())
    }

    fn host_ref(&self, host: HostId) -> Result<&Host> {
        self.hosts.get(host.0).ok_or_else(|| Error::NotFound { what: format!("host {host:?} in lab {}", self.prefix) })
    }

    fn switch(&self) -> Result<&str> {
        self.switch_ns.as_deref().ok_or_else(|| Error::NoSwitch { prefix: self.prefix.clone() })
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let argv: Vec<&str> = std::iter::once("ip").chain(args.iter().copied()).collect();
        cmd::check(&argv, self.cmd_timeout).map(drop)
    }

    /// Runs one nft command (as a single argument, which nft parses like a
    /// line of a script) in namespace `ns`; `echo` asks for the added rule
    /// back with its handle.
    fn nft(&self, ns: &str, command: &str, echo: bool) -> Result<String> {
        let mut argv = vec!["ip", "netns", "exec", ns, "nft"];
        if echo {
            argv.extend(["--echo", "--handle"]);
        }
        argv.push(command);
        cmd::check(&argv, self.cmd_timeout)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        cmd::check(&["ip", "netns", "add", ns], self.cmd_timeout)?;
        self.live_ns.push(ns.to_owned());
        Ok(())
    }

    /// The switch namespace, created on first use, with IPv6 off so the
    /// bridges add no traffic of their own.
    fn ensure_switch(&mut self) -> Result<String> {
        if let Some(sw) = &self.switch_ns {
            return Ok(sw.clone());
        }
        let sw = format!("{}{SWITCH}", self.prefix);
        self.add_ns(&sw)?;
        self.switch_ns = Some(sw.clone());
        // Best effort: fails harmlessly on a kernel without IPv6.
        let _ = cmd::output(
            &[
                "ip",
                "netns",
                "exec",
                &sw,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            self.cmd_timeout,
        );
        // A switch forwards frames and looks at nothing above layer 2. With
        // br_netfilter loaded (Docker loads it) bridged IPv4 would go
        // through iptables and have its header validated, so a frame with a
        // bad IP checksum would never reach the hosts under test. Best
        // effort: the keys exist only when the module is loaded.
        for key in [
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ] {
            let _ = cmd::output(&["ip", "netns", "exec", &sw, "sysctl", "-q", "-w", key], self.cmd_timeout);
        }
        Ok(sw)
    }

    /// The nft table and its forward chain in the switch namespace, created
    /// once the first bridge exists: on this kernel (6.18) a bridge-family
    /// base chain made in a namespace that has no bridge yet never sees any
    /// frame, even from bridges created later; one made after the first
    /// bridge applies to all bridges, later ones included.
    fn ensure_nft_table(&mut self, sw: &str) -> Result<()> {
        if self.nft_table {
            return Ok(());
        }
        self.nft(sw, &format!("add table bridge {NFT_TABLE}"), false)?;
        self.nft_table = true;
        self.nft(
            sw,
            &format!("add chain bridge {NFT_TABLE} forward {{ type filter hook forward priority 0; policy accept; }}"),
            false,
        )
        .map(drop)
    }

    fn switch_name_taken(&self, name: &str) -> bool {
        self.segments.iter().any(|s| s.bridge == name)
            || self.hosts.iter().flat_map(|h| &h.ports).any(|p| p.switch_port == name)
    }

    fn set_ports(&self, host: HostId, state: &str) -> Result<()> {
        let h = self.host_ref(host)?;
        if h.ports.is_empty() {
            return Err(Error::NotFound { what: format!("segment attached to host {}", h.name) });
        }
        let sw = self.switch()?;
        for p in &h.ports {
            self.ip(&["-n", sw, "link", "set", "dev", &p.switch_port, state])?;
        }
        Ok(())
    }

    fn dump_logs(&self) {
        for p in &self.procs {
            eprintln!("duet-testkit: {} ({}): {}", p.label, self.prefix, process::log_tail(&p.log_path));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        if let Err(e) = self.teardown() {
            eprintln!("duet-testkit: {}", chain(&e));
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn check_name(kind: &'static str, name: &str, rule: &'static str, max: usize) -> Result<()> {
    if name.is_empty() || name.len() > max || !name.chars().all(|c| c != '.' && is_name_char(c)) {
        return Err(Error::InvalidName { kind, name: name.to_owned(), rule });
    }
    Ok(())
}
