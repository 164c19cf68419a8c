//! xconv's native transform: ``Engine(raw)`` answers what
//! ``consumer.transform.Transformer.transform(raw)`` answers, byte for byte, for the
//! events it handles completely, and hands every other event to the Python reference
//! (``reference(raw)``) untouched. See docs/transform.md, "Native fast path".

mod core;
mod debezium;
mod json;
mod norm;

use crate::core::{Alt, Core, Defer, Field, Hooks, Shared, Step, Table, R};
use crate::json::V;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

struct PyHooks<'a, 'py> {
    py: Python<'py>,
    e: &'a Refs,
    phone_calls: u64,
}

/// The Python callables the engine calls back (the reference's own helpers).
struct Refs {
    hash_email: Py<PyAny>,
    hash_phone: Py<PyAny>,
    normalize_ip: Py<PyAny>,
    contains_contact: Py<PyAny>,
    is_contact_id: Py<PyAny>,
    hash_id: Py<PyAny>,
    now: Py<PyAny>,
}

fn opt_string(v: PyResult<Bound<'_, PyAny>>) -> R<Option<String>> {
    let v = v.map_err(|_| Defer)?;
    if v.is_none() {
        Ok(None)
    } else {
        v.extract::<String>().map(Some).map_err(|_| Defer)
    }
}

impl Hooks for PyHooks<'_, '_> {
    fn hash_email(&mut self, text: &str) -> R<Option<String>> {
        opt_string(self.e.hash_email.bind(self.py).call1((text,)))
    }
    fn hash_phone(&mut self, text: &str, region: &str) -> R<Option<String>> {
        self.phone_calls += 1;
        opt_string(self.e.hash_phone.bind(self.py).call1((text, region)))
    }
    fn normalize_ip(&mut self, text: &str, send_ipv6: bool) -> R<Option<String>> {
        opt_string(self.e.normalize_ip.bind(self.py).call1((text, send_ipv6)))
    }
    fn contains_contact(&mut self, text: &str) -> R<bool> {
        let v = self.e.contains_contact.bind(self.py).call1((text,)).map_err(|_| Defer)?;
        v.is_truthy().map_err(|_| Defer)
    }
    fn is_contact_id(&mut self, text: &str) -> R<bool> {
        let v = self.e.is_contact_id.bind(self.py).call1((text,)).map_err(|_| Defer)?;
        v.is_truthy().map_err(|_| Defer)
    }
    fn hash_id(&mut self, text: &str, region: &str) -> R<String> {
        let v = self.e.hash_id.bind(self.py).call1((text, region)).map_err(|_| Defer)?;
        v.extract::<String>().map_err(|_| Defer)
    }
    fn now_ms(&mut self) -> R<i64> {
        let v = self.e.now.bind(self.py).call0().map_err(|_| Defer)?;
        let secs: f64 = v.extract().map_err(|_| Defer)?;
        let ms = secs * 1000.0;
        if !ms.is_finite() {
            return Err(Defer);
        }
        Ok(ms as i64)
    }
}

/// The native transform of one ``Transformer`` (one preset, or ``auto``'s detection and
/// its presets). ``engine(raw)`` returns the result; ``stats()`` counts what took which path.
#[pyclass(module = "xconv_native", name = "Engine")]
struct Engine {
    /// One core, or (``auto``) one per detected preset in AUTO_PRESETS order (None: left
    /// to the reference, e.g. Debezium).
    cores: Vec<Option<Core>>,
    /// What of a message the cores (and ``auto``'s shape checks) read.
    keep: json::Keep,
    auto: bool,
    routes: Vec<Py<PyAny>>,
    event_ids: Vec<String>,
    reference: Py<PyAny>,
    counts: Py<PyAny>,
    conversion_type: Py<PyAny>,
    rejection_type: Py<PyAny>,
    refs: Refs,
    iso4217: HashSet<String>,
    aliases: HashMap<String, String>,
    clean: HashSet<String>,
    native: u64,
    deferred: u64,
    phone_calls: u64,
}

fn steps(list: &Bound<'_, PyAny>) -> PyResult<Vec<Step>> {
    let mut out = Vec::new();
    for step in list.try_iter()? {
        let step = step?;
        if let Ok(s) = step.extract::<String>() {
            out.push(Step::Key(s));
        } else if let Ok(i) = step.extract::<usize>() {
            out.push(Step::Index(i));
        } else {
            let (k, w): (String, String) = step.extract()?;
            out.push(Step::Filter(k, w));
        }
    }
    Ok(out)
}

fn field(spec: &Bound<'_, PyDict>, name: &str) -> PyResult<Field> {
    let Some(alts) = spec.get_item(name)? else {
        return Err(PyValueError::new_err(format!("spec has no field {name}")));
    };
    let mut out = Vec::new();
    let mut texts = Vec::new();
    for alt in alts.try_iter()? {
        let alt = alt?;
        let (kind, value, text): (String, Bound<'_, PyAny>, String) = alt.extract()?;
        texts.push(text);
        out.push(if kind == "const" {
            Alt::Const(V::Str(value.extract::<String>()?.into()))
        } else {
            Alt::Path(steps(&value)?)
        });
    }
    Ok(Field { alts: out, texts })
}

fn get<'py, T: for<'a> FromPyObjectOwned<'py>>(spec: &Bound<'py, PyDict>, name: &str) -> PyResult<T> {
    match spec.get_item(name)? {
        Some(v) => v.extract::<T>().map_err(Into::into),
        None => Err(PyValueError::new_err(format!("spec has no key {name}"))),
    }
}

use pyo3::conversion::FromPyObjectOwned;

fn core_from(spec: &Bound<'_, PyDict>) -> PyResult<Core> {
    let items = match spec.get_item("items")? {
        Some(v) if !v.is_none() => Some(steps(&v)?),
        _ => None,
    };
    let tables: HashMap<String, Table> = get(spec, "tables")?;
    let default_table: Option<Table> = get(spec, "default_table")?;
    let region: String = get(spec, "region")?;
    Ok(Core {
        order_id: field(spec, "order_id")?,
        conversion_id: field(spec, "conversion_id")?,
        event_time: field(spec, "event_time")?,
        event_type: field(spec, "event_type")?,
        routing_key: field(spec, "routing_key")?,
        email: field(spec, "email")?,
        phone: field(spec, "phone")?,
        twclid: field(spec, "twclid")?,
        twclid_url: field(spec, "twclid_url")?,
        ip: field(spec, "ip")?,
        user_agent: field(spec, "user_agent")?,
        value: field(spec, "value")?,
        currency: field(spec, "currency")?,
        number_items: field(spec, "number_items")?,
        description: field(spec, "description")?,
        items,
        item_id: field(spec, "item_id")?,
        item_group: field(spec, "item_group_id")?,
        item_name: field(spec, "item_name")?,
        item_price: field(spec, "item_price")?,
        item_category: field(spec, "item_category")?,
        item_quantity: field(spec, "item_quantity")?,
        tables,
        default_table,
        nanp: norm::NANP_REGIONS.contains(&region.as_str()),
        region,
        currency_default: get(spec, "default_currency")?,
        max_age_ms: get(spec, "max_age_ms")?,
        max_future_ms: get(spec, "max_future_ms")?,
        description_default: get(spec, "description_default")?,
        template: get(spec, "template")?,
        string_values: get(spec, "string_values")?,
        send_ipv6: get(spec, "send_ipv6")?,
        ip_ua_ok: get(spec, "ip_ua_ok")?,
        use_event_cid: get(spec, "use_event_cid")?,
        strict: get(spec, "strict")?,
        pii: get(spec, "pii")?,
        debezium: match spec.get_item("debezium")? {
            Some(d) if !d.is_none() => {
                let (updates, scales): (bool, Vec<(String, i64)>) = d.extract()?;
                Some(debezium::DebeziumSettings { updates, decimal_scales: scales })
            }
            _ => None,
        },
    })
}

/// ``detect_format``: the index in AUTO_PRESETS of the one shape ``doc`` has.
fn detect(doc: &V) -> Option<usize> {
    let canonical = doc.has("order_id") && doc.has("event_time") && doc.has("user");
    let segment = doc.has("event")
        && matches!(doc.get("properties"), Some(V::Obj(_)))
        && match doc.get("type") {
            None => true,
            Some(V::Str(s)) => s == "track",
            Some(_) => false,
        };
    let ga4 = match doc.get("events") {
        Some(V::Arr(events)) => events.iter().any(|e| {
            matches!(e, V::Obj(_)) && matches!(e.get("name"), Some(V::Str(s)) if s == "purchase")
        }),
        _ => false,
    };
    let shopify = doc.has("line_items")
        && (doc.has("total_price")
            || matches!(doc.get("admin_graphql_api_id"),
                Some(V::Str(s)) if s.starts_with("gid://shopify/Order/")));
    let envelope = |b: &V| b.has("op") && (b.has("after") || b.has("before"));
    let debezium = (doc.has("schema") && doc.has("payload"))
        || (doc.has("source") && envelope(doc))
        || doc.has("__op")
        || doc.has("__deleted");
    let found = [canonical, segment, ga4, shopify, debezium];
    if found.iter().filter(|&&f| f).count() != 1 {
        return None;
    }
    found.iter().position(|&f| f)
}

impl Engine {
    fn run(&mut self, py: Python<'_>, data: &[u8]) -> R<Py<PyAny>> {
        let doc = match json::parse_or_truncated(data, &self.keep) {
            Ok(doc) => doc,
            Err(true) => {
                let out = core::Out::rejected("invalid_json", None, "message is not valid UTF-8 JSON");
                return self.build(py, out).map_err(|_| Defer);
            }
            Err(false) => return Err(Defer),
        };
        if !matches!(doc, V::Obj(_)) {
            return Err(Defer);
        }
        let index = if self.auto { detect(&doc).ok_or(Defer)? } else { 0 };
        let core = self.cores.get(index).and_then(Option::as_ref).ok_or(Defer)?;
        let doc = match &core.debezium {
            Some(settings) => debezium::unwrap_change(doc, settings)?,
            None => doc,
        };
        let mut hooks = PyHooks { py, e: &self.refs, phone_calls: 0 };
        let out = {
            let mut shared = Shared {
                hooks: &mut hooks,
                clean: &mut self.clean,
                iso4217: &self.iso4217,
                aliases: &self.aliases,
                event_ids: &self.event_ids,
            };
            core.convert(&doc, &mut shared)
        };
        self.phone_calls += hooks.phone_calls;
        let out = out?;
        self.build(py, out).map_err(|e| { if std::env::var_os("XCONV_NATIVE_DEBUG").is_some() { eprintln!("build: {e}"); } Defer })
    }

    fn build(&self, py: Python<'_>, mut out: core::Out) -> PyResult<Py<PyAny>> {
        if let Some(rejection) = out.rejection.take() {
            let obj = alloc(py, &self.rejection_type)?;
            set_slot(&obj, intern!(py, "reason"), PyString::new(py, rejection.reason).as_any())?;
            let field = match &rejection.field {
                Some(f) => PyString::new(py, f).into_any(),
                None => py.None().into_bound(py),
            };
            set_slot(&obj, intern!(py, "field"), &field)?;
            set_slot(&obj, intern!(py, "message"), PyString::new(py, &rejection.message).as_any())?;
            self.count_identifiers(py, &out)?;
            return Ok(obj.unbind());
        }
        let conversion = alloc(py, &self.conversion_type)?;
        let dropped = if out.drops.is_empty() {
            PyTuple::empty(py)
        } else {
            PyTuple::new(
                py,
                out.drops.iter().map(|(f, r)| PyTuple::new(py, [*f, *r]).expect("a pair")),
            )?
        };
        set_slot(&conversion, intern!(py, "route"), self.routes[out.route].bind(py))?;
        let cid = PyString::new(py, &out.conversion_id);
        set_slot(&conversion, intern!(py, "conversion_id"), cid.as_any())?;
        let payload = PyBytes::new(py, &out.payload);
        set_slot(&conversion, intern!(py, "payload"), payload.as_any())?;
        set_slot(&conversion, intern!(py, "dropped"), dropped.as_any())?;
        if !out.drops.is_empty() || out.emails + out.phones + out.ips + out.user_agents > 0 {
            self.count_identifiers(py, &out)?;
            let counts = self.counts.bind(py);
            let fields = counts.getattr(intern!(py, "fields"))?;
            let fields = fields.cast::<PyDict>()?;
            for drop in dropped.iter() {
                let now: u64 = match fields.get_item(&drop)? {
                    Some(v) => v.extract()?,
                    None => 0,
                };
                fields.set_item(drop, now + 1)?;
            }
        }
        Ok(conversion.unbind())
    }
}

impl Engine {
    /// The identifier counters (``dropped_emails`` ...), as the reference increments
    /// them: also for an event it then rejects.
    fn count_identifiers(&self, py: Python<'_>, out: &core::Out) -> PyResult<()> {
        let counts = self.counts.bind(py);
        for (name, n) in [
            ("emails", out.emails),
            ("phones", out.phones),
            ("ips", out.ips),
            ("user_agents", out.user_agents),
        ] {
            if n > 0 {
                let now: u64 = counts.getattr(name)?.extract()?;
                counts.setattr(name, now + n as u64)?;
            }
        }
        Ok(())
    }
}

/// ``object.__new__(cls)`` of a slots dataclass (what the reference's ``_conversion`` does).
fn alloc<'py>(py: Python<'py>, cls: &Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
    unsafe {
        let ptr = pyo3::ffi::PyType_GenericAlloc(cls.as_ptr().cast::<pyo3::ffi::PyTypeObject>(), 0);
        Bound::from_owned_ptr_or_err(py, ptr)
    }
}

/// ``object.__setattr__``: the frozen dataclass's own ``__setattr__`` refuses.
fn set_slot(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let rc = unsafe { pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) };
    if rc < 0 {
        Err(PyErr::fetch(obj.py()))
    } else {
        Ok(())
    }
}

#[pymethods]
impl Engine {
    /// ``Engine(cores, auto, routes, event_ids, reference, counts, conversion_type, hooks,
    /// iso4217, aliases)``: built by ``consumer.transform.native`` from a Transformer.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        cores: &Bound<'_, PyList>,
        auto: bool,
        routes: Vec<Py<PyAny>>,
        event_ids: Vec<String>,
        reference: Py<PyAny>,
        counts: Py<PyAny>,
        conversion_type: Py<PyAny>,
        rejection_type: Py<PyAny>,
        hooks: &Bound<'_, PyDict>,
        iso4217: HashSet<String>,
        aliases: HashMap<String, String>,
    ) -> PyResult<Self> {
        let mut parsed = Vec::new();
        for spec in cores.iter() {
            parsed.push(if spec.is_none() { None } else { Some(core_from(spec.cast::<PyDict>()?)?) });
        }
        let hook = |name: &str| -> PyResult<Py<PyAny>> {
            hooks
                .get_item(name)?
                .map(Bound::unbind)
                .ok_or_else(|| PyValueError::new_err(format!("hooks has no {name}")))
        };
        let mut keep = json::Keep::default();
        for core in parsed.iter().flatten() {
            core.keep(&mut keep);
            if core.debezium.is_some() {
                // the envelope, the schema and the flattened row's markers, whole
                for key in [
                    "schema", "payload", "before", "after", "source", "op", "ts_ms", "__op",
                    "__deleted", "__source_ts_ms",
                ] {
                    keep.entry(key).all = true;
                }
            }
        }
        if auto {
            // detect(): presence of these keys, the values of the others
            for key in [
                "order_id", "event_time", "user", "event", "line_items", "total_price", "schema",
                "payload", "source", "op", "after", "before", "__op", "__deleted",
            ] {
                keep.entry(key).presence = true;
            }
            for key in ["type", "admin_graphql_api_id", "properties"] {
                let node = keep.entry(key);
                if node.keys.is_empty() {
                    node.all = true;
                }
            }
            let events = keep.entry("events");
            if !events.all {
                events.entry("name").all = true;
            }
        }
        Ok(Engine {
            cores: parsed,
            keep,
            auto,
            routes,
            event_ids,
            reference,
            counts,
            conversion_type,
            rejection_type,
            refs: Refs {
                hash_email: hook("hash_email")?,
                hash_phone: hook("hash_phone")?,
                normalize_ip: hook("normalize_ip")?,
                contains_contact: hook("contains_contact")?,
                is_contact_id: hook("is_contact_id")?,
                hash_id: hook("hash_id")?,
                now: hook("now")?,
            },
            iso4217,
            aliases,
            clean: HashSet::default(),
            native: 0,
            deferred: 0,
            phone_calls: 0,
        })
    }

    fn __call__(slf: &Bound<'_, Self>, raw: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let done = match raw.cast::<PyBytes>() {
            Ok(bytes) if !bytes.as_bytes().is_empty() => {
                let mut this = slf.borrow_mut();
                let data = bytes.as_bytes();
                match catch_unwind(AssertUnwindSafe(|| this.run(py, data))) {
                    Ok(Ok(result)) => {
                        this.native += 1;
                        Some(result)
                    }
                    _ => {
                        this.deferred += 1;
                        None
                    }
                }
            }
            _ => {
                slf.borrow_mut().deferred += 1;
                None
            }
        };
        match done {
            Some(result) => Ok(result),
            None => {
                let reference = slf.borrow().reference.clone_ref(py);
                Ok(reference.bind(py).call1((raw,))?.unbind())
            }
        }
    }

    /// Benchmark helpers (bench/transform_bench.py --breakdown): the JSON parse alone,
    /// the parse and the conversion without building Python objects, and nothing.
    fn _stage(&mut self, py: Python<'_>, raw: &Bound<'_, PyBytes>, stage: u8) -> bool {
        let data = raw.as_bytes();
        match stage {
            0 => true,
            1 => json::parse(data).is_some(),
            _ => {
                let Some(doc) = json::parse(data) else { return false };
                let core = match self.cores.first().and_then(Option::as_ref) {
                    Some(c) => c,
                    None => return false,
                };
                let mut hooks = PyHooks { py, e: &self.refs, phone_calls: 0 };
                let mut shared = Shared {
                    hooks: &mut hooks,
                    clean: &mut self.clean,
                    iso4217: &self.iso4217,
                    aliases: &self.aliases,
                    event_ids: &self.event_ids,
                };
                core.convert(&doc, &mut shared).is_ok()
            }
        }
    }

    /// ``{"native": n, "deferred": n, "phone_callbacks": n}`` since start.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("native", self.native)?;
        d.set_item("deferred", self.deferred)?;
        d.set_item("phone_callbacks", self.phone_calls)?;
        Ok(d)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.reference)?;
        visit.call(&self.counts)?;
        visit.call(&self.refs.hash_id)?;
        visit.call(&self.refs.now)?;
        for r in &self.routes {
            visit.call(r)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        // The reference (a bound method of the owning Transformer) closes the cycle.
        let py_none = Python::attach(|py| py.None());
        self.reference = py_none;
    }
}

#[pymodule]
fn xconv_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add("ABI", 1)?;
    Ok(())
}
