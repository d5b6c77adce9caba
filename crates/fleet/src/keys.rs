//! Where a fleet keeps what, under its prefix (`/duet` by default):
//!
//! ```text
//! <prefix>/pairs/<pair>/head                    {"generation":7,"hash":"…"}: the pair's current generation
//! <prefix>/pairs/<pair>/image/<generation:020>  the image (protobuf JSON, as `duetctl config get` prints it)
//! <prefix>/pairs/<pair>/units/<unit>            the unit's status (JSON), under the unit's lease
//! ```
//!
//! A role that may read and write `<prefix>/pairs/<pair>/` is all a unit
//! of that pair needs (see the README's fleet section).

/// The key layout of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (`/duet`; a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.trim_end_matches('/').to_owned() }
    }

    /// Where every pair's keys start.
    pub fn pairs(&self) -> String {
        format!("{}/pairs/", self.prefix)
    }

    /// Where `pair`'s keys start.
    pub fn pair(&self, pair: &str) -> String {
        format!("{}{pair}/", self.pairs())
    }

    /// The pair's head: its current generation and hash.
    pub fn head(&self, pair: &str) -> String {
        format!("{}head", self.pair(pair))
    }

    /// Where the pair's image generations start.
    pub fn images(&self, pair: &str) -> String {
        format!("{}image/", self.pair(pair))
    }

    /// Generation `g` of the pair's image (zero-padded, so keys sort by
    /// generation).
    pub fn image(&self, pair: &str, g: u64) -> String {
        format!("{}{g:020}", self.images(pair))
    }

    /// Where the pair's units' status keys start.
    pub fn units(&self, pair: &str) -> String {
        format!("{}units/", self.pair(pair))
    }

    /// One unit's status key.
    pub fn unit(&self, pair: &str, unit: &str) -> String {
        format!("{}{unit}", self.units(pair))
    }

    /// The pair a key under [`pairs`](Self::pairs) belongs to.
    pub fn pair_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        let pairs = self.pairs();
        let rest = key.strip_prefix(pairs.as_str())?;
        rest.split_once('/').map(|(p, _)| p).filter(|p| !p.is_empty())
    }

    /// The generation of an image key.
    pub fn generation_of(key: &str) -> Option<u64> {
        key.rsplit_once("/image/").and_then(|(_, g)| g.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_layout() {
        let k = Keys::new("/duet/");
        assert_eq!(k.head("edge-1"), "/duet/pairs/edge-1/head");
        assert_eq!(k.image("edge-1", 42), "/duet/pairs/edge-1/image/00000000000000000042");
        assert_eq!(k.unit("edge-1", "lb1"), "/duet/pairs/edge-1/units/lb1");
        assert_eq!(k.pair_of("/duet/pairs/edge-1/units/lb1"), Some("edge-1"));
        assert_eq!(k.pair_of("/duet/witness"), None);
        assert_eq!(Keys::generation_of(&k.image("p", 7)), Some(7));
    }

    proptest! {
        #[test]
        fn image_keys_sort_by_generation(a in any::<u64>(), b in any::<u64>()) {
            let k = Keys::new("/f");
            prop_assert_eq!(a.cmp(&b), k.image("p", a).cmp(&k.image("p", b)));
            prop_assert_eq!(Keys::generation_of(&k.image("p", a)), Some(a));
        }

        #[test]
        fn every_key_of_a_pair_is_under_its_prefix(pair in "[a-z0-9._-]{1,20}", unit in "[a-z0-9]{1,8}") {
            let k = Keys::new("/duet");
            for key in [k.head(&pair), k.image(&pair, 1), k.unit(&pair, &unit)] {
                prop_assert!(key.starts_with(&k.pair(&pair)));
                prop_assert_eq!(k.pair_of(&key), Some(pair.as_str()));
            }
        }
    }
}
