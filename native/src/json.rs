//! A JSON tree that borrows its strings from the message (no copy unless escaped), with
//! the look-up semantics of a Python dict built by orjson (the last duplicate key wins).

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug)]
pub enum V<'a> {
    Null,
    Bool(bool),
    /// JSON integers within i64/u64 (orjson's ints); larger ones parse as floats in both.
    Int(i128),
    Float(f64),
    Str(Cow<'a, str>),
    Arr(Vec<V<'a>>),
    Obj(Vec<(Cow<'a, str>, V<'a>)>),
}

impl<'a> V<'a> {
    /// ``dict.get(key)``: the last value under ``key`` (orjson keeps the last duplicate).
    pub fn get(&self, key: &str) -> Option<&V<'a>> {
        match self {
            V::Obj(pairs) => pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    /// null or "": what the reference's readers treat as absent.
    pub fn is_blank(&self) -> bool {
        match self {
            V::Null => true,
            V::Str(s) => s.is_empty(),
            _ => false,
        }
    }
}

pub fn parse(raw: &[u8]) -> Option<V<'_>> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = ValueSeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = V<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V<'de>, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = V<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<V<'de>, E> {
        Ok(V::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<V<'de>, E> {
        Ok(V::Int(v as i128))
    }
    fn visit_u64<E>(self, v: u64) -> Result<V<'de>, E> {
        Ok(V::Int(v as i128))
    }
    fn visit_f64<E>(self, v: f64) -> Result<V<'de>, E> {
        Ok(V::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_none<E>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            out.push(v);
        }
        Ok(V::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V<'de>, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value_seed(ValueSeed)?;
            out.push((k, v));
        }
        Ok(V::Obj(out))
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as `\b \t
/// \n \f \r` or `\u00xx` (lower-case hex); everything else, DEL and non-ASCII included,
/// as is.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\t' => b"\\t",
            b'\r' => b"\\r",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(b >> 4) as usize]);
            buf.push(HEX[(b & 0xf) as usize]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Any byte below 0x20, `"` or `\`: eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = (x ^ (ONES * b'"' as u64)).wrapping_sub(ONES) & !(x ^ (ONES * b'"' as u64));
        let slash =
            (x ^ (ONES * b'\\' as u64)).wrapping_sub(ONES) & !(x ^ (ONES * b'\\' as u64));
        if (control | quote | slash) & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Text known to need no escape (hex digests, digits, our own formatted times).
pub fn write_plain(buf: &mut Vec<u8>, s: &str) {
    debug_assert!(!needs_escape(s.as_bytes()));
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

/// A finite float as orjson writes it: the shortest round-trip digits, decimal notation
/// from 1e-5 to below 1e16, else `1e-7` / `1e+16`.
pub fn write_float(buf: &mut Vec<u8>, f: f64) {
    let mut b = ryu::Buffer::new();
    let text = b.format_finite(f);
    match text.find('e') {
        Some(pos) if text.as_bytes().get(pos + 1) != Some(&b'-') => {
            buf.extend_from_slice(&text.as_bytes()[..=pos]);
            buf.push(b'+');
            buf.extend_from_slice(&text.as_bytes()[pos + 1..]);
        }
        _ => buf.extend_from_slice(text.as_bytes()),
    }
}
