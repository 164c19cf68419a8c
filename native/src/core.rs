//! ``Transformer._convert`` of consumer/transform/transformer.py for one preset's compiled
//! mapping, on the native JSON tree. Every branch the reference answers with a rejection,
//! and every input whose answer is not proven identical here, is ``Err(Defer)``: the
//! Python reference then handles the whole event (nothing here has been counted yet).

use crate::json::{write_float, write_plain, write_str, Keep, V};
use crate::norm::*;
use std::borrow::Cow;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// "Not mine": the reference transforms this event.
#[derive(Debug)]
pub struct Defer;

pub type R<T> = Result<T, Defer>;

#[derive(Debug, Clone)]
pub enum Step {
    Key(String),
    Index(usize),
    Filter(String, String),
}

#[derive(Debug)]
pub enum Alt {
    Const(V<'static>),
    Path(Vec<Step>),
}

/// One field source: alternatives tried in order (null and "" read as absent).
#[derive(Debug, Default)]
pub struct Field {
    pub alts: Vec<Alt>,
    /// Each alternative's text, as a rejection names the field.
    pub texts: Vec<String>,
}

/// ``str(value) == want`` of the reference's ``[key=value]`` filter; Defer when the
/// Python ``repr`` of a float or container would have to be reproduced.
fn py_str_eq(value: Option<&V>, want: &str) -> R<bool> {
    Ok(match value {
        None | Some(V::Null) => want == "None",
        Some(V::Str(s)) => s == want,
        Some(V::Bool(b)) => want == if *b { "True" } else { "False" },
        Some(V::Int(i)) => i.to_string() == want,
        Some(V::Float(_)) => {
            if !want.is_empty() && want.bytes().all(|b| b"0123456789.e+-infa".contains(&b)) {
                return Err(Defer);
            }
            false
        }
        Some(V::Skipped) => return Err(Defer),
        Some(V::Arr(_)) | Some(V::Obj(_)) => {
            if want.starts_with(['[', '{']) {
                return Err(Defer);
            }
            false
        }
    })
}

/// ``paths.lookup``: the value at the path (null and "" included), or None.
pub fn lookup<'a, 'd>(doc: &'a V<'d>, path: &[Step]) -> R<Option<&'a V<'d>>> {
    let mut node = doc;
    for step in path {
        if matches!(node, V::Skipped) {
            return Err(Defer);
        }
        node = match step {
            Step::Key(k) => match node.get(k) {
                Some(v) => v,
                None => return Ok(None),
            },
            Step::Index(i) => match node {
                V::Arr(items) if *i < items.len() => &items[*i],
                _ => return Ok(None),
            },
            Step::Filter(key, want) => {
                let V::Arr(items) = node else { return Ok(None) };
                let mut found = None;
                for element in items {
                    if matches!(element, V::Obj(_)) && py_str_eq(element.get(key), want)? {
                        found = Some(element);
                        break;
                    }
                }
                match found {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
        };
    }
    if matches!(node, V::Skipped) {
        return Err(Defer);
    }
    Ok(Some(node))
}

/// Adds what ``path`` reads to ``keep``; the node its value is read with.
pub fn keep_path<'k>(keep: &'k mut Keep, path: &[Step]) -> &'k mut Keep {
    let mut node = keep;
    for step in path {
        node = match step {
            Step::Key(k) => node.entry(k),
            Step::Index(_) => node,
            Step::Filter(k, _) => {
                node.entry(k).all = true;
                node
            }
        };
    }
    node
}

impl Core {
    /// Adds every path this core reads to ``keep``.
    pub fn keep(&self, keep: &mut Keep) {
        let fields = [
            &self.order_id,
            &self.conversion_id,
            &self.event_time,
            &self.event_type,
            &self.routing_key,
            &self.email,
            &self.phone,
            &self.twclid,
            &self.twclid_url,
            &self.ip,
            &self.user_agent,
            &self.value,
            &self.currency,
            &self.number_items,
            &self.description,
        ];
        for field in fields {
            for alt in &field.alts {
                if let Alt::Path(p) = alt {
                    keep_path(keep, p).all = true;
                }
            }
        }
        if let Some(items) = &self.items {
            let node = keep_path(keep, items);
            if !node.all {
                let item_fields = [
                    &self.item_id,
                    &self.item_group,
                    &self.item_name,
                    &self.item_price,
                    &self.item_category,
                    &self.item_quantity,
                ];
                for field in item_fields {
                    for alt in &field.alts {
                        if let Alt::Path(p) = alt {
                            keep_path(node, p).all = true;
                        }
                    }
                }
            }
        }
    }
}

impl Field {
    pub fn is_set(&self) -> bool {
        !self.alts.is_empty()
    }

    /// The reference's ``_Field.get``: the first present value that is not null or "",
    /// a constant as it is; None for MISSING.
    pub fn get<'a, 'd>(&'a self, doc: &'a V<'d>) -> R<Option<&'a V<'d>>> {
        for alt in &self.alts {
            match alt {
                Alt::Const(c) => return Ok(Some(c)),
                Alt::Path(p) => {
                    if let Some(v) = lookup(doc, p)? {
                        if !v.is_blank() {
                            return Ok(Some(v));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// ``_Field.where``: the text of the alternative that answered, else the first.
    pub fn where_(&self, doc: &V) -> R<Option<String>> {
        for (alt, text) in self.alts.iter().zip(&self.texts) {
            match alt {
                Alt::Const(_) => return Ok(Some(text.clone())),
                Alt::Path(p) => {
                    if lookup(doc, p)?.is_some_and(|v| !v.is_blank()) {
                        return Ok(Some(text.clone()));
                    }
                }
            }
        }
        Ok(self.texts.first().cloned())
    }
}

/// A route table: event type -> index into the engine's routes.
pub type Table = HashMap<String, usize>;

pub struct Core {
    pub order_id: Field,
    pub conversion_id: Field,
    pub event_time: Field,
    pub event_type: Field,
    pub routing_key: Field,
    pub email: Field,
    pub phone: Field,
    pub twclid: Field,
    pub twclid_url: Field,
    pub ip: Field,
    pub user_agent: Field,
    pub value: Field,
    pub currency: Field,
    pub number_items: Field,
    pub description: Field,
    pub items: Option<Vec<Step>>,
    pub item_id: Field,
    pub item_group: Field,
    pub item_name: Field,
    pub item_price: Field,
    pub item_category: Field,
    pub item_quantity: Field,
    pub tables: HashMap<String, Table>,
    pub default_table: Option<Table>,
    pub region: String,
    pub nanp: bool,
    pub currency_default: String,
    pub max_age_ms: i64,
    pub max_future_ms: i64,
    pub description_default: Option<String>,
    pub template: String,
    pub string_values: bool,
    pub send_ipv6: bool,
    pub ip_ua_ok: bool,
    pub use_event_cid: bool,
    pub strict: bool,
    pub pii: bool,
    /// ``preset = "debezium"``: the change is unwrapped first.
    pub debezium: Option<crate::debezium::DebeziumSettings>,
}

/// What the reference's Python helpers answer, for the inputs not decided natively.
pub trait Hooks {
    fn hash_email(&mut self, text: &str) -> R<Option<String>>;
    fn hash_phone(&mut self, text: &str, region: &str) -> R<Option<String>>;
    fn normalize_ip(&mut self, text: &str, send_ipv6: bool) -> R<Option<String>>;
    /// ``contains_contact`` (the caller caches clean texts).
    fn contains_contact(&mut self, text: &str) -> R<bool>;
    fn is_contact_id(&mut self, text: &str) -> R<bool>;
    fn hash_id(&mut self, text: &str, region: &str) -> R<String>;
    /// ``int(now() * 1000)`` of the transformer's clock, read when the reference reads it.
    fn now_ms(&mut self) -> R<i64>;
}

pub struct Shared<'h> {
    pub hooks: &'h mut dyn Hooks,
    pub clean: &'h mut HashSet<String>,
    pub iso4217: &'h HashSet<String>,
    pub aliases: &'h HashMap<String, String>,
    /// The event id of each route (the index a table answers).
    pub event_ids: &'h [String],
}

const MAX_CLEAN_CACHE: usize = 4096;
const MAX_CACHED_TEXT: usize = 512;
const MAX_ID_LENGTH: usize = 256;
const MAX_USER_AGENT_LENGTH: usize = 2048;
const MAX_IDENTIFIER_VALUES: usize = 10;
const MAX_ITEMS: usize = 1000;
const MAX_COUNT: i128 = 1_000_000_000;
const PHONE_CHARS: &[u8] = b"0123456789 +-().";

impl Shared<'_> {
    /// ``text in clean or _is_clean(text)``.
    fn clean(&mut self, text: &str) -> R<bool> {
        // contains_contact's own first answer: no "@" and no digit (\d) is clean
        if text.is_ascii() && !text.bytes().any(|b| b == b'@' || b.is_ascii_digit()) {
            return Ok(true);
        }
        if self.clean.contains(text) {
            return Ok(true);
        }
        if self.hooks.contains_contact(text)? {
            return Ok(false);
        }
        if text.len() <= MAX_CACHED_TEXT {
            if self.clean.len() >= MAX_CLEAN_CACHE {
                self.clean.clear();
            }
            self.clean.insert(text.to_owned());
        }
        Ok(true)
    }
}

/// ``"@" in text or not text.strip(_PHONE_CHARS)``: the ids the reference checks closer.
fn id_suspect(text: &str) -> bool {
    text.contains('@') || text.bytes().all(|b| PHONE_CHARS.contains(&b))
}

/// ``_as_id``.
fn as_id(value: &V) -> Option<String> {
    match value {
        V::Str(s) => {
            let t = py_strip(s);
            let n = py_len(t);
            (n > 0 && n <= MAX_ID_LENGTH).then(|| t.to_owned())
        }
        V::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// ``_strings``: a string or a short list of strings.
fn strings<'a>(value: &'a V) -> Option<Vec<&'a str>> {
    match value {
        V::Str(s) => Some(vec![s]),
        V::Arr(items) if items.len() <= MAX_IDENTIFIER_VALUES => {
            items.iter().map(|v| v.as_str()).collect()
        }
        _ => None,
    }
}

fn twclid_from_url(url: &str) -> R<Option<String>> {
    let b = url.as_bytes();
    let mut start = url.find("twclid=");
    while let Some(s) = start {
        if s == 0 || b"?&#;".contains(&b[s - 1]) {
            break;
        }
        start = url[s + 1..].find("twclid=").map(|p| p + s + 1);
    }
    let Some(s) = start else { return Ok(None) };
    let s = s + 7;
    let mut end = url.len();
    for sep in ['&', '#', ';'] {
        if let Some(p) = url[s..].find(sep) {
            end = end.min(p + s);
        }
    }
    let raw = &url[s..end];
    if raw.contains('%') {
        return Err(Defer); // percent-decoding is left to urllib's unquote
    }
    let v = py_strip(raw);
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// An amount as sent: a float (``value_format = "number"``) or its decimal text.
enum Amount {
    Num(f64),
    Text(String),
}

/// ``amount_number``.
fn amount_number(value: &V) -> Option<f64> {
    match value {
        V::Str(s) => {
            let t = py_strip(s);
            match_decimal(t).then(|| decimal_float(t))
        }
        V::Float(f) => (0.0..MAX_AMOUNT).contains(f).then_some(*f),
        V::Int(i) => (0..1_000_000_000_000_000i128).contains(i).then_some(*i as f64),
        _ => None,
    }
}

/// Python's ``repr(float)`` for floats whose repr is the shortest decimal without an
/// exponent (1e-4 <= |f| < 1e16, or 0); Defer otherwise.
fn float_repr(f: f64) -> R<String> {
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        return Err(Defer);
    }
    let mut buf = Vec::new();
    write_float(&mut buf, f);
    String::from_utf8(buf).map_err(|_| Defer)
}

/// ``parse_amount``: (float, decimal text).
fn parse_amount(value: &V) -> R<Option<(f64, String)>> {
    let Some(n) = amount_number(value) else { return Ok(None) };
    Ok(Some(match value {
        V::Str(s) => (n, py_strip(s).to_owned()),
        V::Float(_) => (n, float_repr(n)?),
        _ => (n, match value {
            V::Int(i) => i.to_string(),
            _ => return Err(Defer),
        }),
    }))
}

/// ``parse_count``.
fn parse_count(value: &V) -> Option<i64> {
    match value {
        V::Int(i) => (0 < *i && *i < MAX_COUNT).then_some(*i as i64),
        V::Float(f) => (f.is_finite() && f.fract() == 0.0 && 0.0 < *f && *f < 1e9).then_some(*f as i64),
        V::Str(s) => {
            let t = py_strip(s);
            if all_digits(t) && t.len() < 10 {
                let n: i64 = t.parse().ok()?;
                (n > 0).then_some(n)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Decimal text (digits, optionally a dot and digits) as (unscaled, scale).
fn decimal_parts(text: &str) -> R<(i128, u32)> {
    let (int, frac) = match text.find('.') {
        Some(d) => (&text[..d], &text[d + 1..]),
        None => (text, ""),
    };
    if int.is_empty() || !all_digits(int) || (!frac.is_empty() && !all_digits(frac)) || frac.len() > 12 || int.len() > 20 {
        return Err(Defer);
    }
    let digits = format!("{int}{frac}");
    Ok((digits.parse::<i128>().map_err(|_| Defer)?, frac.len() as u32))
}

/// ``sum_amounts``: the exact sum of price x quantity, as ``format(Decimal, "f")``.
fn sum_amounts(parts: &[(String, i64)]) -> R<Option<(f64, String)>> {
    let mut total: i128 = 0;
    let mut scale: u32 = 0;
    for (text, count) in parts {
        let (unscaled, s) = decimal_parts(text)?;
        let product = unscaled.checked_mul(*count as i128).ok_or(Defer)?;
        if s > scale {
            total = total.checked_mul(10i128.pow(s - scale)).ok_or(Defer)?;
            scale = s;
        }
        total = total
            .checked_add(product.checked_mul(10i128.pow(scale - s)).ok_or(Defer)?)
            .ok_or(Defer)?;
    }
    if total >= 1_000_000_000_000_000i128 * 10i128.pow(scale) {
        return Ok(None);
    }
    let digits = total.to_string();
    let text = if scale == 0 {
        digits
    } else {
        let width = scale as usize + 1;
        let padded = format!("{digits:0>width$}");
        let (i, f) = padded.split_at(padded.len() - scale as usize);
        format!("{i}.{f}")
    };
    Ok(Some((decimal_float(&text), text)))
}

#[derive(Default)]
struct Content<'a> {
    id: Option<Cow<'a, str>>,
    group_id: Option<Cow<'a, str>>,
    name: Option<&'a str>,
    price: Option<f64>,
    category: Option<&'a str>,
    num_items: Option<i64>,
    nonempty: bool,
}

/// A rejection the reference would answer (reason, field, message).
pub struct Reject {
    pub reason: &'static str,
    pub field: Option<String>,
    pub message: String,
}

/// A successful conversion (or, with ``rejection``, a rejection with the identifier
/// counters it increments), before it becomes Python objects.
pub struct Out {
    pub rejection: Option<Reject>,
    pub route: usize,
    pub conversion_id: String,
    pub payload: Vec<u8>,
    pub drops: Vec<(&'static str, &'static str)>,
    pub emails: u32,
    pub phones: u32,
    pub ips: u32,
    pub user_agents: u32,
}

const INVALID_TYPE: &str = "invalid_type";
const INVALID_VALUE: &str = "invalid_value";
const NOT_INTEGER: &str = "not_integer";
const UNKNOWN_CURRENCY: &str = "unknown_currency";
const UNUSABLE: &str = "unusable";
const PII: &str = "pii";
const TOO_MANY: &str = "too_many";

fn defer_if<T>(strict: bool, ok: T) -> R<T> {
    if strict {
        Err(Defer)
    } else {
        Ok(ok)
    }
}

impl Out {
    pub fn rejected(reason: &'static str, field: Option<String>, message: &str) -> Out {
        Out {
            rejection: Some(Reject { reason, field, message: message.to_owned() }),
            route: 0,
            conversion_id: String::new(),
            payload: Vec::new(),
            drops: Vec::new(),
            emails: 0,
            phones: 0,
            ips: 0,
            user_agents: 0,
        }
    }
}

impl Core {
    fn hashed_id(&self, sh: &mut Shared, text: String) -> R<String> {
        if self.pii && id_suspect(&text) && sh.hooks.is_contact_id(&text)? {
            sh.hooks.hash_id(&text, &self.region)
        } else {
            Ok(text)
        }
    }

    pub fn convert(&self, doc: &V, sh: &mut Shared) -> R<Out> {
        let strict = self.strict;
        let mut out = Out {
            rejection: None,
            route: 0,
            conversion_id: String::new(),
            payload: Vec::with_capacity(1024),
            drops: Vec::new(),
            emails: 0,
            phones: 0,
            ips: 0,
            user_agents: 0,
        };
        let reject = |mut out: Out, reason, field: Option<String>, message: &str| {
            out.rejection = Some(Reject { reason, field, message: message.to_owned() });
            Ok(out)
        };
        let Some(value) = self.order_id.get(doc)? else {
            let field = self.order_id.where_(doc)?;
            return reject(out, "schema_violation", field, "required order id is missing");
        };
        let Some(order_id) = as_id(value) else {
            let field = self.order_id.where_(doc)?;
            let message = "order id must be a non-empty string or integer";
            return reject(out, "schema_violation", field, message);
        };

        let Some(value) = self.event_time.get(doc)? else {
            let field = self.event_time.where_(doc)?;
            return reject(out, "schema_violation", field, "required event time is missing");
        };
        let moment = match value {
            V::Str(s) => parse_time_text(s),
            V::Int(i) => epoch_ms_int(*i),
            V::Float(f) => parse_time_float(*f),
            _ => None,
        };
        let Some(moment) = moment else {
            let (reason, message) = match time_rejection(value).ok_or(Defer)? {
                TimeReject::Invalid => (
                    "invalid_time",
                    "not an ISO 8601 time or epoch seconds/milliseconds/microseconds",
                ),
                TimeReject::Naive => ("naive_time", "time has no UTC offset"),
            };
            let field = self.event_time.where_(doc)?;
            return reject(out, reason, field, message);
        };
        let now_ms = sh.hooks.now_ms()?;
        if moment < now_ms - self.max_age_ms {
            let field = self.event_time.where_(doc)?;
            return reject(out, "time_too_old", field, "event is older than max_age_s");
        }
        if moment > now_ms + self.max_future_ms {
            let field = self.event_time.where_(doc)?;
            return reject(out, "time_in_future", field, "event is after now + max_future_s");
        }

        let event_type: &str = match self.event_type.get(doc)? {
            None => "purchase",
            Some(V::Str(s)) => sh.aliases.get(s.as_ref()).map_or(s.as_ref(), |a| a.as_str()),
            Some(_) => return Err(Defer),
        };

        // --- route
        let mut table = self.default_table.as_ref();
        if !self.tables.is_empty() {
            if let Some(v) = self.routing_key.get(doc)? {
                let key = as_id(v).ok_or(Defer)?;
                if let Some(t) = self.tables.get(&key) {
                    table = Some(t);
                }
            }
        }
        out.route = *table.ok_or(Defer)?.get(event_type).ok_or(Defer)?;

        // --- identifiers
        let mut idents: Vec<(&'static str, String)> = Vec::new();
        let mut twclid: Option<String> = None;
        if let Some(v) = self.twclid.get(doc)? {
            match v {
                V::Str(s) => {
                    let t = py_strip(s);
                    twclid = (!t.is_empty()).then(|| t.to_owned());
                }
                _ => {
                    defer_if(strict, ())?;
                    out.drops.push(("twclid", INVALID_TYPE));
                }
            }
        }
        if twclid.is_none() && self.twclid_url.is_set() {
            if let Some(V::Str(url)) = self.twclid_url.get(doc)? {
                if url.contains("twclid=") {
                    twclid = twclid_from_url(url)?;
                }
            }
        }
        if let Some(t) = twclid {
            if self.pii && id_suspect(&t) && sh.hooks.is_contact_id(&t)? {
                out.drops.push(("twclid", PII));
            } else {
                idents.push(("twclid", t));
            }
        }

        if let Some(v) = self.email.get(doc)? {
            let texts = match strings(v) {
                Some(t) => t,
                None => {
                    defer_if(strict, ())?;
                    out.emails += 1;
                    out.drops.push(("email", INVALID_TYPE));
                    Vec::new()
                }
            };
            let single = texts.len() == 1;
            for text in texts {
                let hashed = match hash_email_fast(text) {
                    Some(h) => h,
                    None => sh.hooks.hash_email(text)?,
                };
                match hashed {
                    None => {
                        out.emails += 1;
                        out.drops.push(("email", UNUSABLE));
                    }
                    Some(h) => {
                        if single || !idents.iter().any(|(k, x)| *k == "hashed_email" && *x == h) {
                            idents.push(("hashed_email", h));
                        }
                    }
                }
            }
        }

        if let Some(v) = self.phone.get(doc)? {
            let texts = match strings(v) {
                Some(t) => t,
                None => {
                    defer_if(strict, ())?;
                    out.phones += 1;
                    out.drops.push(("phone", INVALID_TYPE));
                    Vec::new()
                }
            };
            let single = texts.len() == 1;
            for text in texts {
                let hashed = match hash_phone_fast(text, self.nanp) {
                    Some(h) => h,
                    None => sh.hooks.hash_phone(text, &self.region)?,
                };
                match hashed {
                    None => {
                        out.phones += 1;
                        out.drops.push(("phone", UNUSABLE));
                    }
                    Some(h) => {
                        if single
                            || !idents.iter().any(|(k, x)| *k == "hashed_phone_number" && *x == h)
                        {
                            idents.push(("hashed_phone_number", h));
                        }
                    }
                }
            }
        }

        let strong = !idents.is_empty();
        let mut ip_address: Option<Cow<str>> = None;
        let mut agent_out: Option<&str> = None;
        if let Some(v) = self.ip.get(doc)? {
            match v {
                V::Str(s) => {
                    let address = match normalize_ip_fast(s) {
                        Some(a) => a.map(Cow::Borrowed),
                        None => sh.hooks.normalize_ip(s, self.send_ipv6)?.map(Cow::Owned),
                    };
                    match address {
                        None => {
                            out.ips += 1;
                            out.drops.push(("ip", UNUSABLE));
                        }
                        Some(a) => ip_address = Some(a),
                    }
                }
                _ => {
                    defer_if(strict, ())?;
                    out.ips += 1;
                    out.drops.push(("ip", INVALID_TYPE));
                }
            }
        }
        if let Some(v) = self.user_agent.get(doc)? {
            match v {
                V::Str(s) => {
                    let agent = py_strip(s);
                    if agent.is_empty() || py_len(agent) > MAX_USER_AGENT_LENGTH {
                        out.user_agents += 1;
                        out.drops.push(("user_agent", UNUSABLE));
                    } else if self.pii && !sh.clean(agent)? {
                        out.drops.push(("user_agent", PII));
                    } else {
                        agent_out = Some(agent);
                    }
                }
                _ => {
                    defer_if(strict, ())?;
                    out.user_agents += 1;
                    out.drops.push(("user_agent", INVALID_TYPE));
                }
            }
        }
                if !(strong || ip_address.is_some() && agent_out.is_some() && self.ip_ua_ok) {
            // every drop so far is an identifier's, named as the reference names them
            let names: Vec<&str> = out.drops.iter().map(|(name, _)| *name).collect();
            let detail = if names.is_empty() {
                String::new()
            } else {
                format!(" ({} dropped as unusable)", names.join(", "))
            };
            let message = format!("no usable twclid, email or phone{detail}");
            return reject(out, "no_identifier", None, &message);
        }

        // --- currency
        let currency: Option<Cow<str>> = match self.currency.get(doc)? {
            None => Some(Cow::Borrowed(self.currency_default.as_str())),
            Some(V::Str(s)) => {
                if sh.iso4217.contains(s.as_ref()) {
                    Some(Cow::Borrowed(s.as_ref()))
                } else {
                    if !s.is_ascii() {
                        return Err(Defer); // str.upper() of non-ASCII text
                    }
                    let up = py_strip(s).to_ascii_uppercase();
                    if sh.iso4217.contains(&up) {
                        Some(Cow::Owned(up))
                    } else {
                        defer_if(strict, ())?;
                        out.drops.push(("currency", UNKNOWN_CURRENCY));
                        None
                    }
                }
            }
            Some(_) => {
                defer_if(strict, ())?;
                out.drops.push(("currency", INVALID_TYPE));
                None
            }
        };

        // --- line items
        let mut items: Option<&Vec<V>> = None;
        let mut contents: Vec<Content> = Vec::new();
        let mut quantities: i64 = 0;
        if let Some(path) = &self.items {
            match lookup(doc, path)? {
                None | Some(V::Null) => {}
                Some(V::Arr(list)) if list.len() <= MAX_ITEMS => {
                    items = Some(list);
                    quantities = self.contents(list, &mut contents, &mut out.drops, sh)?;
                }
                Some(other) => {
                    defer_if(strict, ())?;
                    let reason = if matches!(other, V::Arr(_)) { TOO_MANY } else { INVALID_TYPE };
                    out.drops.push(("items", reason));
                }
            }
        }

        // --- value
        let mut amount: Option<Amount> = None;
        if let Some(v) = self.value.get(doc)? {
            amount = if self.string_values {
                parse_amount(v)?.map(|(_, t)| Amount::Text(t))
            } else {
                match v {
                    V::Str(s) if match_decimal(s) => Some(Amount::Num(decimal_float(s))),
                    _ => amount_number(v).map(Amount::Num),
                }
            };
            if amount.is_none() {
                defer_if(strict, ())?;
                out.drops.push(("value", INVALID_VALUE));
            }
        } else if let Some(list) = items {
            if !list.is_empty() && quantities >= 0 {
                if let Some((f, t)) = self.items_total(list)? {
                    amount = Some(if self.string_values { Amount::Text(t) } else { Amount::Num(f) });
                }
            }
        }
        if currency.is_none() {
            if amount.is_some() {
                out.drops.push(("value", UNKNOWN_CURRENCY));
                amount = None;
            }
            for content in contents.iter_mut() {
                if content.price.take().is_some() {
                    out.drops.push(("item.price", UNKNOWN_CURRENCY));
                }
            }
        }

        // --- number of items
        let mut number_items: Option<i64> = None;
        if let Some(v) = self.number_items.get(doc)? {
            number_items = parse_count(v);
            if number_items.is_none() {
                defer_if(strict, ())?;
                out.drops.push(("number_items", INVALID_VALUE));
            }
        } else if quantities > 0 {
            number_items = Some(quantities);
        }

        // --- conversion id
        let mut conversion_id: Option<String> = None;
        if self.use_event_cid {
            if let Some(v) = self.conversion_id.get(doc)? {
                conversion_id = Some(as_id(v).ok_or(Defer)?);
            }
        }
        let conversion_id = match conversion_id {
            Some(c) => c,
            None if self.template == "{order_id}" => order_id,
            None => {
                let key = match self.routing_key.get(doc)? {
                    Some(v) => as_id(v).unwrap_or_default(),
                    None => String::new(),
                };
                let cid = self
                    .template
                    .replace("{order_id}", &order_id)
                    .replace("{event_type}", event_type)
                    .replace("{routing_key}", &key);
                if py_len(&cid) > MAX_ID_LENGTH {
                    return Err(Defer);
                }
                cid
            }
        };
        let conversion_id = if self.pii && !all_digits(&conversion_id) {
            self.hashed_id(sh, conversion_id)?
        } else {
            conversion_id
        };

        // --- description
        let mut description: Option<&str> = self.description_default.as_deref();
        if let Some(v) = self.description.get(doc)? {
            match v {
                V::Str(s) => {
                    if self.pii && !sh.clean(s)? {
                        out.drops.push(("description", PII));
                    } else {
                        description = Some(s);
                    }
                }
                _ => {
                    defer_if(strict, ())?;
                    out.drops.push(("description", INVALID_TYPE));
                }
            }
        }

        // --- payload, in the reference's key order
        let b = &mut out.payload;
        b.extend_from_slice(b"{\"conversion_time\":");
        write_time_ms(b, moment);
        b.extend_from_slice(b",\"event_id\":");
        write_plain(b, &sh.event_ids[out.route]); // a tag: [0-9a-z-]
        b.extend_from_slice(b",\"identifiers\":[");
        let mut first = true;
        for (k, v) in &idents {
            if !first {
                b.push(b',');
            }
            first = false;
            b.extend_from_slice(b"{\"");
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(b"\":");
            if *k == "twclid" {
                write_str(b, v);
            } else {
                write_plain(b, v); // a hex digest
            }
            b.push(b'}');
        }
        if ip_address.is_some() || agent_out.is_some() {
            if !first {
                b.push(b',');
            }
            b.push(b'{');
            if let Some(ip) = &ip_address {
                b.extend_from_slice(b"\"ip_address\":");
                write_str(b, ip);
            }
            if let Some(ua) = &agent_out {
                if ip_address.is_some() {
                    b.push(b',');
                }
                b.extend_from_slice(b"\"user_agent\":");
                write_str(b, ua);
            }
            b.push(b'}');
        }
        b.push(b']');
        match &amount {
            Some(Amount::Num(f)) => {
                b.extend_from_slice(b",\"value\":");
                write_float(b, *f);
            }
            Some(Amount::Text(t)) => {
                b.extend_from_slice(b",\"value\":");
                write_str(b, t);
            }
            None => {}
        }
        if let Some(c) = &currency {
            b.extend_from_slice(b",\"price_currency\":");
            write_str(b, c);
        }
        if let Some(n) = number_items {
            b.extend_from_slice(b",\"number_items\":");
            b.extend_from_slice(n.to_string().as_bytes());
        }
        b.extend_from_slice(b",\"conversion_id\":");
        write_str(b, &conversion_id);
        if let Some(d) = description {
            if !d.is_empty() {
                b.extend_from_slice(b",\"description\":");
                write_str(b, d);
            }
        }
        if !contents.is_empty() {
            b.extend_from_slice(b",\"contents\":[");
            for (i, c) in contents.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.push(b'{');
                let mut sep = false;
                let mut key = |b: &mut Vec<u8>, name: &[u8]| {
                    if sep {
                        b.push(b',');
                    }
                    sep = true;
                    b.extend_from_slice(name);
                };
                if let Some(v) = &c.id {
                    key(b, b"\"content_id\":");
                    write_str(b, v);
                }
                if let Some(v) = &c.group_id {
                    key(b, b"\"content_group_id\":");
                    write_str(b, v);
                }
                if let Some(v) = &c.name {
                    key(b, b"\"content_name\":");
                    write_str(b, v);
                }
                if let Some(v) = c.price {
                    key(b, b"\"content_price\":");
                    write_float(b, v);
                }
                if let Some(v) = &c.category {
                    key(b, b"\"content_type\":");
                    write_str(b, v);
                }
                if let Some(v) = c.num_items {
                    key(b, b"\"num_items\":");
                    b.extend_from_slice(v.to_string().as_bytes());
                }
                b.push(b'}');
            }
            b.push(b']');
        }
        b.push(b'}');
        out.conversion_id = conversion_id;
        Ok(out)
    }

    /// ``_contents``: the sum of quantities, -1 when one was left out.
    fn contents<'a>(
        &'a self,
        items: &'a [V],
        contents: &mut Vec<Content<'a>>,
        drops: &mut Vec<(&'static str, &'static str)>,
        sh: &mut Shared,
    ) -> R<i64> {
        let strict = self.strict;
        let pii = self.pii;
        let mut quantities: i64 = 0;
        let mut exact = true;
        for element in items {
            if !matches!(element, V::Obj(_)) {
                defer_if(strict, ())?;
                drops.push(("items", INVALID_TYPE));
                exact = false;
                continue;
            }
            let mut c = Content::default();

            match self.item_id.get(element)? {
                None => {}
                Some(V::Str(s)) => {
                    let text = py_strip(s);
                    let n = py_len(text);
                    if !(n > 0 && n <= MAX_ID_LENGTH) {
                        defer_if(strict, ())?;
                        drops.push(("item.id", INVALID_VALUE));
                    } else {
                        let mut text = Cow::Borrowed(text);
                        if pii && id_suspect(&text) && sh.hooks.is_contact_id(&text)? {
                            text = Cow::Owned(sh.hooks.hash_id(&text, &self.region)?);
                        }
                        c.id = Some(text);
                    }
                }
                Some(V::Int(i)) => c.id = Some(Cow::Owned(i.to_string())),
                Some(_) => {
                    defer_if(strict, ())?;
                    drops.push(("item.id", INVALID_TYPE));
                }
            }

            match self.item_group.get(element)? {
                None => {}
                Some(V::Str(s)) => {
                    let text = py_strip(s);
                    if all_digits(text) && text.len() <= MAX_ID_LENGTH {
                        c.group_id = Some(Cow::Borrowed(text));
                    } else {
                        defer_if(strict, ())?;
                        drops.push(("item.group_id", NOT_INTEGER));
                    }
                }
                Some(V::Int(i)) if *i >= 0 => c.group_id = Some(Cow::Owned(i.to_string())),
                Some(_) => {
                    defer_if(strict, ())?;
                    drops.push(("item.group_id", NOT_INTEGER));
                }
            }

            match self.item_name.get(element)? {
                None => {}
                Some(V::Str(s)) => {
                    if pii && !sh.clean(s)? {
                        drops.push(("item.name", PII));
                    } else {
                        c.name = Some(s);
                    }
                }
                Some(_) => {
                    defer_if(strict, ())?;
                    drops.push(("item.name", INVALID_TYPE));
                }
            }

            match self.item_price.get(element)? {
                None => {}
                Some(v) => {
                    let price = match v {
                        V::Str(s) if match_decimal(s) => Some(decimal_float(s)),
                        _ => amount_number(v),
                    };
                    match price {
                        Some(p) => c.price = Some(p),
                        None => {
                            defer_if(strict, ())?;
                            drops.push(("item.price", INVALID_VALUE));
                        }
                    }
                }
            }

            match self.item_category.get(element)? {
                None => {}
                Some(V::Str(s)) => {
                    if pii && !sh.clean(s)? {
                        drops.push(("item.category", PII));
                    } else {
                        c.category = Some(s);
                    }
                }
                Some(_) => {
                    defer_if(strict, ())?;
                    drops.push(("item.category", INVALID_TYPE));
                }
            }

            match self.item_quantity.get(element)? {
                None => quantities += 1,
                Some(v) => match parse_count(v) {
                    Some(n) => {
                        c.num_items = Some(n);
                        quantities += n;
                    }
                    None => {
                        defer_if(strict, ())?;
                        drops.push(("item.quantity", INVALID_VALUE));
                        exact = false;
                    }
                },
            }
            c.nonempty = c.id.is_some()
                || c.group_id.is_some()
                || c.name.is_some()
                || c.price.is_some()
                || c.category.is_some()
                || c.num_items.is_some();
            if c.nonempty {
                contents.push(c);
            }
        }
        Ok(if exact { quantities } else { -1 })
    }

    /// ``_items_total``.
    fn items_total(&self, items: &[V]) -> R<Option<(f64, String)>> {
        let mut parts: Vec<(String, i64)> = Vec::with_capacity(items.len());
        for element in items {
            let price = match self.item_price.get(element)? {
                Some(v) => parse_amount(v)?,
                None => None,
            };
            let Some((_, text)) = price else { return Ok(None) };
            let count = match self.item_quantity.get(element)? {
                None => 1,
                Some(v) => match parse_count(v) {
                    Some(n) => n,
                    None => return Ok(None),
                },
            };
            parts.push((text, count));
        }
        sum_amounts(&parts)
    }
}
