//! The keys a struct reads, taken from its serde derive, so a message that
//! lists the allowed keys never drifts from the type.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The keys of the struct `T` as its `Deserialize` knows them (in
/// declaration order); empty for a type that is not a plain struct (one
/// with a flattened field reads a map, not named fields).
pub fn keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe stops T's deserializer at its first call; the error that
    // makes it stop is expected and carries nothing.
    let _ = T::deserialize(Probe { fields: &mut fields });
    fields
}

struct Probe<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names probed")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Self
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.fields = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_structs_keys_in_order() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            a: u32,
            #[serde(rename = "b_c")]
            b: bool,
        }
        assert_eq!(super::keys::<S>(), ["a", "b_c"]);
        assert!(super::keys::<u32>().is_empty());
    }
}
