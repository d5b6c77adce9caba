//! Adverts and ARP as the client sees them: a `tcpdump -tt -n -e` in the
//! client's namespace and a parser for its lines.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use duet_testkit::{HostId, Proc};

use duet_tests::PairLab;

/// One frame tcpdump printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Kernel receive time, wall-clock seconds.
    pub at: f64,
    pub src_mac: String,
    pub dst_mac: String,
    pub kind: FrameKind,
}

/// What the frame carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameKind {
    /// IP protocol 112 (CARP or VRRP, tcpdump prints both as VRRP).
    Advert { src: Ipv4Addr, dst: Ipv4Addr, prio: Option<u32> },
    /// `Request who-has <target> tell <sender>`.
    ArpRequest { sender: Ipv4Addr, target: Ipv4Addr },
    /// `Reply <sender> is-at <mac>`.
    ArpReply { sender: Ipv4Addr },
}

impl Frame {
    /// A gratuitous announcement of `ip`: a request whose sender and target
    /// are both `ip`, or a reply for `ip` sent to broadcast.
    pub fn is_garp_for(&self, ip: Ipv4Addr) -> bool {
        match self.kind {
            FrameKind::ArpRequest { sender, target } => sender == ip && target == ip,
            FrameKind::ArpReply { sender } => sender == ip && self.dst_mac == "ff:ff:ff:ff:ff:ff",
            FrameKind::Advert { .. } => false,
        }
    }

    /// An advert sent from `ip`.
    pub fn is_advert_from(&self, ip: Ipv4Addr) -> bool {
        matches!(self.kind, FrameKind::Advert { src, .. } if src == ip)
    }
}

/// Starts tcpdump for adverts and ARP on `eth0` of `host`, line-buffered,
/// and waits until it listens.
pub fn start(l: &mut PairLab, host: HostId, label: &str) -> Result<Proc> {
    let p = l.lab.spawn(
        host,
        label,
        &[
            "tcpdump",
            "-l",
            "-n",
            "-tt",
            "-e",
            "--immediate-mode",
            "-s",
            "128",
            "-i",
            "eth0",
            "ip",
            "proto",
            "112",
            "or",
            "arp",
        ],
        &[],
    )?;
    p.wait_log("listening on", Duration::from_secs(5))?;
    Ok(p)
}

/// Parses the lines of `tcpdump -tt -n -e` for adverts and ARP; other lines
/// are skipped.
pub fn parse(log: &str) -> Vec<Frame> {
    log.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Frame> {
    // <ts> <src mac> > <dst mac>, ethertype <T> (0x....), length <n>: <payload>
    let (head, payload) = line.split_once(": ")?;
    let mut it = head.split_whitespace();
    let at: f64 = it.next()?.parse().ok()?;
    let src_mac = it.next()?.to_owned();
    if it.next()? != ">" {
        return None;
    }
    let dst_mac = it.next()?.trim_end_matches(',').to_owned();
    if it.next()? != "ethertype" {
        return None;
    }
    let ethertype = it.next()?;
    let words: Vec<&str> = payload.split_whitespace().collect();
    let kind = match ethertype {
        "IPv4" => {
            // 198.18.0.1 > 224.0.0.18: VRRPv2, Advertisement, vrid 51, prio 100, ...
            let src = words.first()?.parse().ok()?;
            if *words.get(1)? != ">" {
                return None;
            }
            let dst = words.get(2)?.trim_end_matches(':').parse().ok()?;
            let prio = words
                .iter()
                .position(|w| *w == "prio")
                .and_then(|i| words.get(i + 1))
                .and_then(|p| p.trim_end_matches(',').parse().ok());
            FrameKind::Advert { src, dst, prio }
        }
        "ARP" => match *words.first()? {
            // Request who-has 198.18.0.10 [(mac)] tell 198.18.0.10, length 28
            "Request" => {
                let target = words.get(words.iter().position(|w| *w == "who-has")? + 1)?.parse().ok()?;
                let sender =
                    words.get(words.iter().position(|w| *w == "tell")? + 1)?.trim_end_matches(',').parse().ok()?;
                FrameKind::ArpRequest { sender, target }
            }
            // Reply 198.18.0.10 is-at 02:..., length 28
            "Reply" => FrameKind::ArpReply { sender: words.get(1)?.parse().ok()? },
            _ => return None,
        },
        _ => return None,
    };
    Some(Frame { at, src_mac, dst_mac, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
tcpdump: verbose output suppressed, use -v[v]... for full protocol decode
listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes
1795681507.233290 2a:f5:2b:2c:0d:43 > 01:00:5e:00:00:12, ethertype IPv4 (0x0800), length 46: 198.18.0.1 > 224.0.0.18: VRRPv3, Advertisement, vrid 51, prio 100, intvl 10cs, length 12
1795681507.233609 2a:f5:2b:2c:0d:43 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.10 (ff:ff:ff:ff:ff:ff) tell 198.18.0.10, length 28
1795681531.330081 2a:f5:2b:2c:0d:43 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.10 tell 198.18.0.100, length 28
1795681531.330111 00:00:5e:00:00:0a > 01:00:5e:00:00:12, ethertype IPv4 (0x0800), length 70: 198.18.0.1 > 224.0.0.18: VRRPv2, Advertisement, vrid 10, prio 0, authtype none, intvl 1s, length 36
1795681531.4 36:3f:11:8a:68:a6 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Reply 198.18.0.10 is-at 36:3f:11:8a:68:a6, length 28
1795681531.5 36:3f:11:8a:68:a6 > aa:aa:aa:aa:aa:aa, ethertype ARP (0x0806), length 42: Reply 198.18.0.10 is-at 36:3f:11:8a:68:a6, length 28

13 packets captured
";

    #[test]
    fn parses_adverts_and_garps() {
        let f = parse(LOG);
        assert_eq!(f.len(), 6);
        let shared: Ipv4Addr = "198.18.0.10".parse().unwrap();
        let a: Ipv4Addr = "198.18.0.1".parse().unwrap();
        assert_eq!(f[0].kind, FrameKind::Advert { src: a, dst: "224.0.0.18".parse().unwrap(), prio: Some(100) });
        assert!((f[0].at - 1_795_681_507.233_29).abs() < 1e-6);
        assert_eq!(f[0].src_mac, "2a:f5:2b:2c:0d:43");
        assert!(f[0].is_advert_from(a));
        let garps: Vec<bool> = f.iter().map(|x| x.is_garp_for(shared)).collect();
        assert_eq!(garps, [false, true, false, false, true, false]);
        assert!(matches!(f[3].kind, FrameKind::Advert { prio: Some(0), .. }));
    }
}
