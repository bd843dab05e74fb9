//! The IPC contract, with no I/O: what a client sends and what the daemon
//! answers, one JSON document per line in each direction. A request line
//! is decoded into a typed [`Request`] (or a [`Rejected`] that names what
//! was wrong); answers are encoded into a byte buffer ending in `\n`. The
//! CLI serialises the same [`Method`] and reads the same result types, so
//! both sides share one definition of every method, parameter and field
//! (docs/ipc.md describes them).
//!
//! Request:  `{"id": "1", "method": "nodes.get", "params": {"node_id": "a"}}`
//! Answer:   `{"id": "1", "result": {...}, "error": null}` or
//!           `{"id": "1", "result": null, "error": {"code": "NODE_NOT_FOUND", "message": "..."}}`
//!
//! `id` is echoed as sent (a string, a number, or null when absent) so that
//! a client can match answers; `params` may be omitted or null when a method
//! takes none. Unknown fields are refused rather than ignored, so a typo in
//! a filter name never silently widens a query.

use chrono::{DateTime, Utc};
use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

/// The longest request line accepted, newline excluded (1 MiB).
pub const MAX_LINE: usize = 1024 * 1024;
/// `audit.query` page size when `limit` is absent.
pub const DEFAULT_AUDIT_LIMIT: u64 = 50;
/// The largest `audit.query` page.
pub const MAX_AUDIT_LIMIT: u64 = 1000;

/// Why a request failed, as clients branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing or ill-typed field, a line too long.
    InvalidRequest,
    MethodNotFound,
    /// The daemon failed in a way the client cannot fix.
    InternalError,
    /// PostgreSQL is down or unusable; the message says why.
    NotConnected,
    NodeNotFound,
    /// Reserved for access checks beyond the socket's file mode.
    PermissionDenied,
    /// This node cannot reach a majority of the cluster: nothing was done.
    NoQuorum,
    /// A compare-and-set found another value (the message and `current` say which).
    CasFailed,
    /// This node belongs to no cluster (or the named node is not a member).
    NotAMember,
    /// A write was proposed but its outcome is not known: it may or may not
    /// have been applied. Retry with the same request_id to apply it once.
    UnknownOutcome,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InternalError,
        ErrorCode::NotConnected,
        ErrorCode::NodeNotFound,
        ErrorCode::PermissionDenied,
        ErrorCode::NoQuorum,
        ErrorCode::CasFailed,
        ErrorCode::NotAMember,
        ErrorCode::UnknownOutcome,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::MethodNotFound => "METHOD_NOT_FOUND",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::NotConnected => "NOT_CONNECTED",
            ErrorCode::NodeNotFound => "NODE_NOT_FOUND",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NoQuorum => "NO_QUORUM",
            ErrorCode::CasFailed => "CAS_FAILED",
            ErrorCode::NotAMember => "NOT_A_MEMBER",
            ErrorCode::UnknownOutcome => "UNKNOWN_OUTCOME",
        }
    }

    /// Position in [`ErrorCode::ALL`] (for counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The `error` member of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
}

/// The methods, without their parameters (for counters and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    StatusGet,
    HealthCheck,
    NodesList,
    NodesGet,
    AuditQuery,
    ClusterStatus,
    ClusterInit,
    ClusterAdd,
    ClusterRemove,
    StateGet,
    StateList,
    StateSet,
    StateCas,
    StateDelete,
}

impl MethodKind {
    pub const ALL: [MethodKind; 14] = [
        MethodKind::StatusGet,
        MethodKind::HealthCheck,
        MethodKind::NodesList,
        MethodKind::NodesGet,
        MethodKind::AuditQuery,
        MethodKind::ClusterStatus,
        MethodKind::ClusterInit,
        MethodKind::ClusterAdd,
        MethodKind::ClusterRemove,
        MethodKind::StateGet,
        MethodKind::StateList,
        MethodKind::StateSet,
        MethodKind::StateCas,
        MethodKind::StateDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::StatusGet => "status.get",
            MethodKind::HealthCheck => "health.check",
            MethodKind::NodesList => "nodes.list",
            MethodKind::NodesGet => "nodes.get",
            MethodKind::AuditQuery => "audit.query",
            MethodKind::ClusterStatus => "cluster.status",
            MethodKind::ClusterInit => "cluster.init",
            MethodKind::ClusterAdd => "cluster.add",
            MethodKind::ClusterRemove => "cluster.remove",
            MethodKind::StateGet => "state.get",
            MethodKind::StateList => "state.list",
            MethodKind::StateSet => "state.set",
            MethodKind::StateCas => "state.cas",
            MethodKind::StateDelete => "state.delete",
        }
    }

    pub fn from_name(name: &str) -> Option<MethodKind> {
        MethodKind::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Position in [`MethodKind::ALL`] (for counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Longest key of the replicated state map.
pub const MAX_STATE_KEY: usize = 256;
/// Longest request id.
pub const MAX_REQUEST_ID: usize = 128;

/// A method with its parameters: what a client sends (serialised as the
/// request's `method` and `params` members) and what the daemon decodes.
/// Each parameter struct refuses unknown fields, so a typo in a filter name
/// never silently widens a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
pub enum Method {
    #[serde(rename = "status.get")]
    StatusGet(NoParams),
    #[serde(rename = "health.check")]
    HealthCheck(NoParams),
    #[serde(rename = "nodes.list")]
    NodesList(NodesListParams),
    #[serde(rename = "nodes.get")]
    NodesGet(NodeIdParams),
    #[serde(rename = "audit.query")]
    AuditQuery(AuditQueryParams),
    #[serde(rename = "cluster.status")]
    ClusterStatus(NoParams),
    #[serde(rename = "cluster.init")]
    ClusterInit(NoParams),
    #[serde(rename = "cluster.add")]
    ClusterAdd(ClusterAddParams),
    #[serde(rename = "cluster.remove")]
    ClusterRemove(NodeIdParams),
    #[serde(rename = "state.get")]
    StateGet(StateGetParams),
    #[serde(rename = "state.list")]
    StateList(StateListParams),
    #[serde(rename = "state.set")]
    StateSet(StateSetParams),
    #[serde(rename = "state.cas")]
    StateCas(StateCasParams),
    #[serde(rename = "state.delete")]
    StateDelete(StateDeleteParams),
}

/// The parameters of a method that takes none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `nodes.list`: empty means every status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesListParams {
    #[serde(default, deserialize_with = "null_as_default")]
    pub status_filter: Vec<NodeStatus>,
}

/// `nodes.get` and `cluster.remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdParams {
    pub node_id: String,
}

/// `audit.query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQueryParams {
    /// Page size (absent: [`DEFAULT_AUDIT_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Exact action names, or prefixes written `node.*`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub action_filter: Vec<String>,
    #[serde(
        default,
        deserialize_with = "rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<DateTime<Utc>>,
}

impl AuditQueryParams {
    pub fn limit(&self) -> u64 {
        self.limit.unwrap_or(DEFAULT_AUDIT_LIMIT)
    }

    pub fn offset(&self) -> u64 {
        self.offset.unwrap_or(0)
    }
}

/// How a `state.get`/`state.list` may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Through the leader's read index: never stale (the default).
    #[default]
    Linearizable,
    /// From this node's applied state: possibly stale, works without quorum.
    Local,
}

/// `cluster.add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterAddParams {
    pub node_id: String,
    /// `host:port` of the new member's gRPC.
    pub grpc: String,
    /// 1 to 100 (absent: 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub witness: bool,
}

impl ClusterAddParams {
    pub fn priority(&self) -> u8 {
        // Checked to be 1 to 100 when decoded.
        self.priority.map_or(50, |p| u8::try_from(p).unwrap_or(100))
    }
}

/// `state.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateGetParams {
    pub key: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub consistency: ReadConsistency,
}

/// `state.list`: every key starting with `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateListParams {
    #[serde(default, deserialize_with = "null_as_default")]
    pub prefix: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub consistency: ReadConsistency,
}

/// `state.set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSetParams {
    pub key: String,
    pub value: Value,
    /// Makes a retry of an unknown outcome apply once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `state.cas`: `expected` null means "absent".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateCasParams {
    pub key: String,
    pub expected: Value,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `state.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDeleteParams {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A parameter given as null counts as absent.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An RFC 3339 timestamp in any offset, kept in UTC.
fn rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|at| Some(at.with_timezone(&Utc)))
        .map_err(|_| {
            de::Error::invalid_value(
                de::Unexpected::Str(&text),
                &"an RFC 3339 timestamp such as 2026-11-26T10:00:00Z",
            )
        })
}

impl Method {
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::StatusGet(_) => MethodKind::StatusGet,
            Method::HealthCheck(_) => MethodKind::HealthCheck,
            Method::NodesList(_) => MethodKind::NodesList,
            Method::NodesGet(_) => MethodKind::NodesGet,
            Method::AuditQuery(_) => MethodKind::AuditQuery,
            Method::ClusterStatus(_) => MethodKind::ClusterStatus,
            Method::ClusterInit(_) => MethodKind::ClusterInit,
            Method::ClusterAdd(_) => MethodKind::ClusterAdd,
            Method::ClusterRemove(_) => MethodKind::ClusterRemove,
            Method::StateGet(_) => MethodKind::StateGet,
            Method::StateList(_) => MethodKind::StateList,
            Method::StateSet(_) => MethodKind::StateSet,
            Method::StateCas(_) => MethodKind::StateCas,
            Method::StateDelete(_) => MethodKind::StateDelete,
        }
    }

    /// The rules beyond the types: bounds, non-empty names, key syntax.
    fn check(&self) -> Result<(), ErrorBody> {
        let kind = self.kind();
        match self {
            Method::NodesGet(p) if p.node_id.is_empty() => Err(ErrorBody::invalid(
                "parameter \"node_id\" of nodes.get must not be empty",
            )),
            Method::AuditQuery(q) => check_audit_query(q),
            Method::ClusterAdd(p) => {
                text(kind, "node_id", &p.node_id, 128)?;
                text(kind, "grpc", &p.grpc, 300)?;
                match p.priority {
                    Some(priority) if !(1..=100).contains(&priority) => {
                        Err(ill_typed(kind, "priority", "an integer from 1 to 100"))
                    }
                    _ => Ok(()),
                }
            }
            Method::ClusterRemove(p) => text(kind, "node_id", &p.node_id, 128),
            Method::StateGet(p) => state_key(kind, &p.key),
            Method::StateSet(StateSetParams {
                key, request_id, ..
            })
            | Method::StateCas(StateCasParams {
                key, request_id, ..
            })
            | Method::StateDelete(StateDeleteParams { key, request_id }) => {
                state_key(kind, key)?;
                match request_id {
                    Some(id) => text(kind, "request_id", id, MAX_REQUEST_ID),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

fn check_audit_query(q: &AuditQueryParams) -> Result<(), ErrorBody> {
    let kind = MethodKind::AuditQuery;
    if q.limit() > MAX_AUDIT_LIMIT {
        return Err(ill_typed(
            kind,
            "limit",
            &format!("an integer from 0 to {MAX_AUDIT_LIMIT}"),
        ));
    }
    // The database takes a signed 64-bit offset.
    if i64::try_from(q.offset()).is_err() {
        return Err(ill_typed(
            kind,
            "offset",
            &format!("an integer from 0 to {}", i64::MAX),
        ));
    }
    if q.action_filter.len() > MAX_ACTION_FILTERS {
        return Err(ErrorBody::invalid(format!(
            "parameter \"action_filter\" of audit.query has {} entries: at most {MAX_ACTION_FILTERS} \
             (use a prefix such as node.* to match many actions)",
            q.action_filter.len()
        )));
    }
    q.action_filter
        .iter()
        .try_for_each(|action| check_action_filter(action))
}

fn ill_typed(kind: MethodKind, name: &str, expected: &str) -> ErrorBody {
    ErrorBody::invalid(format!(
        "parameter \"{name}\" of {} must be {expected}",
        kind.as_str()
    ))
}

/// A non-empty string of at most `max` bytes.
fn text(kind: MethodKind, name: &str, value: &str, max: usize) -> Result<(), ErrorBody> {
    if value.is_empty() || value.len() > max {
        return Err(ill_typed(
            kind,
            name,
            &format!("a non-empty string of at most {max} bytes"),
        ));
    }
    Ok(())
}

/// A key of the replicated map: a dotted name (`cluster.version`), the
/// rule of `coordinator_state`'s CHECK, so that every key can be
/// projected into PostgreSQL.
fn state_key(kind: MethodKind, key: &str) -> Result<(), ErrorBody> {
    text(kind, "key", key, MAX_STATE_KEY)?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if key.split('.').all(part_ok) {
        Ok(())
    } else {
        Err(ill_typed(
            kind,
            "key",
            "a dotted name of letters, digits, _ and - such as cluster.version",
        ))
    }
}

/// Words for a refused parameter, from serde's error and where it arose:
/// every message names the parameter and the method.
fn refusal(kind: MethodKind, e: &serde_path_to_error::Error<serde_json::Error>) -> ErrorBody {
    let method = kind.as_str();
    let text = e.inner().to_string();
    // serde quotes names and values in backticks.
    let quoted: Vec<&str> = text.split('`').skip(1).step_by(2).collect();
    let first = quoted.first().copied().unwrap_or("?");
    let rest = quoted.get(1..).unwrap_or_default().join(", ");
    let field = e
        .path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } if key != "params" => Some(key.as_str()),
            _ => None,
        })
        .next()
        .unwrap_or("params");
    let in_array = e
        .path()
        .iter()
        .any(|segment| matches!(segment, Segment::Seq { .. }));
    let message = if text.starts_with("unknown field") {
        if text.ends_with("there are no fields") {
            format!("unknown parameter \"{first}\": {method} takes no parameters")
        } else {
            format!("unknown parameter \"{first}\" of {method} (parameters: {rest})")
        }
    } else if text.starts_with("missing field") {
        format!("missing parameter \"{first}\" of {method}")
    } else if text.starts_with("unknown variant") {
        format!("parameter \"{field}\" of {method} has unknown value \"{first}\" (values: {rest})")
    } else if let Some((_, expected)) = text.rsplit_once(", expected ") {
        let expected = match expected {
            "a sequence" => "an array",
            "a boolean" => "true or false",
            "u64" => "a non-negative integer",
            other => other,
        };
        if in_array {
            format!(
                "parameter \"{field}\" of {method} must be an array of which each is {expected}"
            )
        } else {
            format!("parameter \"{field}\" of {method} must be {expected}")
        }
    } else {
        format!("parameter \"{field}\" of {method}: {text}")
    };
    ErrorBody::invalid(message)
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Value,
    pub method: Method,
}

/// A request line that cannot be served: what to answer, with the id when
/// it could be read, and the method when it was known (for counters).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub id: Value,
    pub method: Option<MethodKind>,
    pub error: ErrorBody,
}

/// Decodes one request line (without its newline).
pub fn decode(line: &[u8]) -> Result<Request, Rejected> {
    let reject = |id: &Value, method, error| Rejected {
        id: id.clone(),
        method,
        error,
    };
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        reject(
            &Value::Null,
            None,
            ErrorBody::invalid(format!("invalid JSON: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        let error = ErrorBody::invalid(
            "a request must be a JSON object with \"id\", \"method\" and \"params\"",
        );
        return Err(reject(&Value::Null, None, error));
    };
    // The id first, so that every later error can carry it.
    let id = match object.remove("id") {
        None => Value::Null,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => id,
        Some(_) => {
            let error = ErrorBody::invalid("field \"id\" must be a string, a number or null");
            return Err(reject(&Value::Null, None, error));
        }
    };
    let name = match object.remove("method") {
        Some(Value::String(name)) => name,
        Some(_) => {
            return Err(reject(
                &id,
                None,
                ErrorBody::invalid("field \"method\" must be a string"),
            ))
        }
        None => {
            return Err(reject(
                &id,
                None,
                ErrorBody::invalid("missing field \"method\""),
            ))
        }
    };
    let params = object.remove("params");
    if let Some(field) = object.keys().next() {
        let error = ErrorBody::invalid(format!(
            "unknown field \"{field}\" (a request has \"id\", \"method\" and \"params\")"
        ));
        return Err(reject(&id, None, error));
    }
    let Some(kind) = MethodKind::from_name(&name) else {
        let known: Vec<&str> = MethodKind::ALL.iter().map(|m| m.as_str()).collect();
        let error = ErrorBody::new(
            ErrorCode::MethodNotFound,
            format!("unknown method \"{name}\" (methods: {})", known.join(", ")),
        );
        return Err(reject(&id, None, error));
    };
    let params = match params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            let error = ErrorBody::invalid(format!("field \"params\" of {name} must be an object"));
            return Err(reject(&id, Some(kind), error));
        }
    };
    let mut tagged = Map::new();
    tagged.insert("method".to_string(), Value::String(name));
    tagged.insert("params".to_string(), Value::Object(params));
    let method: Method = serde_path_to_error::deserialize(Value::Object(tagged))
        .map_err(|e| reject(&id, Some(kind), refusal(kind, &e)))?;
    match method.check() {
        Ok(()) => Ok(Request { id, method }),
        Err(error) => Err(reject(&id, Some(kind), error)),
    }
}

/// How many action names one `audit.query` may filter on: each is a `LIKE`
/// pattern the database tries on every row it reads.
pub const MAX_ACTION_FILTERS: usize = 32;

/// The longest action name a filter may hold (ours are under 40 bytes).
pub const MAX_ACTION_FILTER_LEN: usize = 64;

/// An action filter is a name (`node.registered`) or a prefix (`node.*`).
fn check_action_filter(action: &str) -> Result<(), ErrorBody> {
    let name = action.strip_suffix(".*").unwrap_or(action);
    let valid = !name.is_empty()
        && action.len() <= MAX_ACTION_FILTER_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(ErrorBody::invalid(format!(
            "parameter \"action_filter\" of audit.query has \"{action}\": expected an action name \
             such as node.registered, or a prefix such as node.* (at most {MAX_ACTION_FILTER_LEN} characters)"
        )))
    }
}

/// The answer envelope, borrowed for encoding: exactly one of `result` and
/// `error` is non-null, and both are always present.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    id: &'a Value,
    result: Option<&'a T>,
    error: Option<&'a ErrorBody>,
}

/// Appends a success answer and its newline to `out`.
pub fn encode_result<T: Serialize>(id: &Value, result: &T, out: &mut Vec<u8>) {
    let start = out.len();
    let envelope = Envelope {
        id,
        result: Some(result),
        error: None,
    };
    if let Err(e) = serde_json::to_writer(&mut *out, &envelope) {
        // Our result types always serialize; should one not, the client
        // still gets one well-formed line instead of half a document.
        out.truncate(start);
        let error = ErrorBody::new(
            ErrorCode::InternalError,
            format!("cannot encode the result: {e}"),
        );
        return encode_error(id, &error, out);
    }
    out.push(b'\n');
}

/// Appends an error answer and its newline to `out`.
pub fn encode_error(id: &Value, error: &ErrorBody, out: &mut Vec<u8>) {
    let envelope: Envelope<'_, ()> = Envelope {
        id,
        result: None,
        error: Some(error),
    };
    // An id, a code and a string: serializing cannot fail.
    serde_json::to_writer(&mut *out, &envelope).unwrap_or_default();
    out.push(b'\n');
}

/// An answer as a client reads it. The code stays a string so that a client
/// keeps working when a newer daemon adds one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Response {
    pub id: Value,
    pub result: Option<Value>,
    pub error: Option<WireError>,
}

/// The `error` member as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
}

// --- results ---------------------------------------------------------------
//
// What each method answers, as the daemon serialises it and the CLI reads
// it back: a renamed field is a compile error on one side or a decode error
// naming it on the other, never a silent "-".

pub use crate::db::queries::{AuditPage, AuditRow, NodeRow};
pub use crate::health_report::{
    ComponentReport, GrpcStatus, HealthReport, NodeReport, NodeStatusReport, PostgresStatus,
    RaftReport, StatusReport,
};
pub use crate::node_status::NodeStatus;
pub use crate::raft::node::{ClusterStatus, MemberStatus, StateEntry};

/// `nodes.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeRow>,
}

/// `nodes.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAnswer {
    pub node: NodeRow,
}

/// `cluster.init`: the new cluster, and how many keys of this node's 0.1.0
/// `coordinator_state` seeded its map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterCreated {
    #[serde(flatten)]
    pub status: ClusterStatus,
    pub seeded_keys: usize,
}

/// `state.get`: `value` is null when the key is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateValue {
    pub key: String,
    pub found: bool,
    pub value: Value,
}

/// `state.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntries {
    pub entries: Vec<StateEntry>,
}

/// `state.set`, `state.cas`, `state.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateWritten {
    pub key: String,
    /// The Raft log index of the write.
    pub applied_index: u64,
    /// What the key held before (null: absent).
    pub previous: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(line: &str) -> Request {
        decode(line.as_bytes()).unwrap_or_else(|r| panic!("{line} rejected: {r:?}"))
    }

    fn rejected(line: &str) -> Rejected {
        match decode(line.as_bytes()) {
            Ok(request) => panic!("{line} accepted as {request:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn state_writes_decode_with_absent_as_an_explicit_null() {
        let Method::StateCas(cas) = ok(
            r#"{"id":1,"method":"state.cas","params":{"key":"k","expected":null,"value":{"a":1},"request_id":"r1"}}"#,
        )
        .method
        else {
            panic!("not a compare-and-set")
        };
        assert_eq!(cas.expected, Value::Null);
        assert_eq!(cas.value, json!({"a": 1}));
        assert_eq!(cas.request_id.as_deref(), Some("r1"));
        let Method::StateSet(set) =
            ok(r#"{"id":2,"method":"state.set","params":{"key":"k","value":null}}"#).method
        else {
            panic!("not a set")
        };
        assert_eq!((set.value, set.request_id), (Value::Null, None));
        assert_eq!(
            ok(r#"{"id":2,"method":"state.delete","params":{"key":"k"}}"#).method,
            Method::StateDelete(StateDeleteParams {
                key: "k".into(),
                request_id: None
            })
        );
    }

    #[test]
    fn state_and_cluster_parameters_are_checked_by_name() {
        let missing = rejected(r#"{"id":1,"method":"state.cas","params":{"key":"k","value":1}}"#);
        assert!(
            missing.error.message.contains("\"expected\""),
            "{missing:?}"
        );
        let no_value = rejected(r#"{"id":1,"method":"state.set","params":{"key":"k"}}"#);
        assert!(no_value.error.message.contains("\"value\""), "{no_value:?}");
        let empty_key = rejected(r#"{"id":1,"method":"state.get","params":{"key":""}}"#);
        assert!(empty_key.error.message.contains("\"key\""), "{empty_key:?}");
        for bad in ["bench/0/0", "a..b", ".a", "a b"] {
            let line =
                format!(r#"{{"id":1,"method":"state.set","params":{{"key":"{bad}","value":1}}}}"#);
            let refused = rejected(&line);
            assert!(
                refused.error.message.contains("dotted name"),
                "{bad}: {refused:?}"
            );
        }
        let consistency = rejected(
            r#"{"id":1,"method":"state.get","params":{"key":"k","consistency":"eventual"}}"#,
        );
        assert!(consistency.error.message.contains("linearizable"));
        let priority = rejected(
            r#"{"id":1,"method":"cluster.add","params":{"node_id":"n2","grpc":"h:1","priority":0}}"#,
        );
        assert!(priority.error.message.contains("\"priority\""));
        assert_eq!(
            ok(r#"{"id":1,"method":"state.get","params":{"key":"k","consistency":"local"}}"#)
                .method,
            Method::StateGet(StateGetParams {
                key: "k".into(),
                consistency: ReadConsistency::Local
            })
        );
    }

    #[test]
    fn every_method_decodes_with_its_parameters() {
        assert_eq!(
            ok(r#"{"id":"1","method":"status.get"}"#).method,
            Method::StatusGet(NoParams {})
        );
        assert_eq!(
            ok(r#"{"id":2,"method":"health.check","params":{}}"#).method,
            Method::HealthCheck(NoParams {})
        );
        assert_eq!(
            ok(
                r#"{"id":3,"method":"nodes.list","params":{"status_filter":["healthy","offline"]}}"#
            )
            .method,
            Method::NodesList(NodesListParams {
                status_filter: vec![NodeStatus::Healthy, NodeStatus::Offline]
            })
        );
        assert_eq!(
            ok(r#"{"id":4,"method":"nodes.get","params":{"node_id":"a"}}"#).method,
            Method::NodesGet(NodeIdParams {
                node_id: "a".into()
            })
        );
        let audit = ok(
            r#"{"id":5,"method":"audit.query","params":{"limit":10,"offset":20,
            "action_filter":["node.*","daemon.started"],"since":"2026-11-26T11:00:00+01:00"}}"#,
        );
        assert_eq!(
            audit.method,
            Method::AuditQuery(AuditQueryParams {
                limit: Some(10),
                offset: Some(20),
                action_filter: vec!["node.*".into(), "daemon.started".into()],
                since: Some("2026-11-26T10:00:00Z".parse().unwrap()),
            })
        );
    }

    #[test]
    fn absent_or_null_parameters_take_their_defaults() {
        let Method::AuditQuery(q) = ok(r#"{"id":1,"method":"audit.query","params":null}"#).method
        else {
            panic!("not an audit query");
        };
        assert_eq!(
            (q.limit(), q.offset(), q.action_filter.len(), q.since),
            (50, 0, 0, None)
        );
        let Method::AuditQuery(q) =
            ok(r#"{"method":"audit.query","params":{"since":null,"limit":null}}"#).method
        else {
            panic!("not an audit query");
        };
        assert_eq!((q.limit(), q.since), (50, None));
        assert_eq!(
            ok(r#"{"id":1,"method":"nodes.list"}"#).method,
            Method::NodesList(NodesListParams {
                status_filter: vec![]
            })
        );
    }

    #[test]
    fn the_id_is_echoed_as_sent_and_null_when_absent() {
        assert_eq!(ok(r#"{"id":"abc","method":"status.get"}"#).id, json!("abc"));
        assert_eq!(ok(r#"{"id":17,"method":"status.get"}"#).id, json!(17));
        assert_eq!(ok(r#"{"method":"status.get"}"#).id, Value::Null);
        assert_eq!(
            rejected(r#"{"id":[1],"method":"status.get"}"#).error.code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn bad_json_and_non_objects_are_invalid_requests_without_an_id() {
        for line in ["{", "not json", "[1,2]", "\"status.get\"", "\u{FFFD}"] {
            let r = rejected(line);
            assert_eq!(
                (r.error.code, &r.id),
                (ErrorCode::InvalidRequest, &Value::Null),
                "{line}"
            );
        }
        assert!(rejected("{").error.message.starts_with("invalid JSON"));
        assert!(decode(b"\xff\xfe{}").is_err(), "invalid UTF-8 is bad JSON");
    }

    #[test]
    fn a_missing_or_ill_typed_field_is_named_and_keeps_the_id() {
        let r = rejected(r#"{"id":"7","params":{}}"#);
        assert_eq!(
            (r.error.code, r.id),
            (ErrorCode::InvalidRequest, json!("7"))
        );
        assert!(
            r.error.message.contains("\"method\""),
            "{}",
            r.error.message
        );

        let r = rejected(r#"{"id":"8","method":"nodes.get","params":{}}"#);
        assert_eq!(
            r.error.message,
            "missing parameter \"node_id\" of nodes.get"
        );
        assert_eq!(r.method, Some(MethodKind::NodesGet));

        let r = rejected(r#"{"id":"9","method":"nodes.get","params":{"node_id":5}}"#);
        assert_eq!(
            r.error.message,
            "parameter \"node_id\" of nodes.get must be a string"
        );

        let r = rejected(r#"{"id":1,"method":"nodes.list","params":{"status_filter":"healthy"}}"#);
        assert!(
            r.error.message.contains("\"status_filter\""),
            "{}",
            r.error.message
        );

        let r = rejected(r#"{"id":1,"method":"nodes.list","params":[1]}"#);
        assert!(
            r.error.message.contains("\"params\""),
            "{}",
            r.error.message
        );
    }

    #[test]
    fn unknown_methods_fields_and_parameters_are_refused_by_name() {
        let r = rejected(r#"{"id":1,"method":"nodes.delete"}"#);
        assert_eq!(r.error.code, ErrorCode::MethodNotFound);
        assert!(
            r.error.message.contains("nodes.delete") && r.error.message.contains("audit.query")
        );

        let r = rejected(r#"{"id":1,"method":"status.get","extra":true}"#);
        assert!(r.error.message.contains("\"extra\""), "{}", r.error.message);

        let r = rejected(r#"{"id":1,"method":"nodes.list","params":{"status":["healthy"]}}"#);
        assert_eq!(
            r.error.message,
            "unknown parameter \"status\" of nodes.list (parameters: status_filter)"
        );

        let r = rejected(r#"{"id":1,"method":"status.get","params":{"verbose":true}}"#);
        assert_eq!(
            r.error.message,
            "unknown parameter \"verbose\": status.get takes no parameters"
        );
    }

    #[test]
    fn audit_parameters_are_bounded_and_checked() {
        for params in [
            r#"{"limit":1001}"#,
            r#"{"limit":-1}"#,
            r#"{"limit":2.5}"#,
            r#"{"offset":-5}"#,
            r#"{"since":"yesterday"}"#,
            r#"{"since":12}"#,
            r#"{"action_filter":["NODE.*"]}"#,
            r#"{"action_filter":["*"]}"#,
            r#"{"action_filter":["node.%"]}"#,
            r#"{"action_filter":[""]}"#,
        ] {
            let line = format!(r#"{{"id":1,"method":"audit.query","params":{params}}}"#);
            let r = rejected(&line);
            assert_eq!(r.error.code, ErrorCode::InvalidRequest, "{params}");
        }
        // The filter list and each name are bounded: every entry is a LIKE
        // pattern tried on every row read.
        let many: Vec<String> = (0..=MAX_ACTION_FILTERS)
            .map(|i| format!("a{i}.*"))
            .collect();
        let line = json!({"id":1,"method":"audit.query","params":{"action_filter":many}});
        let r = rejected(&line.to_string());
        assert_eq!(r.error.code, ErrorCode::InvalidRequest);
        assert!(
            r.error.message.contains("has 33 entries: at most 32"),
            "{}",
            r.error.message
        );
        let long = "a".repeat(MAX_ACTION_FILTER_LEN + 1);
        let line = json!({"id":1,"method":"audit.query","params":{"action_filter":[long]}});
        let r = rejected(&line.to_string());
        assert!(
            r.error.message.contains("at most 64 characters"),
            "{}",
            r.error.message
        );
        let most: Vec<String> = (0..MAX_ACTION_FILTERS).map(|i| format!("a{i}.*")).collect();
        let line = json!({"id":1,"method":"audit.query","params":{"action_filter":most}});
        assert!(
            matches!(
                decode(line.to_string().as_bytes()),
                Ok(Request { method: Method::AuditQuery(q), .. }) if q.action_filter.len() == MAX_ACTION_FILTERS
            ),
            "32 filters are taken"
        );
        let r = rejected(r#"{"id":1,"method":"audit.query","params":{"limit":5000}}"#);
        assert_eq!(
            r.error.message,
            "parameter \"limit\" of audit.query must be an integer from 0 to 1000"
        );
        let r = rejected(r#"{"id":1,"method":"audit.query","params":{"since":"yesterday"}}"#);
        assert!(r.error.message.contains("RFC 3339"), "{}", r.error.message);
        let r = rejected(r#"{"id":1,"method":"nodes.list","params":{"status_filter":["sick"]}}"#);
        assert!(r.error.message.contains("\"sick\"") && r.error.message.contains("unreachable"));
    }

    #[test]
    fn what_a_client_serialises_the_daemon_decodes_to_the_same_method() {
        let methods = [
            Method::StatusGet(NoParams {}),
            Method::NodesList(NodesListParams {
                status_filter: vec![NodeStatus::Degraded],
            }),
            Method::AuditQuery(AuditQueryParams {
                limit: Some(5),
                offset: None,
                action_filter: vec!["node.*".into()],
                since: Some("2026-11-26T10:00:00.5Z".parse().unwrap()),
            }),
            Method::ClusterAdd(ClusterAddParams {
                node_id: "n2".into(),
                grpc: "h:1".into(),
                priority: Some(60),
                witness: true,
            }),
            Method::StateCas(StateCasParams {
                key: "a.b".into(),
                expected: Value::Null,
                value: json!([1]),
                request_id: Some("r".into()),
            }),
        ];
        for method in methods {
            let mut line = serde_json::to_value(&method).unwrap();
            assert_eq!(line["method"], method.kind().as_str());
            line["id"] = json!(3);
            let decoded = ok(&line.to_string());
            assert_eq!((decoded.id, decoded.method), (json!(3), method));
        }
    }

    #[test]
    fn answers_are_one_line_with_both_members_present() {
        let mut out = Vec::new();
        encode_result(&json!("1"), &json!({"nodes": []}), &mut out);
        encode_error(
            &json!(2),
            &ErrorBody::new(ErrorCode::NodeNotFound, "no node \"x\""),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            first,
            json!({"id": "1", "result": {"nodes": []}, "error": null})
        );
        let second: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            second,
            json!({"id": 2, "result": null, "error": {"code": "NODE_NOT_FOUND", "message": "no node \"x\""}})
        );
        let parsed: Response = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(parsed.error.unwrap().code, "NODE_NOT_FOUND");
    }

    #[test]
    fn error_codes_are_spelled_as_documented() {
        let spelled: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let named: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(spelled, named);
        assert_eq!(
            named,
            [
                "INVALID_REQUEST",
                "METHOD_NOT_FOUND",
                "INTERNAL_ERROR",
                "NOT_CONNECTED",
                "NODE_NOT_FOUND",
                "PERMISSION_DENIED",
                "NO_QUORUM",
                "CAS_FAILED",
                "NOT_A_MEMBER",
                "UNKNOWN_OUTCOME"
            ]
        );
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
        }
        for (i, method) in MethodKind::ALL.iter().enumerate() {
            assert_eq!(method.index(), i);
            assert_eq!(MethodKind::from_name(method.as_str()), Some(*method));
        }
    }
}

/// Random and mutated request lines: the decoder never panics, and every
/// refusal says what was wrong.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,14}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Parameter names the methods take, and some they do not.
    fn param_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "status_filter",
                "node_id",
                "limit",
                "offset",
                "action_filter",
                "since",
                "key",
                "value",
                "expected",
                "request_id",
                "prefix",
                "consistency",
                "grpc",
                "priority",
                "witness",
            ])
            .prop_map(str::to_string),
            "[a-z_]{1,12}",
        ]
    }

    fn check(line: &[u8]) -> Result<(), TestCaseError> {
        if let Err(r) = decode(line) {
            prop_assert!(
                !r.error.message.trim().is_empty(),
                "empty message for {:?}",
                String::from_utf8_lossy(line)
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_give_a_request_or_a_reason(line in prop::collection::vec(any::<u8>(), 0..300)) {
            check(&line)?;
        }

        #[test]
        fn any_parameters_of_every_method_give_a_request_or_a_reason_naming_the_method(
            method in prop::sample::select(MethodKind::ALL.to_vec()),
            params in prop::collection::btree_map(param_name(), value(), 0..5),
        ) {
            let line = json!({"id": 7, "method": method.as_str(), "params": params}).to_string();
            match decode(line.as_bytes()) {
                Ok(request) => prop_assert_eq!(request.id, json!(7)),
                Err(r) => {
                    prop_assert_eq!(r.id, json!(7), "the id is echoed");
                    prop_assert_eq!(r.method, Some(method));
                    prop_assert_eq!(r.error.code, ErrorCode::InvalidRequest);
                    prop_assert!(
                        r.error.message.contains(method.as_str()),
                        "{} does not name {}", r.error.message, method.as_str()
                    );
                }
            }
        }

        #[test]
        fn mutated_valid_lines_give_a_request_or_a_reason(
            which in 0usize..4,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let valid = [
                r#"{"id":1,"method":"audit.query","params":{"limit":5,"action_filter":["node.*"],"since":"2026-11-26T10:00:00Z"}}"#,
                r#"{"id":"a","method":"state.cas","params":{"key":"k","expected":1,"value":{"x":[1,2]},"request_id":"r1"}}"#,
                r#"{"id":2,"method":"nodes.list","params":{"status_filter":["healthy"]}}"#,
                r#"{"id":3,"method":"cluster.add","params":{"node_id":"n2","grpc":"10.0.0.2:5433","priority":60}}"#,
            ];
            let mut line = valid[which].as_bytes().to_vec();
            for (at, byte) in edits {
                let i = at.index(line.len());
                line[i] = byte;
            }
            check(&line)?;
        }
    }
}
