//! Bytes on the wire as a JSON string, one character per byte (U+0000 to U+00FF, the bytes'
//! Latin-1 reading): the text a sysctl holds travels as itself (`"1\n"`, not `[49,10]`,
//! a fifth of the size), and any other byte survives unchanged. A character above U+00FF
//! is refused.

use serde::de::{Error, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes `bytes` as a string of one character per byte.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    serializer.serialize_str(&text)
}

/// Deserializes what [`serialize`] wrote.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_str(Latin1)
}

struct Latin1;

impl Visitor<'_> for Latin1 {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string of characters U+0000 to U+00FF, one per byte")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Vec<u8>, E> {
        text.chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| E::custom(format!("{c:?} is not a byte")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Data(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn text_travels_as_itself_and_every_byte_survives() {
        assert_eq!(
            serde_json::to_string(&Data(b"1\n".to_vec())).unwrap(),
            r#""1\n""#
        );
        let every: Vec<u8> = (0..=255).collect();
        let line = serde_json::to_string(&Data(every.clone())).unwrap();
        assert_eq!(serde_json::from_str::<Data>(&line).unwrap(), Data(every));
    }

    #[test]
    fn a_character_beyond_a_byte_is_refused() {
        assert!(serde_json::from_str::<Data>(r#""\u0100""#).is_err());
        assert!(serde_json::from_str::<Data>("[49,10]").is_err());
    }
}
