//! What is replicated, and its conversions to and from the wire.
//!
//! Keys and values of the replication log ([`duet_repl`]): a kernel
//! connection entry keyed by its original tuple and zone, or a persistence
//! entry keyed by table and key. Tables are named by where they come from:
//! `l4:<virtual service>` (the data plane's source persistence sets),
//! `haproxy:<stick table>` (HAProxy, through its runtime API), anything
//! else from `ReportPersistence` (any proxy).

use std::net::{Ipv4Addr, SocketAddrV4};

use duet_net::conntrack::{Flow, TcpInfo, Tuple};
use duet_proto::replicator::v1 as pb;

/// A replication key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Flow { orig: Tuple, zone: u16 },
    Persist { table: String, key: String },
}

/// A replicated value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Flow(Box<Flow>),
    /// The server a persistence key is bound to.
    Persist(String),
}

pub(crate) fn tuple_pb(t: &Tuple) -> pb::Tuple {
    pb::Tuple {
        proto: u32::from(t.proto),
        src: u32::from(t.src),
        dst: u32::from(t.dst),
        sport: u32::from(t.sport),
        dport: u32::from(t.dport),
    }
}

pub(crate) fn tuple_from(t: &pb::Tuple) -> Tuple {
    Tuple {
        proto: u8::try_from(t.proto).unwrap_or(0),
        src: Ipv4Addr::from(t.src),
        dst: Ipv4Addr::from(t.dst),
        sport: u16::try_from(t.sport).unwrap_or(0),
        dport: u16::try_from(t.dport).unwrap_or(0),
    }
}

pub(crate) fn flow_pb(f: &Flow) -> pb::Flow {
    let t = f.tcp.unwrap_or_default();
    pb::Flow {
        orig: Some(tuple_pb(&f.orig)),
        reply: Some(tuple_pb(&f.reply)),
        status: f.status,
        timeout_s: f.timeout_s,
        mark: f.mark,
        zone: u32::from(f.zone),
        tcp_state: u32::from(t.state),
        tcp_wscale_orig: u32::from(t.wscale_orig),
        tcp_wscale_reply: u32::from(t.wscale_reply),
        tcp_flags_orig: u32::from(t.flags_orig),
        tcp_flags_reply: u32::from(t.flags_reply),
        has_tcp: f.tcp.is_some(),
    }
}

pub(crate) fn flow_from(f: &pb::Flow) -> Option<Flow> {
    let b = |v: u32| u8::try_from(v).unwrap_or(0);
    Some(Flow {
        orig: tuple_from(f.orig.as_ref()?),
        reply: tuple_from(f.reply.as_ref()?),
        status: f.status,
        timeout_s: f.timeout_s,
        mark: f.mark,
        zone: u16::try_from(f.zone).unwrap_or(0),
        tcp: f.has_tcp.then(|| TcpInfo {
            state: b(f.tcp_state),
            wscale_orig: b(f.tcp_wscale_orig),
            wscale_reply: b(f.tcp_wscale_reply),
            flags_orig: b(f.tcp_flags_orig),
            flags_reply: b(f.tcp_flags_reply),
        }),
    })
}

/// A change of the log as it goes on the wire; `now_ms` turns absolute
/// expiry into a time to live.
pub(crate) fn change_pb(op: &duet_repl::Op<Key, Value>, now_ms: u64) -> pb::Change {
    use pb::change::Change as C;
    match op {
        duet_repl::Op::Upsert { key, value, expires_ms } => {
            let ttl_ms = expires_ms.saturating_sub(now_ms);
            let change = match (key, value) {
                (Key::Flow { .. }, Value::Flow(f)) => C::UpsertFlow(flow_pb(f)),
                (Key::Persist { table, key }, Value::Persist(server)) => C::UpsertPersistence(pb::PersistenceEntry {
                    table: table.clone(),
                    key: key.clone(),
                    server: server.clone(),
                    ttl_ms,
                }),
                // A key and value of different kinds are never made.
                (Key::Flow { orig, .. }, Value::Persist(_)) => C::DeleteFlow(tuple_pb(orig)),
                (Key::Persist { table, key }, Value::Flow(_)) => C::DeletePersistence(pb::PersistenceEntry {
                    table: table.clone(),
                    key: key.clone(),
                    ..Default::default()
                }),
            };
            pb::Change { change: Some(change), ttl_ms }
        }
        duet_repl::Op::Delete { key } => {
            let change = match key {
                Key::Flow { orig, zone } => {
                    let mut t = tuple_pb(orig);
                    // The zone rides in the unused high bits of the protocol field.
                    t.proto |= u32::from(*zone) << 8;
                    C::DeleteFlow(t)
                }
                Key::Persist { table, key } => C::DeletePersistence(pb::PersistenceEntry {
                    table: table.clone(),
                    key: key.clone(),
                    ..Default::default()
                }),
            };
            pb::Change { change: Some(change), ttl_ms: 0 }
        }
    }
}

/// A change from the wire as a log operation, with expiry on `now_ms`.
pub fn change_from(c: &pb::Change, now_ms: u64) -> Option<duet_repl::Op<Key, Value>> {
    use pb::change::Change as C;
    // A peer's ttl is not trusted to fit: saturate (found by duet-fuzz).
    let expires_ms = now_ms.saturating_add(c.ttl_ms);
    Some(match c.change.as_ref()? {
        C::UpsertFlow(f) => {
            let flow = flow_from(f)?;
            duet_repl::Op::Upsert {
                key: Key::Flow { orig: flow.orig, zone: flow.zone },
                value: Value::Flow(Box::new(flow)),
                expires_ms,
            }
        }
        C::DeleteFlow(t) => {
            let zone = u16::try_from(t.proto >> 8).unwrap_or(0);
            let mut t = *t;
            t.proto &= 0xff;
            duet_repl::Op::Delete { key: Key::Flow { orig: tuple_from(&t), zone } }
        }
        C::UpsertPersistence(p) => duet_repl::Op::Upsert {
            key: Key::Persist { table: p.table.clone(), key: p.key.clone() },
            value: Value::Persist(p.server.clone()),
            expires_ms,
        },
        C::DeletePersistence(p) => {
            duet_repl::Op::Delete { key: Key::Persist { table: p.table.clone(), key: p.key.clone() } }
        }
    })
}

/// The data plane's persistence element as a log entry.
pub(crate) fn l4_persist(e: &duet_dataplane::PersistEntry, now_ms: u64) -> (Key, Value, u64) {
    (
        Key::Persist { table: format!("l4:{}", e.service), key: e.client.to_string() },
        Value::Persist(e.real_server.to_string()),
        now_ms + e.expires_ms,
    )
}

/// Back to the data plane's element, for installing on the standby.
pub(crate) fn l4_persist_from(
    table: &str,
    key: &str,
    server: &str,
    ttl_ms: u64,
) -> Option<duet_dataplane::PersistEntry> {
    Some(duet_dataplane::PersistEntry {
        service: table.strip_prefix("l4:")?.to_string(),
        real_server: server.parse::<SocketAddrV4>().ok()?,
        client: key.parse().ok()?,
        expires_ms: ttl_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_and_changes_round_trip() {
        let orig = Tuple {
            proto: 6,
            src: Ipv4Addr::new(198, 18, 0, 100),
            dst: Ipv4Addr::new(198, 18, 0, 10),
            sport: 40000,
            dport: 80,
        };
        let reply = Tuple { proto: 6, src: Ipv4Addr::new(198, 19, 0, 101), dst: orig.src, sport: 8080, dport: 40000 };
        let f = Flow {
            orig,
            reply,
            status: 0x1ce,
            timeout_s: 431_999,
            mark: 7,
            zone: 3,
            tcp: Some(TcpInfo { state: 3, ..Default::default() }),
        };
        assert_eq!(flow_from(&flow_pb(&f)), Some(f.clone()));
        let op = duet_repl::Op::Upsert {
            key: Key::Flow { orig, zone: 3 },
            value: Value::Flow(Box::new(f)),
            expires_ms: 10_000,
        };
        let back = change_from(&change_pb(&op, 4_000), 4_000).unwrap();
        assert_eq!(back, op);
        let del = duet_repl::Op::<Key, Value>::Delete { key: Key::Flow { orig, zone: 3 } };
        assert_eq!(change_from(&change_pb(&del, 0), 0).unwrap(), del);
    }
}
