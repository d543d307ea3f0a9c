//! Reads `template.yaml` (AWS SAM / CloudFormation), the single source of truth
//! for what the local stack provisions and serves.
//!
//! CloudFormation short tags (`!Ref`, `!Sub`, `!GetAtt`, `!If`, ...) parse as
//! serde_yaml tagged values; long forms (`{"Ref": ..}`, `{"Fn::GetAtt": ..}`)
//! are understood too.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

/// Errors reading or interpreting the template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("template: {0}")]
    Shape(String),
}

fn shape(msg: impl Into<String>) -> TemplateError {
    TemplateError::Shape(msg.into())
}

/// A CloudFormation intrinsic function, normalised from short or long form.
#[derive(Debug, Clone, PartialEq)]
pub enum Intrinsic<'a> {
    Ref(&'a str),
    GetAtt(String, String),
    Sub(&'a Value),
    Other(&'a str, &'a Value),
}

/// Recognises an intrinsic in `v` (short tag or long form).
pub fn intrinsic(v: &Value) -> Option<Intrinsic<'_>> {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            Some(make_intrinsic(name, &t.value))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, val) = m.iter().next()?;
            let k = k.as_str()?;
            if k == "Ref" {
                Some(make_intrinsic("Ref", val))
            } else {
                k.strip_prefix("Fn::").map(|name| make_intrinsic(name, val))
            }
        }
        _ => None,
    }
}

fn make_intrinsic<'a>(name: &str, val: &'a Value) -> Intrinsic<'a> {
    match name {
        "Ref" => match val.as_str() {
            Some(s) => Intrinsic::Ref(s),
            None => Intrinsic::Other("Ref", val),
        },
        "GetAtt" => match val {
            Value::String(s) => match s.split_once('.') {
                Some((r, a)) => Intrinsic::GetAtt(r.to_string(), a.to_string()),
                None => Intrinsic::Other("GetAtt", val),
            },
            Value::Sequence(seq) if seq.len() == 2 => match (seq[0].as_str(), seq[1].as_str()) {
                (Some(r), Some(a)) => Intrinsic::GetAtt(r.to_string(), a.to_string()),
                _ => Intrinsic::Other("GetAtt", val),
            },
            _ => Intrinsic::Other("GetAtt", val),
        },
        "Sub" => Intrinsic::Sub(val),
        // Leak-free: match a static list of names we report.
        other => Intrinsic::Other(static_name(other), val),
    }
}

fn static_name(name: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "If",
        "Join",
        "Select",
        "Split",
        "Equals",
        "Not",
        "And",
        "Or",
        "FindInMap",
        "ImportValue",
        "Base64",
        "GetAZs",
        "Condition",
    ];
    KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("Unknown")
}

/// Values the template's references resolve to locally: resource logical ids
/// (`Ref`) and `Resource.Attribute` (`GetAtt`), plus pseudo parameters.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    pub values: BTreeMap<String, String>,
}

impl Bindings {
    pub fn with_pseudo(region: &str) -> Self {
        let mut values = BTreeMap::new();
        values.insert("AWS::Region".into(), region.into());
        values.insert("AWS::URLSuffix".into(), "amazonaws.com".into());
        values.insert("AWS::AccountId".into(), "000000000000".into());
        values.insert("AWS::StackName".into(), "cc-local".into());
        values.insert("AWS::Partition".into(), "aws".into());
        Self { values }
    }
    pub fn insert(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.values.insert(k.into(), v.into());
    }
}

/// A parameter declared in the template.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub default: Option<String>,
}

/// A key element: attribute name and key type (`HASH` / `RANGE`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyElement {
    pub attribute: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsiSpec {
    pub name: String,
    pub keys: Vec<KeyElement>,
    pub projection_type: String,
}

/// An `AWS::DynamoDB::Table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    /// (attribute name, attribute type S/N/B)
    pub attributes: Vec<(String, String)>,
    pub keys: Vec<KeyElement>,
    pub gsis: Vec<GsiSpec>,
    pub ttl_attribute: Option<String>,
}

/// An `AWS::S3::Bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub logical_id: String,
    pub abort_incomplete_multipart_days: Option<i64>,
}

/// An `AWS::SQS::Queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub visibility_timeout: Option<i64>,
    pub message_retention: Option<i64>,
    /// (dead-letter queue logical id, maxReceiveCount)
    pub redrive: Option<(String, i64)>,
}

/// One HttpApi event of a function: a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
    pub function: String,
    pub event: String,
    /// Name of the JWT authorizer, `None` for `Authorizer: NONE`.
    pub authorizer: Option<String>,
}

impl RouteSpec {
    /// API Gateway's route key, e.g. `POST /calls/{callId}/supervision`.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsEventSpec {
    pub event: String,
    pub queue_logical_id: String,
    pub batch_size: i64,
    pub report_batch_item_failures: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEventSpec {
    pub event: String,
    pub expression: String,
}

/// An `AWS::Serverless::Function` with its Globals applied.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// Cargo binary name (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    pub timeout_seconds: u64,
    pub memory_mb: u64,
    /// Environment variables, Globals first, then the function's own (which win).
    pub environment: BTreeMap<String, Value>,
    pub routes: Vec<RouteSpec>,
    pub sqs_events: Vec<SqsEventSpec>,
    pub schedule_events: Vec<ScheduleEventSpec>,
}

/// The parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

impl Template {
    /// Reads and parses the template at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TemplateError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let root: Value = serde_yaml::from_str(text)?;
        if root.get("Resources").and_then(Value::as_mapping).is_none() {
            return Err(shape("no Resources mapping"));
        }
        Ok(Self { root })
    }

    /// The workspace's template: `$CC_TEMPLATE` or `<workspace>/template.yaml`.
    pub fn workspace_path() -> std::path::PathBuf {
        if let Ok(p) = std::env::var("CC_TEMPLATE") {
            return p.into();
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
    }

    pub fn raw(&self) -> &Value {
        &self.root
    }

    fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    fn resources_of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.resources()
            .filter(move |(_, v)| v.get("Type").and_then(Value::as_str) == Some(ty))
    }

    pub fn parameters(&self) -> BTreeMap<String, Parameter> {
        let mut out = BTreeMap::new();
        if let Some(m) = self.root.get("Parameters").and_then(Value::as_mapping) {
            for (k, v) in m {
                let Some(name) = k.as_str() else { continue };
                let default = v.get("Default").and_then(scalar_string);
                out.insert(
                    name.to_string(),
                    Parameter {
                        name: name.to_string(),
                        default,
                    },
                );
            }
        }
        out
    }

    /// Resolves a value to a string using parameter defaults, `bindings`
    /// (resources, pseudo parameters) and `!Sub` interpolation.
    /// `None` when something it refers to has no local value.
    pub fn resolve(&self, v: &Value, bindings: &Bindings) -> Option<String> {
        if let Some(s) = scalar_string(v) {
            return Some(s);
        }
        match intrinsic(v)? {
            Intrinsic::Ref(name) => self.resolve_name(name, bindings),
            Intrinsic::GetAtt(r, a) => bindings.values.get(&format!("{r}.{a}")).cloned(),
            Intrinsic::Sub(arg) => {
                let (text, vars) = match arg {
                    Value::String(s) => (s.as_str(), None),
                    Value::Sequence(seq) if seq.len() == 2 => {
                        (seq[0].as_str()?, seq[1].as_mapping())
                    }
                    _ => return None,
                };
                let mut out = String::new();
                let mut rest = text;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let after = &rest[start + 2..];
                    let end = after.find('}')?;
                    let var = &after[..end];
                    let local = vars
                        .and_then(|m| m.get(var))
                        .and_then(|val| self.resolve(val, bindings));
                    let value = match local {
                        Some(v) => v,
                        None if var.contains('.') && !var.starts_with("AWS::") => {
                            bindings.values.get(var).cloned()?
                        }
                        None => self.resolve_name(var, bindings)?,
                    };
                    out.push_str(&value);
                    rest = &after[end + 1..];
                }
                out.push_str(rest);
                Some(out)
            }
            Intrinsic::Other(..) => None,
        }
    }

    fn resolve_name(&self, name: &str, bindings: &Bindings) -> Option<String> {
        if let Some(v) = bindings.values.get(name) {
            return Some(v.clone());
        }
        // An empty default is a value: "unset" for an optional setting.
        self.parameters().get(name).and_then(|p| p.default.clone())
    }

    fn resolve_i64(&self, v: &Value) -> Option<i64> {
        self.resolve(v, &Bindings::default())?.parse().ok()
    }

    pub fn tables(&self) -> Result<Vec<TableSpec>, TemplateError> {
        let mut out = Vec::new();
        for (id, res) in self.resources_of_type("AWS::DynamoDB::Table") {
            let props = res
                .get("Properties")
                .ok_or_else(|| shape(format!("{id}: no Properties")))?;
            let attributes = props
                .get("AttributeDefinitions")
                .and_then(Value::as_sequence)
                .ok_or_else(|| shape(format!("{id}: no AttributeDefinitions")))?
                .iter()
                .map(|a| {
                    Ok((
                        str_field(a, "AttributeName", id)?,
                        str_field(a, "AttributeType", id)?,
                    ))
                })
                .collect::<Result<Vec<_>, TemplateError>>()?;
            let keys = key_schema(props.get("KeySchema"), id)?;
            let mut gsis = Vec::new();
            if let Some(seq) = props
                .get("GlobalSecondaryIndexes")
                .and_then(Value::as_sequence)
            {
                for g in seq {
                    gsis.push(GsiSpec {
                        name: str_field(g, "IndexName", id)?,
                        keys: key_schema(g.get("KeySchema"), id)?,
                        projection_type: g
                            .get("Projection")
                            .and_then(|p| p.get("ProjectionType"))
                            .and_then(Value::as_str)
                            .unwrap_or("ALL")
                            .to_string(),
                    });
                }
            }
            let ttl_attribute = props.get("TimeToLiveSpecification").and_then(|t| {
                let enabled = t.get("Enabled").and_then(Value::as_bool).unwrap_or(false);
                enabled
                    .then(|| t.get("AttributeName").and_then(Value::as_str))
                    .flatten()
                    .map(str::to_string)
            });
            out.push(TableSpec {
                logical_id: id.to_string(),
                attributes,
                keys,
                gsis,
                ttl_attribute,
            });
        }
        Ok(out)
    }

    pub fn buckets(&self) -> Vec<BucketSpec> {
        self.resources_of_type("AWS::S3::Bucket")
            .map(|(id, res)| {
                let abort = res
                    .get("Properties")
                    .and_then(|p| p.get("LifecycleConfiguration"))
                    .and_then(|l| l.get("Rules"))
                    .and_then(Value::as_sequence)
                    .and_then(|rules| {
                        rules.iter().find_map(|r| {
                            r.get("AbortIncompleteMultipartUpload")
                                .and_then(|a| a.get("DaysAfterInitiation"))
                                .and_then(|d| self.resolve_i64(d))
                        })
                    });
                BucketSpec {
                    logical_id: id.to_string(),
                    abort_incomplete_multipart_days: abort,
                }
            })
            .collect()
    }

    pub fn queues(&self) -> Result<Vec<QueueSpec>, TemplateError> {
        let mut out = Vec::new();
        for (id, res) in self.resources_of_type("AWS::SQS::Queue") {
            let props = res.get("Properties");
            let num = |k: &str| {
                props
                    .and_then(|p| p.get(k))
                    .and_then(|v| self.resolve_i64(v))
            };
            let redrive = match props.and_then(|p| p.get("RedrivePolicy")) {
                None => None,
                Some(r) => {
                    let target = r
                        .get("deadLetterTargetArn")
                        .and_then(intrinsic)
                        .and_then(|i| match i {
                            Intrinsic::GetAtt(res, attr) if attr == "Arn" => Some(res),
                            _ => None,
                        })
                        .ok_or_else(|| {
                            shape(format!(
                                "{id}: deadLetterTargetArn must be !GetAtt Queue.Arn"
                            ))
                        })?;
                    let max = r
                        .get("maxReceiveCount")
                        .and_then(|v| self.resolve_i64(v))
                        .ok_or_else(|| shape(format!("{id}: maxReceiveCount unresolvable")))?;
                    Some((target, max))
                }
            };
            out.push(QueueSpec {
                logical_id: id.to_string(),
                visibility_timeout: num("VisibilityTimeout"),
                message_retention: num("MessageRetentionPeriod"),
                redrive,
            });
        }
        // Dead-letter queues first, so their ARNs exist when sources are created.
        out.sort_by_key(|q| q.redrive.is_some());
        Ok(out)
    }

    fn globals_function(&self) -> Option<&Value> {
        self.root.get("Globals").and_then(|g| g.get("Function"))
    }

    fn http_api_default_authorizer(&self, api_id: Option<&str>) -> Option<String> {
        self.resources_of_type("AWS::Serverless::HttpApi")
            .find(|(id, _)| api_id.is_none_or(|a| a == *id))
            .and_then(|(_, r)| {
                r.get("Properties")?
                    .get("Auth")?
                    .get("DefaultAuthorizer")?
                    .as_str()
                    .map(str::to_string)
            })
    }

    pub fn functions(&self) -> Result<Vec<FunctionSpec>, TemplateError> {
        let globals = self.globals_function();
        let mut out = Vec::new();
        for (id, res) in self.resources_of_type("AWS::Serverless::Function") {
            let props = res
                .get("Properties")
                .ok_or_else(|| shape(format!("{id}: no Properties")))?;
            let prop = |k: &str| props.get(k).or_else(|| globals.and_then(|g| g.get(k)));
            let binary = res
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                .ok_or_else(|| shape(format!("{id}: no Metadata.BuildProperties.Binary")))?
                .to_string();
            let timeout_seconds = prop("Timeout")
                .and_then(|v| self.resolve_i64(v))
                .unwrap_or(3) as u64;
            let memory_mb = prop("MemorySize")
                .and_then(|v| self.resolve_i64(v))
                .unwrap_or(128) as u64;
            let mut environment = BTreeMap::new();
            for src in [globals, Some(props)].into_iter().flatten() {
                if let Some(vars) = src
                    .get("Environment")
                    .and_then(|e| e.get("Variables"))
                    .and_then(Value::as_mapping)
                {
                    for (k, v) in vars {
                        if let Some(k) = k.as_str() {
                            environment.insert(k.to_string(), v.clone());
                        }
                    }
                }
            }
            let mut routes = Vec::new();
            let mut sqs_events = Vec::new();
            let mut schedule_events = Vec::new();
            if let Some(events) = props.get("Events").and_then(Value::as_mapping) {
                for (ename, ev) in events {
                    let ename = ename.as_str().unwrap_or_default().to_string();
                    let ty = ev.get("Type").and_then(Value::as_str).unwrap_or_default();
                    let ep = ev.get("Properties");
                    let ep_str = |k: &str| ep.and_then(|p| p.get(k)).and_then(Value::as_str);
                    match ty {
                        "HttpApi" => {
                            let api_id =
                                ep.and_then(|p| p.get("ApiId"))
                                    .and_then(|v| match intrinsic(v) {
                                        Some(Intrinsic::Ref(r)) => Some(r.to_string()),
                                        _ => None,
                                    });
                            let method = ep_str("Method")
                                .ok_or_else(|| shape(format!("{id}.{ename}: no Method")))?
                                .to_ascii_uppercase();
                            let path = ep_str("Path")
                                .ok_or_else(|| shape(format!("{id}.{ename}: no Path")))?
                                .to_string();
                            let explicit = ep
                                .and_then(|p| p.get("Auth"))
                                .and_then(|a| a.get("Authorizer"))
                                .and_then(Value::as_str);
                            let authorizer = match explicit {
                                Some("NONE") => None,
                                Some(a) => Some(a.to_string()),
                                None => self.http_api_default_authorizer(api_id.as_deref()),
                            };
                            routes.push(RouteSpec {
                                method,
                                path,
                                function: id.to_string(),
                                event: ename,
                                authorizer,
                            });
                        }
                        "SQS" => {
                            let queue = ep
                                .and_then(|p| p.get("Queue"))
                                .and_then(intrinsic)
                                .and_then(|i| match i {
                                    Intrinsic::GetAtt(r, a) if a == "Arn" => Some(r),
                                    _ => None,
                                })
                                .ok_or_else(|| {
                                    shape(format!("{id}.{ename}: Queue must be !GetAtt Q.Arn"))
                                })?;
                            let batch_size = ep
                                .and_then(|p| p.get("BatchSize"))
                                .and_then(|v| self.resolve_i64(v))
                                .unwrap_or(10);
                            let report = ep
                                .and_then(|p| p.get("FunctionResponseTypes"))
                                .and_then(Value::as_sequence)
                                .is_some_and(|s| {
                                    s.iter()
                                        .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
                                });
                            sqs_events.push(SqsEventSpec {
                                event: ename,
                                queue_logical_id: queue,
                                batch_size,
                                report_batch_item_failures: report,
                            });
                        }
                        "Schedule" | "ScheduleV2" => {
                            let expr = ep
                                .and_then(|p| {
                                    p.get("Schedule").or_else(|| p.get("ScheduleExpression"))
                                })
                                .and_then(|v| self.resolve(v, &Bindings::default()))
                                .ok_or_else(|| {
                                    shape(format!("{id}.{ename}: unresolvable schedule"))
                                })?;
                            schedule_events.push(ScheduleEventSpec {
                                event: ename,
                                expression: expr,
                            });
                        }
                        _ => {}
                    }
                }
            }
            out.push(FunctionSpec {
                logical_id: id.to_string(),
                binary,
                timeout_seconds,
                memory_mb,
                environment,
                routes,
                sqs_events,
                schedule_events,
            });
        }
        Ok(out)
    }

    /// Every HttpApi route of every function, sorted.
    pub fn routes(&self) -> Result<Vec<RouteSpec>, TemplateError> {
        let mut all: Vec<RouteSpec> = self
            .functions()?
            .into_iter()
            .flat_map(|f| f.routes)
            .collect();
        all.sort();
        Ok(all)
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_field(v: &Value, k: &str, id: &str) -> Result<String, TemplateError> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| shape(format!("{id}: missing {k}")))
}

fn key_schema(v: Option<&Value>, id: &str) -> Result<Vec<KeyElement>, TemplateError> {
    v.and_then(Value::as_sequence)
        .ok_or_else(|| shape(format!("{id}: no KeySchema")))?
        .iter()
        .map(|k| {
            Ok(KeyElement {
                attribute: str_field(k, "AttributeName", id)?,
                key_type: str_field(k, "KeyType", id)?,
            })
        })
        .collect()
}

/// Parses `rate(N unit)` into a period; `cron(...)` is not supported locally.
pub fn parse_rate(expr: &str) -> Option<std::time::Duration> {
    let inner = expr.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim().trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_long_intrinsics() {
        let t = Template::parse(
            "Parameters:\n  P:\n    Type: String\n    Default: x\nResources:\n  R:\n    Type: AWS::SQS::Queue\n",
        )
        .unwrap();
        let v: Value = serde_yaml::from_str("!Sub \"a-${P}-${AWS::Region}-${R.Arn}\"").unwrap();
        let mut b = Bindings::with_pseudo("us-east-1");
        b.insert("R.Arn", "arn:q");
        assert_eq!(t.resolve(&v, &b).unwrap(), "a-x-us-east-1-arn:q");
        let v: Value = serde_yaml::from_str("{Ref: P}").unwrap();
        assert_eq!(t.resolve(&v, &b).unwrap(), "x");
        let v: Value = serde_yaml::from_str("!GetAtt R.Arn").unwrap();
        assert_eq!(t.resolve(&v, &b).unwrap(), "arn:q");
        let v: Value = serde_yaml::from_str("!Ref Missing").unwrap();
        assert_eq!(t.resolve(&v, &b), None);
    }

    #[test]
    fn an_empty_default_is_a_value_not_a_missing_one() {
        let t = Template::parse(
            "Parameters:\n  Opt:\n    Type: String\n    Default: \"\"\n  Req:\n    Type: String\nResources: {}\n",
        )
        .unwrap();
        let b = Bindings::with_pseudo("us-east-1");
        let v: Value = serde_yaml::from_str("!Ref Opt").unwrap();
        assert_eq!(t.resolve(&v, &b).as_deref(), Some(""));
        let v: Value = serde_yaml::from_str("!Ref Req").unwrap();
        assert_eq!(t.resolve(&v, &b), None, "no default: missing");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("rate(15 minutes)").unwrap().as_secs(), 900);
        assert_eq!(parse_rate("rate(1 hour)").unwrap().as_secs(), 3600);
        assert!(parse_rate("cron(0 * * * ? *)").is_none());
    }
}
