//! An etcd cluster in a lab (Debian's `etcd-server` 3.4): members in hosts
//! of their own on a segment, mutual TLS with certificates made when the
//! cluster starts, data directories in the lab directory. The lab's
//! teardown stops them with everything else; faults are
//! [`kill`](EtcdCluster::kill), [`pause`](EtcdCluster::pause) and
//! [`restart`](EtcdCluster::restart) of a member.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::lab::{HostId, Lab, SegmentId};
use crate::process::Proc;
use crate::wait_for;

/// Client port of every member.
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

#[derive(Debug)]
struct Member {
    name: String,
    host: HostId,
    addr: String,
    proc: Option<Proc>,
    starts: usize,
}

/// A running etcd cluster; see the [module](self) documentation.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    certs: PathBuf,
    dir: PathBuf,
    token: String,
    tls: bool,
}

impl EtcdCluster {
    /// Starts one member per address of `addrs` (CIDR, e.g.
    /// `198.18.0.21/24`), each in a new host `etcd<k>` on `seg`, and waits
    /// until the cluster answers. With `tls`, members talk TLS to each
    /// other and to clients and ask clients for a certificate; the CA and a
    /// client certificate for each name of `clients` are in
    /// [`certs`](Self::certs) (`ca.pem`, `<name>.pem`, `<name>.key`).
    pub fn start(lab: &mut Lab, seg: SegmentId, addrs: &[&str], clients: &[&str], tls: bool) -> Result<Self> {
        let dir = lab.dir().join("etcd");
        let certs = dir.join("certs");
        let mut members = Vec::new();
        for (k, cidr) in addrs.iter().enumerate() {
            let name = format!("etcd{}", k + 1);
            let host = lab.host(&name)?;
            lab.attach(host, seg, "eth0", &[cidr])?;
            let addr = cidr.split('/').next().unwrap_or(cidr).to_owned();
            members.push(Member { name, host, addr, proc: None, starts: 0 });
        }
        let mut names: Vec<&str> = members.iter().map(|m| m.addr.as_str()).collect();
        names.extend_from_slice(clients);
        crate::write_certs(&certs, &names)?;
        let mut c = Self { members, certs, dir, token: lab.prefix().to_owned(), tls };
        for k in 0..c.members.len() {
            c.spawn(lab, k, true)?;
        }
        c.wait_healthy(lab, Duration::from_secs(20))?;
        Ok(c)
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    fn spawn(&mut self, lab: &mut Lab, k: usize, new: bool) -> Result<()> {
        let scheme = self.scheme();
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}={scheme}://{}:{PEER_PORT}", m.name, m.addr)).collect();
        let m = &self.members[k];
        let data = self.dir.join(format!("{}.data", m.name));
        let client_url = format!("{scheme}://{}:{CLIENT_PORT}", m.addr);
        let peer_url = format!("{scheme}://{}:{PEER_PORT}", m.addr);
        let mut argv: Vec<String> = [
            "etcd",
            "--name",
            &m.name,
            "--data-dir",
            &path_str(&data),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-state",
            if new { "new" } else { "existing" },
            "--initial-cluster-token",
            &self.token,
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.tls {
            let cert = path_str(&self.certs.join(format!("{}.pem", m.addr)));
            let key = path_str(&self.certs.join(format!("{}.key", m.addr)));
            let ca = path_str(&self.certs.join("ca.pem"));
            for (flag, v) in [
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--trusted-ca-file", &ca),
                ("--peer-cert-file", &cert),
                ("--peer-key-file", &key),
                ("--peer-trusted-ca-file", &ca),
            ] {
                argv.push(flag.into());
                argv.push(v.clone());
            }
            argv.push("--client-cert-auth".into());
            argv.push("--peer-client-cert-auth".into());
        }
        let label = format!("{}-{}", m.name, m.starts);
        let host = m.host;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let p = lab.spawn(host, &label, &argv, &[])?;
        let m = &mut self.members[k];
        m.starts += 1;
        m.proc = Some(p);
        Ok(())
    }

    /// The members' client endpoints, `host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("{}:{CLIENT_PORT}", m.addr)).collect()
    }

    /// The directory of the CA and the client certificates.
    pub fn certs(&self) -> &Path {
        &self.certs
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The host of member `k`.
    pub fn host(&self, k: usize) -> HostId {
        self.members[k].host
    }

    /// SIGKILLs member `k` (its data stays for [`restart`](Self::restart)).
    pub fn kill(&mut self, k: usize) -> Result<()> {
        match self.members[k].proc.take() {
            Some(mut p) => p.kill(),
            None => Ok(()),
        }
    }

    /// Freezes member `k` (SIGSTOP): it holds its connections and answers nothing.
    pub fn pause(&self, k: usize) -> Result<()> {
        self.signal(k, Signal::SIGSTOP)
    }

    /// Thaws member `k` (SIGCONT).
    pub fn resume(&self, k: usize) -> Result<()> {
        self.signal(k, Signal::SIGCONT)
    }

    fn signal(&self, k: usize, sig: Signal) -> Result<()> {
        match &self.members[k].proc {
            Some(p) => p.signal(sig),
            None => Err(Error::NotFound { what: format!("running etcd member {}", self.members[k].name) }),
        }
    }

    /// Starts member `k` again on its data (after [`kill`](Self::kill)).
    pub fn restart(&mut self, lab: &mut Lab, k: usize) -> Result<()> {
        self.kill(k)?;
        self.spawn(lab, k, false)
    }

    /// `etcdctl` with `args` against the running members, from the host of
    /// the first running member, as client `client` (a name given to
    /// [`start`](Self::start); ignored without TLS).
    pub fn etcdctl(&self, lab: &Lab, client: &str, args: &[&str]) -> Result<String> {
        let running: Vec<&Member> = self.members.iter().filter(|m| m.proc.is_some()).collect();
        let from = running.first().ok_or_else(|| Error::NotFound { what: "a running etcd member".into() })?;
        let eps: Vec<String> =
            running.iter().map(|m| format!("{}://{}:{CLIENT_PORT}", self.scheme(), m.addr)).collect();
        let mut argv: Vec<String> = vec!["env".into(), "ETCDCTL_API=3".into(), "etcdctl".into()];
        argv.push(format!("--endpoints={}", eps.join(",")));
        argv.push("--dial-timeout=2s".into());
        argv.push("--command-timeout=3s".into());
        if self.tls {
            argv.push(format!("--cacert={}", path_str(&self.certs.join("ca.pem"))));
            argv.push(format!("--cert={}", path_str(&self.certs.join(format!("{client}.pem")))));
            argv.push(format!("--key={}", path_str(&self.certs.join(format!("{client}.key")))));
        }
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        lab.run(from.host, &argv)
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&self, lab: &Lab, timeout: Duration) -> Result<()> {
        let client = self.members.first().map(|m| m.addr.clone()).unwrap_or_default();
        wait_for("etcd healthy", timeout, Duration::from_millis(200), || {
            self.etcdctl(lab, &client, &["endpoint", "health"]).ok().map(drop)
        })
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
