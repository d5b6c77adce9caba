//! Thin adapters to the kernel: raw CARP sockets, multicast, netlink links and addresses, ARP
