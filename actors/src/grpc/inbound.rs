//! What peers send, checked before anything uses it: the requests served
//! here and the answers of the peers this node asks. Every refusal names
//! the field that was wrong (as the `.proto` spells it) and what it must
//! be; the service answers it with INVALID_ARGUMENT.

use crate::node_status::NodeStatus as RegistryStatus;
use steep_repl_proto::{
    GetNodesRequest, HealthCheckResponse, HeartbeatRequest, NodeStatus, RegisterNodeRequest,
};

/// A field of a message that is not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The field, dotted into nested messages, with `[i]` for list items.
    pub field: String,
    /// What it must be, and what it was when that is short enough to say.
    pub problem: String,
}

impl FieldError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<FieldError> for tonic::Status {
    fn from(e: FieldError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// The longest text field (names, hosts, versions) a peer may send.
pub const MAX_TEXT: usize = 255;
/// A node_id as the configuration allows it: 1-63 characters from A-Z,
/// a-z, 0-9, '.', '_' and '-'.
pub fn node_id(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.len() > 63 {
        return Err(FieldError::new(
            field,
            format!("must be at most 63 characters, got {}", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("may hold only A-Z, a-z, 0-9, '.', '_' and '-', got {c:?}"),
        ));
    }
    Ok(value.to_string())
}

/// Free text (a name, a version): at most `MAX_TEXT` bytes, no control
/// characters (it reaches logs and terminals).
fn text(field: &str, value: &str) -> Result<String, FieldError> {
    if value.len() > MAX_TEXT {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_TEXT} bytes, got {}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not hold control characters"));
    }
    Ok(value.to_string())
}

/// A host name or address: `text`, without blanks.
fn host(field: &str, value: &str, required: bool) -> Result<String, FieldError> {
    if value.is_empty() && required {
        return Err(FieldError::new(field, "is required"));
    }
    let value = text(field, value)?;
    if value.chars().any(char::is_whitespace) {
        return Err(FieldError::new(field, "must not hold blanks"));
    }
    Ok(value)
}

fn port(field: &str, value: i32, zero_allowed: bool) -> Result<u16, FieldError> {
    let low = if zero_allowed { 0 } else { 1 };
    match u16::try_from(value) {
        Ok(p) if i32::from(p) >= low => Ok(p),
        _ => Err(FieldError::new(
            field,
            format!("must be a port {low}-65535, got {value}"),
        )),
    }
}

/// A heartbeat, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub node_id: String,
    /// `None` when the sender reported no status.
    pub status: Option<ReportedStatus>,
}

/// What a peer reports about itself in a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedStatus {
    pub postgresql_connected: bool,
    pub postgresql_version: String,
    pub memory_used_bytes: u64,
}

pub fn heartbeat(request: &HeartbeatRequest) -> Result<Heartbeat, FieldError> {
    Ok(Heartbeat {
        node_id: node_id("node_id", &request.node_id)?,
        status: request
            .node_status
            .as_ref()
            .map(reported_status)
            .transpose()?,
    })
}

fn reported_status(s: &NodeStatus) -> Result<ReportedStatus, FieldError> {
    let memory_used_bytes = u64::try_from(s.memory_used_bytes).map_err(|_| {
        FieldError::new(
            "node_status.memory_used_bytes",
            format!("must not be negative, got {}", s.memory_used_bytes),
        )
    })?;
    Ok(ReportedStatus {
        postgresql_connected: s.postgresql_connected,
        postgresql_version: text("node_status.postgresql_version", &s.postgresql_version)?,
        memory_used_bytes,
    })
}

/// The node a RegisterNode request describes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub node_id: String,
    pub node_name: String,
    pub host: String,
    pub port: u16,
    pub priority: u8,
    /// Empty when the caller did not say.
    pub grpc_host: String,
    /// 0 when the caller did not say.
    pub grpc_port: u16,
}

pub fn register_node(request: &RegisterNodeRequest) -> Result<Announcement, FieldError> {
    let priority = u8::try_from(request.priority)
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| {
            FieldError::new(
                "priority",
                format!("must be a priority 1-100, got {}", request.priority),
            )
        })?;
    Ok(Announcement {
        node_id: node_id("node_id", &request.node_id)?,
        node_name: text("node_name", &request.node_name)?,
        host: host("host", &request.host, true)?,
        port: port("port", request.port, false)?,
        priority,
        grpc_host: host("grpc_host", &request.grpc_host, false)?,
        grpc_port: port("grpc_port", request.grpc_port, true)?,
    })
}

/// A GetNodes filter: registry statuses only, each at most once (so the
/// list is bounded by the number of statuses).
pub fn status_filter(request: &GetNodesRequest) -> Result<Vec<RegistryStatus>, FieldError> {
    let filter = &request.status_filter;
    if filter.len() > RegistryStatus::ALL.len() {
        return Err(FieldError::new(
            "status_filter",
            format!(
                "must list at most {} statuses, got {}",
                RegistryStatus::ALL.len(),
                filter.len()
            ),
        ));
    }
    let mut seen = Vec::with_capacity(filter.len());
    for (i, status) in filter.iter().enumerate() {
        let field = format!("status_filter[{i}]");
        let Ok(parsed) = status.parse::<RegistryStatus>() else {
            let shown: String = status.chars().take(40).collect();
            return Err(FieldError::new(
                field,
                format!(
                    "must be one of {}, got {shown:?}",
                    RegistryStatus::ALL.map(RegistryStatus::as_str).join(", ")
                ),
            ));
        };
        if seen.contains(&parsed) {
            return Err(FieldError::new(field, format!("repeats {status:?}")));
        }
        seen.push(parsed);
    }
    Ok(seen)
}

/// Who a peer says it is when first asked (its HealthCheck answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub node_id: String,
    pub postgresql_ok: bool,
}

pub fn identified(answer: &HealthCheckResponse) -> Result<Identified, FieldError> {
    Ok(Identified {
        node_id: node_id("node_id", &answer.node_id)?,
        postgresql_ok: answer
            .components
            .get("postgresql")
            .is_some_and(|c| c.healthy),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement() -> RegisterNodeRequest {
        RegisterNodeRequest {
            node_id: "node-2".into(),
            node_name: "Node 2".into(),
            host: "db2.example".into(),
            port: 5432,
            priority: 50,
            grpc_host: "10.0.0.2".into(),
            grpc_port: 5433,
        }
    }

    #[test]
    fn a_well_formed_announcement_passes() {
        let a = register_node(&announcement()).unwrap();
        assert_eq!((a.port, a.priority, a.grpc_port), (5432, 50, 5433));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(RegisterNodeRequest, &str)> = vec![
            (
                RegisterNodeRequest {
                    port: 70_000,
                    ..announcement()
                },
                "port: must be a port 1-65535, got 70000",
            ),
            (
                RegisterNodeRequest {
                    port: 0,
                    ..announcement()
                },
                "port: must be a port 1-65535, got 0",
            ),
            (
                RegisterNodeRequest {
                    grpc_port: -1,
                    ..announcement()
                },
                "grpc_port: must be a port 0-65535, got -1",
            ),
            (
                RegisterNodeRequest {
                    priority: 101,
                    ..announcement()
                },
                "priority: must be a priority 1-100, got 101",
            ),
            (
                RegisterNodeRequest {
                    node_id: String::new(),
                    ..announcement()
                },
                "node_id: is required",
            ),
            (
                RegisterNodeRequest {
                    node_id: "a b".into(),
                    ..announcement()
                },
                "node_id: may hold only A-Z, a-z, 0-9, '.', '_' and '-', got ' '",
            ),
            (
                RegisterNodeRequest {
                    node_name: "x\u{1b}[2J".into(),
                    ..announcement()
                },
                "node_name: must not hold control characters",
            ),
            (
                RegisterNodeRequest {
                    host: "h".repeat(300),
                    ..announcement()
                },
                "host: must be at most 255 bytes, got 300",
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(register_node(&request).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn a_status_filter_is_bounded_to_the_registry_statuses() {
        let of = |v: &[&str]| GetNodesRequest {
            status_filter: v.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            status_filter(&of(&["healthy", "offline"])).unwrap().len(),
            2
        );
        assert_eq!(
            status_filter(&of(&["healthy", "bogus"])).unwrap_err().field,
            "status_filter[1]"
        );
        assert_eq!(
            status_filter(&of(&["healthy", "healthy"]))
                .unwrap_err()
                .to_string(),
            "status_filter[1]: repeats \"healthy\""
        );
        assert_eq!(
            status_filter(&of(&["healthy"; 1000]))
                .unwrap_err()
                .to_string(),
            "status_filter: must list at most 5 statuses, got 1000"
        );
    }

    #[test]
    fn a_heartbeat_status_is_checked() {
        let beat = |s: NodeStatus| HeartbeatRequest {
            node_id: "n1".into(),
            node_status: Some(s),
        };
        let err = heartbeat(&beat(NodeStatus {
            memory_used_bytes: -1,
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err.field, "node_status.memory_used_bytes");
        let ok = heartbeat(&beat(NodeStatus {
            postgresql_connected: true,
            postgresql_version: "18.1".into(),
            memory_used_bytes: 1 << 30,
        }))
        .unwrap();
        assert!(ok.status.unwrap().postgresql_connected);
    }
}

/// Property tests: random and mutated messages (and random bytes decoded
/// as messages) never panic, and every refusal names a field the message
/// has and says what it must be.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;
    use steep_repl_proto::ComponentHealth;

    /// Texts that hit the edges: empty, valid ids, too long, control
    /// characters, blanks, any Unicode.
    fn text_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[A-Za-z0-9._-]{1,63}",
            "[a-z]{60,70}",
            ".{0,40}",
            "[ \\t\\x00-\\x1f\\x7f]{1,4}",
            (0usize..2000).prop_map(|n| "x".repeat(n)),
            any::<String>(),
        ]
    }

    fn int_value() -> impl Strategy<Value = i32> {
        prop_oneof![
            Just(0),
            Just(-1),
            Just(65_535),
            Just(65_536),
            Just(i32::MIN),
            Just(i32::MAX),
            0..=101,
            any::<i32>(),
        ]
    }

    fn register() -> impl Strategy<Value = RegisterNodeRequest> {
        (
            text_value(),
            text_value(),
            text_value(),
            int_value(),
            int_value(),
            text_value(),
            int_value(),
        )
            .prop_map(
                |(node_id, node_name, host, port, priority, grpc_host, grpc_port)| {
                    RegisterNodeRequest {
                        node_id,
                        node_name,
                        host,
                        port,
                        priority,
                        grpc_host,
                        grpc_port,
                    }
                },
            )
    }

    fn status() -> impl Strategy<Value = NodeStatus> {
        (any::<bool>(), text_value(), any::<i64>()).prop_map(
            |(postgresql_connected, postgresql_version, memory_used_bytes)| NodeStatus {
                postgresql_connected,
                postgresql_version,
                memory_used_bytes,
            },
        )
    }

    fn beat() -> impl Strategy<Value = HeartbeatRequest> {
        (text_value(), prop::option::of(status())).prop_map(|(node_id, node_status)| {
            HeartbeatRequest {
                node_id,
                node_status,
            }
        })
    }

    fn filter() -> impl Strategy<Value = GetNodesRequest> {
        let item = prop_oneof![
            prop::sample::select(RegistryStatus::ALL.to_vec()).prop_map(|s| s.as_str().to_string()),
            text_value(),
        ];
        prop::collection::vec(item, 0..12)
            .prop_map(|status_filter| GetNodesRequest { status_filter })
    }

    fn answer() -> impl Strategy<Value = HealthCheckResponse> {
        (
            text_value(),
            prop::collection::btree_map(
                prop_oneof![Just("postgresql".to_string()), text_value()],
                any::<bool>(),
                0..4,
            ),
        )
            .prop_map(|(node_id, components)| HealthCheckResponse {
                node_id,
                components: components
                    .into_iter()
                    .map(|(name, healthy)| {
                        (
                            name,
                            ComponentHealth {
                                healthy,
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
                ..Default::default()
            })
    }

    /// The refusal names one of `fields` (a prefix before `[` or `.` counts
    /// for list items and nested messages) and says something.
    fn names_a_field(e: &FieldError, fields: &[&str]) -> Result<(), TestCaseError> {
        let base = e.field.split(['[', '.']).next().unwrap_or_default();
        prop_assert!(
            fields.contains(&base),
            "{:?} names no field of the message",
            e.field
        );
        prop_assert!(!e.problem.trim().is_empty(), "{e:?} says nothing");
        prop_assert!(e.to_string().starts_with(&e.field));
        Ok(())
    }

    const REGISTER_FIELDS: [&str; 7] = [
        "node_id",
        "node_name",
        "host",
        "port",
        "priority",
        "grpc_host",
        "grpc_port",
    ];

    /// Flips, drops or inserts a few bytes of an encoded message.
    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, value, op) in edits {
            if bytes.is_empty() {
                bytes.push(value);
                continue;
            }
            let i = at % bytes.len();
            match op % 3 {
                0 => bytes[i] ^= value,
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, value),
            }
        }
        bytes
    }

    fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_announcement_is_accepted_or_refused_naming_its_field(r in register()) {
            match register_node(&r) {
                Ok(a) => {
                    prop_assert!((1..=100).contains(&a.priority));
                    prop_assert!(a.port >= 1);
                    prop_assert_eq!(a.node_id, r.node_id);
                }
                Err(e) => names_a_field(&e, &REGISTER_FIELDS)?,
            }
        }

        #[test]
        fn any_heartbeat_is_accepted_or_refused_naming_its_field(b in beat()) {
            match heartbeat(&b) {
                Ok(h) => {
                    prop_assert!((1..=63).contains(&h.node_id.len()));
                    if let Some(s) = h.status {
                        prop_assert!(i64::try_from(s.memory_used_bytes).is_ok());
                    }
                }
                Err(e) => names_a_field(&e, &["node_id", "node_status"])?,
            }
        }

        #[test]
        fn any_status_filter_is_accepted_or_refused_naming_its_item(f in filter()) {
            match status_filter(&f) {
                Ok(list) => prop_assert!(list.len() <= RegistryStatus::ALL.len()),
                Err(e) => names_a_field(&e, &["status_filter"])?,
            }
        }

        #[test]
        fn any_identification_is_accepted_or_refused_naming_its_field(a in answer()) {
            match identified(&a) {
                Ok(i) => prop_assert_eq!(i.node_id, a.node_id),
                Err(e) => names_a_field(&e, &["node_id"])?,
            }
        }

        #[test]
        fn mutated_encodings_decode_to_an_error_or_a_checked_message(
            r in register(), b in beat(), f in filter(), a in answer(), ed in edits()
        ) {
            if let Ok(r) = RegisterNodeRequest::decode(mutate(r.encode_to_vec(), &ed).as_slice()) {
                if let Err(e) = register_node(&r) { names_a_field(&e, &REGISTER_FIELDS)?; }
            }
            if let Ok(b) = HeartbeatRequest::decode(mutate(b.encode_to_vec(), &ed).as_slice()) {
                if let Err(e) = heartbeat(&b) { names_a_field(&e, &["node_id", "node_status"])?; }
            }
            if let Ok(f) = GetNodesRequest::decode(mutate(f.encode_to_vec(), &ed).as_slice()) {
                if let Err(e) = status_filter(&f) { names_a_field(&e, &["status_filter"])?; }
            }
            if let Ok(a) = HealthCheckResponse::decode(mutate(a.encode_to_vec(), &ed).as_slice()) {
                if let Err(e) = identified(&a) { names_a_field(&e, &["node_id"])?; }
            }
        }

        #[test]
        fn random_bytes_decode_to_an_error_or_a_checked_message(
            bytes in prop::collection::vec(any::<u8>(), 0..400)
        ) {
            if let Ok(r) = RegisterNodeRequest::decode(bytes.as_slice()) {
                if let Err(e) = register_node(&r) { names_a_field(&e, &REGISTER_FIELDS)?; }
            }
            if let Ok(b) = HeartbeatRequest::decode(bytes.as_slice()) {
                if let Err(e) = heartbeat(&b) { names_a_field(&e, &["node_id", "node_status"])?; }
            }
            if let Ok(f) = GetNodesRequest::decode(bytes.as_slice()) {
                if let Err(e) = status_filter(&f) { names_a_field(&e, &["status_filter"])?; }
            }
            if let Ok(a) = HealthCheckResponse::decode(bytes.as_slice()) {
                if let Err(e) = identified(&a) { names_a_field(&e, &["node_id"])?; }
            }
        }
    }
}
