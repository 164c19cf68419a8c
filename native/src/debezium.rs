//! ``unwrap_change`` of consumer/transform/debezium.py for the changes that are new
//! orders (creates, snapshot reads, updates when enabled): the decoded row, with the
//! change's commit time as ``__source_ts_ms``. Skips, rejections, JSON columns and
//! anything unusual are ``Defer``.

use crate::core::{Defer, R};
use crate::json::V;
use crate::norm::write_time_ms;
use std::borrow::Cow;

const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
const VARIABLE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";
const JSON: &str = "io.debezium.data.Json";
const MAX_EPOCH_MS: i128 = 253_402_300_800_000;

pub struct DebeziumSettings {
    pub updates: bool,
    pub decimal_scales: Vec<(String, i64)>,
}

fn timestamp_divisor(name: &str) -> Option<i128> {
    match name {
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => Some(1),
        "io.debezium.time.MicroTimestamp" => Some(1000),
        "io.debezium.time.NanoTimestamp" => Some(1_000_000),
        _ => None,
    }
}

fn take<'a>(obj: &mut V<'a>, key: &str) -> Option<V<'a>> {
    let V::Obj(pairs) = obj else { return None };
    let at = pairs.iter().rposition(|(k, _)| k == key)?;
    Some(std::mem::replace(&mut pairs[at].1, V::Null))
}

fn is_envelope(body: &V) -> bool {
    body.has("op") && (body.has("after") || body.has("before"))
}

fn fields_of<'s, 'a>(schema: &'s V<'a>) -> &'s [V<'a>] {
    match schema.get("fields") {
        Some(V::Arr(f)) => f,
        _ => &[],
    }
}

/// The row to map, decoded as the reference decodes it.
pub fn unwrap_change<'a>(mut doc: V<'a>, settings: &DebeziumSettings) -> R<V<'a>> {
    let mut schema: Option<V<'a>> = None;
    let mut body = if doc.has("schema") && doc.has("payload") {
        schema = take(&mut doc, "schema");
        let body = take(&mut doc, "payload").ok_or(Defer)?;
        if !matches!(body, V::Obj(_)) {
            return Err(Defer); // tombstone skip or schema_violation
        }
        body
    } else {
        doc
    };
    let mut source_ms: Option<V<'a>> = None;
    let mut row_schema: Option<V<'a>> = None;
    let mut row = if is_envelope(&body) {
        let op = body.get("op").and_then(V::as_str);
        match op {
            Some("c") | Some("r") => {}
            Some("u") if settings.updates => {}
            _ => return Err(Defer), // skips and rejections
        }
        let row = take(&mut body, "after").ok_or(Defer)?;
        if !matches!(row, V::Obj(_)) {
            return Err(Defer);
        }
        if let Some(V::Obj(_)) = body.get("source") {
            let mut source = take(&mut body, "source").ok_or(Defer)?;
            source_ms = take(&mut source, "ts_ms").filter(|v| !matches!(v, V::Null));
        }
        if source_ms.is_none() {
            source_ms = take(&mut body, "ts_ms").filter(|v| !matches!(v, V::Null));
        }
        // _field_schema(schema, "after")
        if let Some(s) = &schema {
            if matches!(s, V::Obj(_)) {
                let found = fields_of(s).iter().position(
                    |e| matches!(e, V::Obj(_)) && matches!(e.get("field"), Some(V::Str(f)) if f == "after"),
                );
                if let Some(at) = found {
                    if let Some(mut s) = schema.take() {
                        if let Some(V::Arr(fields)) = take(&mut s, "fields") {
                            row_schema = fields.into_iter().nth(at);
                        }
                    }
                }
            }
        }
        row
    } else {
        let row = body;
        match row.get("__deleted") {
            Some(V::Bool(true)) => return Err(Defer),
            Some(V::Str(s)) if s == "true" => return Err(Defer),
            _ => {}
        }
        match row.get("__op").and_then(V::as_str) {
            Some("d") | Some("t") => return Err(Defer),
            Some("u") if !settings.updates => return Err(Defer),
            _ => {}
        }
        row_schema = schema;
        row
    };
    decode(&mut row, row_schema.as_ref(), settings)?;
    if let Some(ms) = source_ms {
        if !row.has("__source_ts_ms") {
            if let V::Obj(pairs) = &mut row {
                pairs.push((Cow::Borrowed("__source_ts_ms"), ms));
            }
        }
    }
    Ok(row)
}

enum Plan {
    Decimal(Option<i64>),
    Variable,
    Timestamp(i128),
}

fn decode(row: &mut V, schema: Option<&V>, settings: &DebeziumSettings) -> R<()> {
    let mut plan: Vec<(String, Plan)> = Vec::new();
    match schema {
        Some(s @ V::Obj(_)) => {
            for entry in fields_of(s) {
                if !matches!(entry, V::Obj(_)) {
                    continue;
                }
                let (Some(V::Str(name)), Some(V::Str(column))) = (entry.get("name"), entry.get("field"))
                else {
                    continue;
                };
                if !row.has(column) {
                    continue;
                }
                if name == DECIMAL {
                    let scale = match entry.get("parameters") {
                        Some(p @ V::Obj(_)) => match p.get("scale") {
                            None | Some(V::Null) => None,
                            Some(V::Int(i)) => Some(i64::try_from(*i).map_err(|_| Defer)?),
                            Some(V::Str(t)) if crate::norm::all_digits(t) && t.len() < 6 => {
                                Some(t.parse().map_err(|_| Defer)?)
                            }
                            Some(_) => return Err(Defer),
                        },
                        _ => None,
                    };
                    plan.push((column.to_string(), Plan::Decimal(scale)));
                } else if let Some(div) = timestamp_divisor(name) {
                    plan.push((column.to_string(), Plan::Timestamp(div)));
                } else if name == VARIABLE_DECIMAL {
                    plan.push((column.to_string(), Plan::Variable));
                } else if name == JSON {
                    return Err(Defer); // parsed JSON columns are left to the reference
                }
            }
        }
        _ => {
            for (column, scale) in &settings.decimal_scales {
                if row.has(column) {
                    plan.push((column.clone(), Plan::Decimal(Some(*scale))));
                }
            }
        }
    }
    let V::Obj(pairs) = row else { return Err(Defer) };
    for (column, kind) in plan {
        let Some(at) = pairs.iter().rposition(|(k, _)| *k == column) else { continue };
        let value = &pairs[at].1;
        let new = match kind {
            Plan::Decimal(scale) => decode_decimal(value, scale)?,
            Plan::Variable => match value {
                V::Obj(_) => {
                    let scale = match value.get("scale") {
                        None | Some(V::Null) => None,
                        Some(V::Int(i)) => Some(i64::try_from(*i).map_err(|_| Defer)?),
                        Some(_) => return Err(Defer),
                    };
                    match value.get("value") {
                        None => Some(V::Null),
                        Some(v) => decode_decimal(v, scale)?,
                    }
                }
                _ => None,
            },
            Plan::Timestamp(div) => match value {
                V::Int(i) if 0 <= i.div_euclid(div) && i.div_euclid(div) < MAX_EPOCH_MS => {
                    let mut buf = Vec::with_capacity(26);
                    write_time_ms(&mut buf, i.div_euclid(div) as i64);
                    let text = String::from_utf8(buf[1..buf.len() - 1].to_vec()).map_err(|_| Defer)?;
                    Some(V::Str(Cow::Owned(text)))
                }
                _ => None,
            },
        };
        if let Some(v) = new {
            pairs[at].1 = v;
        }
    }
    Ok(())
}

fn b64(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// ``decode_decimal``: ``None`` leaves the value as it is, ``Some(v)`` replaces it.
fn decode_decimal<'a>(value: &V, scale: Option<i64>) -> R<Option<V<'a>>> {
    let V::Str(text) = value else { return Ok(None) };
    let Some(digits) = scale else { return Ok(Some(V::Null)) };
    let b = text.as_bytes();
    // base64.b64decode(validate=True): the alphabet, then at most two '=' at the end
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    if b.len() % 4 != 0 || pad > 2 || b[..b.len() - pad].iter().any(|&c| b64(c).is_none()) {
        return Err(Defer); // the reference answers None or decodes oddly: not proven here
    }
    let mut raw: Vec<u8> = Vec::with_capacity(b.len() / 4 * 3);
    for chunk in b.chunks(4) {
        let mut n = 0u32;
        let mut count: u32 = 0;
        for &c in chunk {
            if c == b'=' {
                break;
            }
            n = (n << 6) | b64(c).ok_or(Defer)?;
            count += 1;
        }
        n <<= 6 * (4 - count);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        raw.extend_from_slice(&bytes[..count.saturating_sub(1) as usize]);
    }
    if raw.is_empty() || !(0..=30).contains(&digits) {
        return Ok(Some(V::Null));
    }
    if raw.len() > 11 {
        return Err(Defer); // beyond 28 digits Decimal would round
    }
    let mut unscaled: i128 = if raw[0] & 0x80 != 0 { -1 } else { 0 };
    for &byte in &raw {
        unscaled = (unscaled << 8) | byte as i128;
    }
    let negative = unscaled < 0;
    let digits_text = unscaled.unsigned_abs().to_string();
    let d = digits as usize;
    let body = if d == 0 {
        digits_text
    } else {
        let width = d + 1;
        let padded = format!("{digits_text:0>width$}");
        let (i, f) = padded.split_at(padded.len() - d);
        format!("{i}.{f}")
    };
    let text = if negative { format!("-{body}") } else { body };
    Ok(Some(V::Str(Cow::Owned(text))))
}
