//! Field rules of consumer/transform/normalize.py, for the inputs whose answer can be
//! proven identical here. ``None`` from a ``*_fast`` function means "not decided here":
//! the caller asks the Python reference (or defers the whole event).

use sha2::{Digest, Sha256};

/// Python's ``str.isspace`` (Unicode 14, CPython 3.11).
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// ``str.strip()``.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// ``len(str)``: code points.
pub fn py_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
    out
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// ``hash_email`` for ASCII input (``Some(None)``: dropped); ``None`` for other input.
pub fn hash_email_fast(raw: &str) -> Option<Option<String>> {
    if !raw.is_ascii() {
        return None;
    }
    let text = py_strip(raw);
    if is_hex64(text) {
        return Some(Some(text.to_ascii_lowercase()));
    }
    let text = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let at = match text.find('@') {
        Some(at) => at,
        None => return Some(None),
    };
    if at == 0
        || at == bytes.len() - 1
        || bytes.iter().filter(|&&b| b == b'@').count() != 1
        || bytes.contains(&b' ')
        || bytes.contains(&b'\t')
    {
        return Some(None);
    }
    Some(Some(sha256_hex(bytes)))
}

pub const NANP_REGIONS: &[&str] = &[
    "US", "CA", "AG", "AI", "AS", "BB", "BM", "BS", "DM", "DO", "GD", "GU", "JM", "KN", "KY", "LC",
    "MP", "MS", "PR", "SX", "TC", "TT", "VC", "VG", "VI",
];

fn e164_shape(compact: &str) -> Option<bool> {
    // "+", then 7-15 digits, not starting with 0 (the reference's shape check)
    let digits = compact.strip_prefix('+')?;
    Some(
        (7..=15).contains(&digits.len())
            && all_digits(digits)
            && digits.as_bytes()[0] != b'0',
    )
}

/// ``normalize_phone``'s fast paths for ASCII input: ``Some(Some(e164))``, ``Some(None)``
/// (the reference answers None without a parse), or ``None`` (needs ``phonenumbers``).
pub fn normalize_phone_fast(text: &str, nanp: bool) -> Option<Option<String>> {
    if !text.is_ascii() {
        return None;
    }
    let mut compact: String = text.chars().filter(|&c| c != ' ' && c != '-').collect();
    if e164_shape(&compact) == Some(true) {
        return Some(Some(compact));
    }
    if compact.contains(['(', '.', '/']) {
        compact.retain(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '/' | '\t'));
    }
    // _fast_phone
    if compact.starts_with('+') {
        if e164_shape(&compact) == Some(true) {
            return Some(Some(compact));
        }
    } else if nanp && all_digits(&compact) {
        let b = compact.as_bytes();
        if b.len() == 10 && b[0] > b'1' && b[3] > b'1' {
            return Some(Some(format!("+1{compact}")));
        }
        if b.len() == 11 && b[0] == b'1' && b[1] > b'1' && b[4] > b'1' {
            return Some(Some(format!("+{compact}")));
        }
    }
    if let Some(rest) = compact.strip_prefix('+') {
        if all_digits(rest) {
            return Some(None); // looked like E.164 but has a bad length or a leading zero
        }
    }
    None
}

/// ``hash_phone`` when decided without ``phonenumbers``; ``None`` otherwise.
pub fn hash_phone_fast(raw: &str, nanp: bool) -> Option<Option<String>> {
    if !raw.is_ascii() {
        return None;
    }
    let text = py_strip(raw);
    if is_hex64(text) {
        return Some(Some(text.to_ascii_lowercase()));
    }
    let e164 = normalize_phone_fast(text, nanp)?;
    Some(e164.map(|n| sha256_hex(n.as_bytes())))
}

/// ``normalize_ip`` for dotted IPv4 (``Some``), ``None`` for text with ':' or non-ASCII.
pub fn normalize_ip_fast(raw: &str) -> Option<Option<&str>> {
    if !raw.is_ascii() {
        return None;
    }
    let text = py_strip(raw);
    if text.contains(':') {
        return None;
    }
    let mut parts = 0;
    for part in text.split('.') {
        parts += 1;
        let b = part.as_bytes();
        let ok = match b.len() {
            1 => b[0].is_ascii_digit(),
            2 | 3 => {
                all_digits(part) && b[0] != b'0' && part.parse::<u32>().is_ok_and(|n| n <= 255)
            }
            _ => false,
        };
        if !ok {
            return Some(None);
        }
    }
    Some(if parts == 4 { Some(text) } else { None })
}

/// ``match_decimal``: ``[0-9]{1,15}(\.[0-9]{1,10})?``.
pub fn match_decimal(s: &str) -> bool {
    let (int, frac) = match s.find('.') {
        Some(dot) => (&s[..dot], Some(&s[dot + 1..])),
        None => (s, None),
    };
    if !(1..=15).contains(&int.len()) || !all_digits(int) {
        return false;
    }
    match frac {
        None => true,
        Some(f) => (1..=10).contains(&f.len()) && all_digits(f),
    }
}

pub const MAX_AMOUNT: f64 = 1e15;

/// Python's ``float(text)`` for text that ``match_decimal`` accepted (correctly rounded).
pub fn decimal_float(s: &str) -> f64 {
    s.parse::<f64>().unwrap_or(f64::NAN)
}

// --- time ---------------------------------------------------------------------------

pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

fn num(b: &[u8]) -> Option<i64> {
    let mut n = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as i64;
    }
    Some(n)
}

pub fn epoch_ms_int(n: i128) -> Option<i64> {
    if n < 0 {
        None
    } else if n < 100_000_000_000 {
        Some((n * 1000) as i64)
    } else if n < 100_000_000_000_000 {
        Some(n as i64)
    } else if n < 100_000_000_000_000_000 {
        Some((n / 1000) as i64)
    } else {
        None
    }
}

/// ``parse_time_ms`` for the accepted shapes decided here; ``None`` for anything else
/// (a rejection, or a form only ``datetime.fromisoformat``'s general path knows).
pub fn parse_time_text(value: &str) -> Option<i64> {
    if !value.is_ascii() {
        return None;
    }
    let text = py_strip(value);
    if all_digits(text) && text.len() < 18 {
        return epoch_ms_int(text.parse::<i128>().ok()?);
    }
    let b = text.as_bytes();
    if b.len() < 10 || b.len() > 40 {
        return None;
    }
    let (local, offset) = if b[b.len() - 1] == b'Z' {
        (&b[..b.len() - 1], 0i64)
    } else {
        let (local, off) = b.split_at(b.len() - 6);
        let sign = match off[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if off[3] != b':' {
            return None;
        }
        let (h, m) = (num(&off[1..3])?, num(&off[4..6])?);
        if h > 23 || m > 59 {
            return None;
        }
        (local, sign * (h * 60 + m) * 60_000)
    };
    let frac_ms = match local.len() {
        19 => 0,
        23 | 26 if local[19] == b'.' => {
            let f = num(&local[20..])?;
            if local.len() == 23 {
                f
            } else {
                f / 1000
            }
        }
        _ => return None,
    };
    if local[10] != b'T' || local[4] != b'-' || local[7] != b'-' || local[13] != b':' || local[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&local[0..4])?, num(&local[5..7])?, num(&local[8..10])?);
    let (h, mi, s) = (num(&local[11..13])?, num(&local[14..16])?, num(&local[17..19])?);
    if y < 1 || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(days * 86_400_000 + (h * 3600 + mi * 60 + s) * 1000 + frac_ms - offset)
}

pub fn parse_time_float(n: f64) -> Option<i64> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let ms = if n < 1e11 {
        (n * 1000.0).round_ties_even()
    } else if n < 1e14 {
        n.round_ties_even()
    } else if n < 1e17 {
        (n / 1000.0).round_ties_even()
    } else {
        return None;
    };
    Some(ms as i64)
}

/// ``format_time_ms``: ``"yyyy-MM-ddTHH:mm:ss.SSSZ"`` in UTC, appended with its quotes.
pub fn write_time_ms(buf: &mut Vec<u8>, ms: i64) {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        buf.extend_from_slice(format!("\"{y:04}-{m:02}-{d:02}T").as_bytes());
    } else {
        buf.push(b'"');
        push_digits(buf, y, 4);
        buf.push(b'-');
        push_digits(buf, m, 2);
        buf.push(b'-');
        push_digits(buf, d, 2);
        buf.push(b'T');
    }
    push_digits(buf, rest / 3600, 2);
    buf.push(b':');
    push_digits(buf, rest % 3600 / 60, 2);
    buf.push(b':');
    push_digits(buf, rest % 60, 2);
    buf.push(b'.');
    push_digits(buf, millis, 3);
    buf.extend_from_slice(b"Z\"");
}

fn push_digits(buf: &mut Vec<u8>, n: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    while div > 0 {
        buf.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

pub enum TimeReject {
    Invalid,
    Naive,
}

/// Which rejection ``parse_time_ms`` answers for a value the fast paths did not accept,
/// when that is certain without ``datetime.fromisoformat``'s general parser; else None.
pub fn time_rejection(value: &crate::json::V) -> Option<TimeReject> {
    use crate::json::V;
    match value {
        V::Str(s) => {
            if !s.is_ascii() {
                return None;
            }
            let text = py_strip(s);
            if all_digits(text) && text.len() < 18 {
                return Some(TimeReject::Invalid); // epoch out of range
            }
            if text.len() < 10 || text.len() > 40 || !text.bytes().any(|b| b.is_ascii_digit()) {
                return Some(TimeReject::Invalid);
            }
            // a valid local date and time with no offset at all: a naive datetime
            let with_zone = format!("{text}Z");
            if matches!(text.len(), 19 | 23 | 26) && parse_time_text(&with_zone).is_some() {
                return Some(TimeReject::Naive);
            }
            None
        }
        V::Int(_) | V::Float(_) | V::Bool(_) | V::Arr(_) | V::Obj(_) | V::Null => {
            Some(TimeReject::Invalid)
        }
        V::Skipped => None,
    }
}
