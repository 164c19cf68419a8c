//! A JSON tree that borrows its strings from the message (no copy unless escaped), with
//! the look-up semantics of a Python dict built by orjson (the last duplicate key wins).

use std::borrow::Cow;

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
    /// A value that was checked but not kept (no field reads it; only its presence
    /// counts): reading into it defers.
    Skipped,
}

/// Key equality, cheapest test first (most keys differ in length or first byte).
#[inline]
pub fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && (a.is_empty() || (a[0] == b[0] && a[a.len() - 1] == b[b.len() - 1] && a == b))
}

/// Which parts of a message are kept: the keys some field, filter or shape check reads.
/// Everything under a node with ``all`` is kept; arrays pass their node to their elements.
#[derive(Debug, Default, Clone)]
pub struct Keep {
    pub all: bool,
    /// Present only (the value is checked, not kept).
    pub presence: bool,
    pub keys: Vec<(String, Keep)>,
}

impl Keep {
    pub fn everything() -> Keep {
        Keep { all: true, ..Keep::default() }
    }

    pub fn get(&self, key: &str) -> Option<&Keep> {
        self.keys.iter().find(|(k, _)| same_key(k, key)).map(|(_, v)| v)
    }

    pub fn entry(&mut self, key: &str) -> &mut Keep {
        let at = match self.keys.iter().position(|(k, _)| k == key) {
            Some(at) => at,
            None => {
                self.keys.push((key.to_owned(), Keep::default()));
                self.keys.len() - 1
            }
        };
        &mut self.keys[at].1
    }
}

impl<'a> V<'a> {
    /// ``dict.get(key)``: the last value under ``key`` (orjson keeps the last duplicate).
    pub fn get(&self, key: &str) -> Option<&V<'a>> {
        match self {
            V::Obj(pairs) => pairs.iter().rev().find(|(k, _)| same_key(k, key)).map(|(_, v)| v),
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

/// The JSON value of ``raw`` (RFC 8259, as orjson reads it), or None for anything that
/// is not JSON, or that orjson might read differently (the caller then defers).
pub fn parse(raw: &[u8]) -> Option<V<'_>> {
    parse_or_truncated(raw, &Keep::everything()).ok()
}

/// ``Err(true)``: valid UTF-8 that ends inside a JSON value (a truncated message: no JSON
/// reader accepts it); ``Err(false)``: anything else not read here.
pub fn parse_or_truncated<'a>(raw: &'a [u8], keep: &Keep) -> Result<V<'a>, bool> {
    let text = std::str::from_utf8(raw).map_err(|_| false)?;
    let mut p = Parser { s: text, b: raw, i: 0, depth: 0 };
    p.ws();
    match p.value(keep) {
        Some(v) => {
            p.ws();
            if p.i == raw.len() {
                Ok(v)
            } else {
                Err(false)
            }
        }
        None => Err(p.i >= raw.len() && !raw.is_empty()),
    }
}

const MAX_DEPTH: u32 = 128;

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn lit(&mut self, word: &[u8], v: V<'a>) -> Option<V<'a>> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(v)
        } else {
            None
        }
    }

    fn value(&mut self, keep: &Keep) -> Option<V<'a>> {
        match self.peek()? {
            b'{' => self.object(keep),
            b'[' => self.array(keep),
            b'"' => self.string().map(V::Str),
            b't' => self.lit(b"true", V::Bool(true)),
            b'f' => self.lit(b"false", V::Bool(false)),
            b'n' => self.lit(b"null", V::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, keep: &Keep) -> Option<V<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut out = Vec::with_capacity(8);
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Some(V::Obj(out));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let k = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            if keep.all {
                let v = self.value(keep)?;
                out.push((k, v));
            } else {
                match keep.get(k.as_ref()) {
                    Some(child) if child.presence && !child.all && child.keys.is_empty() => {
                        self.skip()?;
                        out.push((k, V::Skipped));
                    }
                    Some(child) => {
                        let v = self.value(child)?;
                        out.push((k, v));
                    }
                    None => self.skip()?,
                }
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(V::Obj(out));
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, keep: &Keep) -> Option<V<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut out = Vec::with_capacity(4);
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            self.depth -= 1;
            return Some(V::Arr(out));
        }
        loop {
            self.ws();
            out.push(self.value(keep)?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(V::Arr(out));
                }
                _ => return None,
            }
        }
    }

    /// A value read as ``value`` reads it (same acceptance), nothing kept.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' | b'[' => {
                let close = if self.peek()? == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == close {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if object {
                        if self.peek()? != b'"' {
                            return None;
                        }
                        self.string()?;
                        self.ws();
                        if self.peek()? != b':' {
                            return None;
                        }
                        self.i += 1;
                        self.ws();
                    }
                    self.skip()?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        c if c == close => {
                            self.i += 1;
                            self.depth -= 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.value(&Keep::default()).map(|_| ()),
        }
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.i += 1; // the opening quote
        let start = self.i;
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    let s = &self.s[start..self.i];
                    self.i += 1;
                    return Some(Cow::Borrowed(s));
                }
                b'\\' => break,
                0x00..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        // with escapes: decode into an owned string
        let mut out = String::with_capacity(self.i - start + 16);
        out.push_str(&self.s[start..self.i]);
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i) != Some(&b'\\')
                                    || self.b.get(self.i + 1) != Some(&b'u')
                                {
                                    return None; // a lone surrogate: orjson refuses it
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return None;
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code)?);
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => {
                    // copy the run up to the next quote or backslash
                    let run = self.i;
                    while let Some(&d) = self.b.get(self.i) {
                        if d == b'"' || d == b'\\' || d < 0x20 {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(&self.s[run..self.i]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut n = 0u32;
        for &d in digits {
            n = n * 16 + (d as char).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }

    fn number(&mut self) -> Option<V<'a>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            float = true;
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            float = true;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        let text = &self.s[start..self.i];
        if !float && text.len() <= 20 {
            // orjson: an integer within i64 or u64 is an int (-0 is 0), else a float
            if let Ok(n) = text.parse::<i128>() {
                if n >= i64::MIN as i128 && n <= u64::MAX as i128 {
                    return Some(V::Int(n));
                }
            }
        }
        let f: f64 = text.parse().ok()?;
        f.is_finite().then_some(V::Float(f))
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
    let bytes = text.as_bytes();
    match bytes.iter().position(|&b| b == b'e') {
        Some(pos) if bytes.get(pos + 1) != Some(&b'-') => {
            buf.extend_from_slice(&text.as_bytes()[..=pos]);
            buf.push(b'+');
            buf.extend_from_slice(&text.as_bytes()[pos + 1..]);
        }
        _ => buf.extend_from_slice(text.as_bytes()),
    }
}
