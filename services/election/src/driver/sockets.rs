//! The driver's sockets: the raw CARP socket and the peer-status UDP
//! socket of each HA-check interface, their receive tasks, and the link
//! watcher. Received packets go to the driver through one bounded queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use duet_net::carp_socket::{CarpSocket, SendMode};
use duet_net::netlink::{NetEvent, Netlink};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Driver, Inbound, Shared};

impl Driver {
    /// Opens the sockets and starts the receive tasks and the link watcher.
    pub(crate) async fn open(
        &mut self,
        inbound: &mpsc::Sender<Inbound>,
        tasks: &mut duet_runtime::tasks::Tasks,
    ) -> anyhow::Result<()> {
        let nl = Netlink::new()?;
        let params = self.election.params().clone();
        for (k, i) in params.interfaces.iter().enumerate() {
            let info = nl.link(&i.name).await.map_err(|e| {
                anyhow::anyhow!("interface {} (interface[{k}].name): {e}; check the name against `ip link`", i.name)
            })?;
            if !i.ha_check || params.mode == duet_carp::HaMode::NonHa {
                continue;
            }
            if !info.up {
                self.link_up[k] = false;
                self.election.handle_link_at_start(k, false);
            }
            let mode = match i.destination {
                duet_carp::Destination::Multicast => SendMode::Multicast,
                duet_carp::Destination::Broadcast => SendMode::Broadcast,
                duet_carp::Destination::Unicast => SendMode::Unicast,
            };
            let sock = Arc::new(CarpSocket::open(&i.name, info.index, i.unit_addr, mode)?);
            self.sockets[k] = Some(Arc::clone(&sock));
            let tx = inbound.clone();
            let shared = Arc::clone(&self.shared);
            tasks.spawn_restarting(&format!("receive adverts on {}", i.name), Duration::from_millis(100), move || {
                let sock = Arc::clone(&sock);
                let tx = tx.clone();
                let shared = Arc::clone(&shared);
                async move { receive_loop(k, &sock, &tx, &shared).await }
            });
            if i.partner_addr.is_some() {
                let udp = UdpSocket::bind((i.unit_addr, self.status_port)).await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot bind the peer-status port {}:{} on {}: {e}; the unit address must be configured on the interface and election.status_port free",
                        i.unit_addr,
                        self.status_port,
                        i.name
                    )
                })?;
                let udp = Arc::new(udp);
                self.peer_sockets[k] = Some(Arc::clone(&udp));
                let tx = inbound.clone();
                tasks.spawn_restarting::<_, _, std::io::Error>(
                    &format!("receive peer status on {}", i.name),
                    Duration::from_millis(100),
                    move || {
                        let udp = Arc::clone(&udp);
                        let tx = tx.clone();
                        async move {
                            let mut buf = [0u8; 512];
                            loop {
                                let (n, from) = udp.recv_from(&mut buf).await?;
                                if let std::net::SocketAddr::V4(v4) = from {
                                    let _ = tx.try_send(Inbound::Peer {
                                        iface: k,
                                        src: *v4.ip(),
                                        bytes: buf[..n].to_vec(),
                                    });
                                }
                            }
                        }
                    },
                );
            }
        }
        let mut events = duet_net::netlink::watch()?;
        let tx = inbound.clone();
        tasks.spawn::<_, std::convert::Infallible>("link watcher", async move {
            while let Some(ev) = events.recv().await {
                let msg = match ev {
                    NetEvent::Link(info) => Inbound::Link { name: info.name, up: info.up },
                    NetEvent::LinkRemoved { name, .. } => Inbound::Link { name, up: false },
                    _ => continue,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        Ok(())
    }
}

async fn receive_loop(
    iface: usize,
    sock: &CarpSocket,
    tx: &mpsc::Sender<Inbound>,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Never wait for the driver here: a full queue means a flood, and
        // the packet is dropped and counted.
        if tx.try_send(Inbound::Packet { iface, bytes: buf[..n].to_vec(), at: Instant::now() }).is_err() {
            shared.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}
