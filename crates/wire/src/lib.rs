//! Bytes on the wire: the CARP v2 advert, the IPv4 header, Ethernet and ARP
