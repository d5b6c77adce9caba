//! IPv4 addresses with a prefix length, as written in the unit file and in
//! the image ("198.18.0.1/24").

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Why a text is not an address with a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` in the text.
    #[error("\"{0}\" has no prefix length: write it as 198.18.0.1/24")]
    NoPrefix(String),
    /// The part before `/` is not an IPv4 address.
    #[error("\"{0}\" is not an IPv4 address")]
    Address(String),
    /// The part after `/` is not a number.
    #[error("\"{0}\" is not a prefix length (0-32)")]
    Prefix(String),
    /// The prefix length is above 32.
    #[error("prefix length {0} is above 32")]
    PrefixTooLong(u8),
}

impl Cidr {
    /// The network part.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) }
    }

    /// Whether `other` lies in this address's subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        u32::from(other) & self.mask() == u32::from(self.network())
    }

    /// The subnet's broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (a, p) = s.split_once('/').ok_or_else(|| CidrError::NoPrefix(s.to_owned()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::Address(a.to_owned()))?;
        let prefix: u8 = p.parse().map_err(|_| CidrError::Prefix(p.to_owned()))?;
        if prefix > 32 {
            return Err(CidrError::PrefixTooLong(prefix));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_subnet() {
        let c: Cidr = "198.18.0.1/24".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(198, 18, 0, 0));
        assert!(c.contains(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(198, 18, 1, 1)));
        assert_eq!(c.broadcast(), Ipv4Addr::new(198, 18, 0, 255));
        assert!("198.18.0.1".parse::<Cidr>().unwrap_err().to_string().contains("no prefix"));
        assert!("198.18.0.1/33".parse::<Cidr>().is_err());
        assert_eq!(c.to_string(), "198.18.0.1/24");
    }
}
