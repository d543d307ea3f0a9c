//! Twilio's published OpenAPI document (`twilio_api_v2010.json`), used to hold
//! every request the simulator receives to what real Twilio documents: the
//! operation must exist, path parameters must match their SID patterns, and
//! every query or form parameter must be a documented name with a value of the
//! documented type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;

/// Where the spec is read from when neither the config nor `TWILIO_OPENAPI_SPEC` say.
pub fn default_spec_path() -> PathBuf {
    if let Ok(p) = std::env::var("TWILIO_OPENAPI_SPEC")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    PathBuf::from(home).join(
        ".cache/contact-center/npm/node_modules/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read OpenAPI spec {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("OpenAPI spec {path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("OpenAPI spec {0} has no paths")]
    NoPaths(String),
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param {
        name: String,
        prefix: String,
        suffix: String,
    },
}

/// A parameter's schema, with `$ref`s resolved.
#[derive(Debug, Clone)]
struct Schema {
    ty: String,
    format: Option<String>,
    ignore_format: bool,
    enum_values: Option<Vec<String>>,
    pattern: Option<Regex>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    items: Option<Box<Schema>>,
}

#[derive(Debug, Clone)]
struct Operation {
    method: String,
    template: String,
    segments: Vec<Segment>,
    path_params: HashMap<String, Schema>,
    query_params: HashMap<String, Schema>,
    body_params: Option<HashMap<String, Schema>>,
    required_body: Vec<String>,
}

/// The matched operation of one request.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The spec's path template, e.g. `/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json`.
    pub template: String,
    /// Decoded path parameters by name.
    pub path_params: HashMap<String, String>,
}

/// Why a request does not conform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// No operation has this path (404).
    UnknownPath,
    /// The path exists but not with this method (405).
    MethodNotAllowed,
    /// A path parameter does not match its pattern (404, like Twilio).
    BadPathParam { name: String, value: String },
    /// A query or body parameter is wrong (400).
    BadParam { name: String, reason: String },
}

impl Violation {
    pub fn message(&self) -> String {
        match self {
            Violation::UnknownPath => "The requested resource was not found".to_owned(),
            Violation::MethodNotAllowed => "Method not allowed on this resource".to_owned(),
            Violation::BadPathParam { name, value } => {
                format!("The requested resource was not found: {name} '{value}' is not valid")
            }
            Violation::BadParam { name, reason } => format!("Invalid parameter {name}: {reason}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    ops: Vec<Operation>,
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    let mut cur = v;
    for _ in 0..8 {
        let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
            return cur;
        };
        let Some(path) = r.strip_prefix("#/") else {
            return cur;
        };
        let mut target = root;
        for part in path.split('/') {
            match target.get(part) {
                Some(t) => target = t,
                None => return cur,
            }
        }
        cur = target;
    }
    cur
}

fn schema_from(root: &Value, v: &Value) -> Schema {
    let v = resolve(root, v);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| v.get(k).and_then(Value::as_f64);
    Schema {
        ty: s("type").unwrap_or_else(|| "string".to_owned()),
        format: s("format"),
        ignore_format: v
            .get("x-twilio")
            .and_then(|x| x.get("ignoreFormat"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        enum_values: v.get("enum").and_then(Value::as_array).map(|a| {
            a.iter()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        }),
        pattern: s("pattern").and_then(|p| Regex::new(&p).ok()),
        min_length: n("minLength").map(|x| x as usize),
        max_length: n("maxLength").map(|x| x as usize),
        minimum: n("minimum"),
        maximum: n("maximum"),
        items: v.get("items").map(|i| Box::new(schema_from(root, i))),
    }
}

fn parse_template(t: &str) -> Vec<Segment> {
    t.split('/')
        .skip(1)
        .map(|seg| match (seg.find('{'), seg.find('}')) {
            (Some(a), Some(b)) if a < b => Segment::Param {
                name: seg[a + 1..b].to_owned(),
                prefix: seg[..a].to_owned(),
                suffix: seg[b + 1..].to_owned(),
            },
            _ => Segment::Literal(seg.to_owned()),
        })
        .collect()
}

impl Spec {
    /// Loads the spec from a file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let display = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| SpecError::Read {
            path: display.clone(),
            source,
        })?;
        let root: Value = serde_json::from_slice(&raw).map_err(|source| SpecError::Json {
            path: display.clone(),
            source,
        })?;
        Self::from_value(&root).ok_or(SpecError::NoPaths(display))
    }

    fn from_value(root: &Value) -> Option<Self> {
        let paths = root.get("paths")?.as_object()?;
        let mut ops = Vec::new();
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for method in ["get", "post", "delete", "put", "patch"] {
                let Some(op) = item.get(method) else { continue };
                let mut path_params = HashMap::new();
                let mut query_params = HashMap::new();
                for p in op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let p = resolve(root, p);
                    let (Some(name), Some(location)) = (
                        p.get("name").and_then(Value::as_str),
                        p.get("in").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    let schema = p
                        .get("schema")
                        .map(|s| schema_from(root, s))
                        .unwrap_or_else(|| schema_from(root, &Value::Null));
                    match location {
                        "path" => {
                            path_params.insert(name.to_owned(), schema);
                        }
                        "query" => {
                            query_params.insert(name.to_owned(), schema);
                        }
                        _ => {}
                    }
                }
                let form = op
                    .get("requestBody")
                    .and_then(|b| b.get("content"))
                    .and_then(|c| c.get("application/x-www-form-urlencoded"))
                    .and_then(|c| c.get("schema"))
                    .map(|s| resolve(root, s));
                let (body_params, required_body) = match form {
                    Some(schema) => {
                        let props = schema
                            .get("properties")
                            .and_then(Value::as_object)
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| (k.clone(), schema_from(root, v)))
                                    .collect::<HashMap<_, _>>()
                            })
                            .unwrap_or_default();
                        let required = schema
                            .get("required")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (Some(props), required)
                    }
                    None => (None, Vec::new()),
                };
                ops.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    segments: parse_template(template),
                    path_params,
                    query_params,
                    body_params,
                    required_body,
                });
            }
        }
        if ops.is_empty() {
            None
        } else {
            Some(Self { ops })
        }
    }

    /// Number of operations loaded.
    pub fn operation_count(&self) -> usize {
        self.ops.len()
    }

    fn match_path(op: &Operation, segs: &[&str]) -> Option<HashMap<String, String>> {
        if op.segments.len() != segs.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (t, s) in op.segments.iter().zip(segs) {
            match t {
                Segment::Literal(l) => {
                    if l != s {
                        return None;
                    }
                }
                Segment::Param {
                    name,
                    prefix,
                    suffix,
                } => {
                    let inner = s.strip_prefix(prefix.as_str())?;
                    let inner = inner.strip_suffix(suffix.as_str())?;
                    if inner.is_empty() {
                        return None;
                    }
                    let decoded = percent_encoding::percent_decode_str(inner)
                        .decode_utf8_lossy()
                        .into_owned();
                    params.insert(name.clone(), decoded);
                }
            }
        }
        Some(params)
    }

    fn literal_count(op: &Operation) -> usize {
        op.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// Validates one request. `query` and `body` are decoded form pairs
    /// (repeated keys repeated).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: &[(String, String)],
    ) -> Result<Matched, Violation> {
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        let mut candidates: Vec<(&Operation, HashMap<String, String>)> = self
            .ops
            .iter()
            .filter_map(|op| Self::match_path(op, &segs).map(|p| (op, p)))
            .collect();
        if candidates.is_empty() {
            return Err(Violation::UnknownPath);
        }
        candidates.sort_by_key(|(op, _)| std::cmp::Reverse(Self::literal_count(op)));
        let best = Self::literal_count(candidates[0].0);
        candidates.retain(|(op, _)| Self::literal_count(op) == best);
        let Some((op, params)) = candidates
            .iter()
            .find(|(op, _)| op.method.eq_ignore_ascii_case(method))
        else {
            return Err(Violation::MethodNotAllowed);
        };
        for (name, value) in params {
            if let Some(schema) = op.path_params.get(name)
                && check_scalar(schema, value).is_err()
            {
                return Err(Violation::BadPathParam {
                    name: name.clone(),
                    value: value.clone(),
                });
            }
        }
        check_params(&op.query_params, query, &[])?;
        if !body.is_empty() || !op.required_body.is_empty() {
            match &op.body_params {
                Some(props) => check_params(props, body, &op.required_body)?,
                None => {
                    if let Some((k, _)) = body.first() {
                        return Err(Violation::BadParam {
                            name: k.clone(),
                            reason: "this operation takes no body parameters".to_owned(),
                        });
                    }
                }
            }
        }
        Ok(Matched {
            template: op.template.clone(),
            path_params: params.clone(),
        })
    }
}

fn check_params(
    schemas: &HashMap<String, Schema>,
    pairs: &[(String, String)],
    required: &[String],
) -> Result<(), Violation> {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in pairs {
        match grouped.iter_mut().find(|(n, _)| *n == k.as_str()) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((k, vec![v])),
        }
    }
    for (name, values) in &grouped {
        let Some(schema) = schemas.get(*name) else {
            return Err(Violation::BadParam {
                name: (*name).to_owned(),
                reason: "unknown parameter".to_owned(),
            });
        };
        if schema.ty == "array" {
            let item = schema.items.as_deref();
            for v in values {
                // Twilio's clients send list values repeated, or space/comma
                // separated in one value (StatusCallbackEvent="initiated ringing").
                if let Some(item) = item {
                    check_scalar(item, v).map_err(|reason| Violation::BadParam {
                        name: (*name).to_owned(),
                        reason,
                    })?;
                }
            }
        } else {
            if values.len() > 1 {
                return Err(Violation::BadParam {
                    name: (*name).to_owned(),
                    reason: "given more than once but is not a list".to_owned(),
                });
            }
            check_scalar(schema, values[0]).map_err(|reason| Violation::BadParam {
                name: (*name).to_owned(),
                reason,
            })?;
        }
    }
    for r in required {
        if !grouped.iter().any(|(n, _)| n == r) {
            return Err(Violation::BadParam {
                name: r.clone(),
                reason: "required parameter is missing".to_owned(),
            });
        }
    }
    Ok(())
}

fn looks_like_date_time(v: &str) -> bool {
    use time::format_description::well_known::{Rfc2822, Rfc3339};
    time::OffsetDateTime::parse(v, &Rfc3339).is_ok()
        || time::OffsetDateTime::parse(v, &Rfc2822).is_ok()
        || parse_ymd(v).is_some()
        || time::PrimitiveDateTime::parse(
            v,
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        )
        .is_ok()
}

/// `YYYY-MM-DD`.
pub fn parse_ymd(v: &str) -> Option<time::Date> {
    time::Date::parse(v, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

fn check_scalar(schema: &Schema, v: &str) -> Result<(), String> {
    match schema.ty.as_str() {
        "boolean" => {
            if v != "true" && v != "false" {
                return Err(format!("'{v}' is not a boolean (true or false)"));
            }
        }
        "integer" => {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("'{v}' is not an integer"))?;
            if schema.minimum.is_some_and(|m| (n as f64) < m) {
                return Err(format!("{n} is below the minimum"));
            }
            if schema.maximum.is_some_and(|m| (n as f64) > m) {
                return Err(format!("{n} is above the maximum"));
            }
        }
        "number" => {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("'{v}' is not a number"))?;
        }
        _ => {
            if let Some(values) = &schema.enum_values
                && !values.iter().any(|e| e == v)
            {
                return Err(format!(
                    "'{v}' is not one of the allowed values: {}",
                    values.join(", ")
                ));
            }
            if let Some(p) = &schema.pattern
                && !p.is_match(v)
            {
                return Err(format!("'{v}' does not match {}", p.as_str()));
            }
            let len = v.chars().count();
            if schema.min_length.is_some_and(|m| len < m) {
                return Err("too short".to_owned());
            }
            if schema.max_length.is_some_and(|m| len > m) {
                return Err("too long".to_owned());
            }
            if !schema.ignore_format {
                let format = schema.format.as_deref();
                let bad = match format {
                    Some("uri") => !v.is_empty() && url::Url::parse(v).is_err(),
                    Some("phone-number") => {
                        let digits = v.strip_prefix('+').unwrap_or(v);
                        digits.is_empty()
                            || digits.len() > 15
                            || !digits.bytes().all(|b| b.is_ascii_digit())
                    }
                    Some("endpoint") => v.trim().is_empty() || v.chars().any(char::is_control),
                    Some("date-time") | Some("date") => !looks_like_date_time(v),
                    _ => false,
                };
                if bad {
                    return Err(format!(
                        "'{v}' is not a valid {}",
                        format.unwrap_or("value")
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn spec() -> Option<Spec> {
        Spec::load(&default_spec_path()).ok()
    }

    #[test]
    fn participant_update_typo_is_refused() {
        let Some(spec) = spec() else {
            eprintln!("spec not installed; skipping");
            return;
        };
        let path = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Conferences/CF0123456789abcdef0123456789abcdef/Participants/CA0123456789abcdef0123456789abcdef.json";
        assert!(
            spec.check("POST", path, &[], &pairs(&[("Coaching", "true")]))
                .is_ok()
        );
        let err = spec
            .check("POST", path, &[], &pairs(&[("CallSidToCoah", "CA1")]))
            .unwrap_err();
        assert!(matches!(err, Violation::BadParam { ref name, .. } if name == "CallSidToCoah"));
        assert!(
            spec.check("POST", path, &[], &pairs(&[("Muted", "yes")]))
                .is_err()
        );
        assert!(
            spec.check("POST", path, &[], &pairs(&[("HoldMethod", "PUT")]))
                .is_err()
        );
    }
}
