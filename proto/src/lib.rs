//! `steep.repl.v1`: the gRPC contract between steep-repl daemons.
//!
//! This crate owns `proto/steep/repl/v1/repl.proto` and `raft.proto` and the
//! code tonic and prost generate from them at build time: the messages, the
//! `Coordinator` client (`coordinator_client::CoordinatorClient`) and server
//! (`coordinator_server::{Coordinator, CoordinatorServer}`), and the `Raft`
//! transport between members (`raft_client`, `raft_server`). It knows nothing
//! of actors or TLS; `steep-repl-actors` builds on it.
//!
//! The field numbers are a wire contract with other implementations: see the
//! comments in the .proto file, which also become the docs of the generated
//! types.

/// The protobuf package every message and service of this crate lives in.
pub const PACKAGE: &str = "steep.repl.v1";

/// The fully qualified name of the Coordinator service, as it appears in
/// request paths and in the standard health service.
pub const COORDINATOR_SERVICE: &str = "steep.repl.v1.Coordinator";

/// The fully qualified name of the Raft transport service.
pub const RAFT_SERVICE: &str = "steep.repl.v1.Raft";

/// The generated code of package `steep.repl.v1`.
pub mod v1 {
    tonic::include_proto!("steep.repl.v1");
}

pub use v1::*;

/// The encoded `FileDescriptorSet` of `repl.proto` (with its imports), for
/// gRPC reflection or for stacks that build their code from descriptors.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/steep_repl_v1_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_describes_the_coordinator_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("the build script wrote a valid descriptor set");
        let file = set
            .file
            .iter()
            .find(|f| f.package() == PACKAGE && f.name().ends_with("repl.proto"))
            .expect("repl.proto is in the set");
        let service = &file.service[0];
        assert_eq!(service.name(), "Coordinator");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            ["HealthCheck", "RegisterNode", "GetNodes", "Heartbeat"]
        );
    }

    #[test]
    fn field_numbers_match_the_wire_contract() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter()
            .find(|f| f.package() == PACKAGE && f.name().ends_with("repl.proto"))
            .unwrap();
        let numbers = |message: &str| -> Vec<(String, i32)> {
            let m = file
                .message_type
                .iter()
                .find(|m| m.name() == message)
                .unwrap_or_else(|| panic!("message {message} exists"));
            m.field
                .iter()
                .map(|f| (f.name().to_owned(), f.number()))
                .collect()
        };
        let expect = |pairs: &[(&str, i32)]| -> Vec<(String, i32)> {
            pairs.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect()
        };
        assert_eq!(numbers("HealthCheckRequest"), expect(&[("service", 1)]));
        assert_eq!(
            numbers("HealthCheckResponse"),
            expect(&[
                ("status", 1),
                ("components", 2),
                ("node_id", 3),
                ("node_name", 4),
                ("version", 5),
                ("uptime_since", 6),
                ("coordinator_id", 7),
                ("coordinator_epoch", 8),
                ("witness", 9)
            ])
        );
        assert_eq!(
            numbers("ComponentHealth"),
            expect(&[("healthy", 1), ("status", 2), ("message", 3)])
        );
        assert_eq!(
            numbers("RegisterNodeRequest"),
            expect(&[
                ("node_id", 1),
                ("node_name", 2),
                ("host", 3),
                ("port", 4),
                ("priority", 5),
                ("grpc_host", 6),
                ("grpc_port", 7)
            ])
        );
        assert_eq!(
            numbers("RegisterNodeResponse"),
            expect(&[
                ("success", 1),
                ("error", 2),
                ("nodes", 3),
                ("coordinator_id", 4),
                ("coordinator_epoch", 5)
            ])
        );
        assert_eq!(numbers("GetNodesRequest"), expect(&[("status_filter", 1)]));
        assert_eq!(
            numbers("GetNodesResponse"),
            expect(&[
                ("nodes", 1),
                ("coordinator_id", 2),
                ("coordinator_epoch", 3)
            ])
        );
        assert_eq!(
            numbers("NodeInfo"),
            expect(&[
                ("node_id", 1),
                ("node_name", 2),
                ("host", 3),
                ("port", 4),
                ("priority", 5),
                ("is_coordinator", 6),
                ("last_seen", 7),
                ("status", 8),
                ("grpc_host", 9),
                ("grpc_port", 10),
                ("coordinator_epoch", 11),
                ("role", 12)
            ])
        );
        assert_eq!(
            numbers("HeartbeatRequest"),
            expect(&[("node_id", 1), ("node_status", 2)])
        );
        assert_eq!(
            numbers("NodeStatus"),
            expect(&[
                ("postgresql_connected", 1),
                ("postgresql_version", 2),
                ("memory_used_bytes", 3)
            ])
        );
        assert_eq!(
            numbers("HeartbeatResponse"),
            expect(&[
                ("acknowledged", 1),
                ("coordinator_id", 2),
                ("updated_nodes", 3),
                ("coordinator_epoch", 4)
            ])
        );
    }

    #[test]
    fn the_raft_service_keeps_its_methods_and_field_numbers() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter()
            .find(|f| f.name().ends_with("raft.proto"))
            .expect("raft.proto is in the set");
        let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Call", "Join"]);
        let message = file
            .message_type
            .iter()
            .find(|m| m.name() == "RaftMessage")
            .unwrap();
        let fields: Vec<(&str, i32)> = message
            .field
            .iter()
            .map(|f| (f.name(), f.number()))
            .collect();
        assert_eq!(
            fields,
            [
                ("cluster_id", 1),
                ("from_node_id", 2),
                ("from_raft_id", 3),
                ("to_raft_id", 4),
                ("kind", 5),
                ("payload", 6)
            ]
        );
    }

    #[test]
    fn serving_status_values_match_the_wire_contract() {
        use health_check_response::ServingStatus;
        assert_eq!(ServingStatus::Unknown as i32, 0);
        assert_eq!(ServingStatus::Serving as i32, 1);
        assert_eq!(ServingStatus::NotServing as i32, 2);
    }

    #[test]
    fn a_register_request_round_trips_through_the_wire_encoding() {
        let request = RegisterNodeRequest {
            node_id: "node-a".into(),
            node_name: "Node A".into(),
            host: "10.0.0.1".into(),
            port: 5432,
            priority: 50,
            grpc_host: "10.0.0.1".into(),
            grpc_port: 5433,
        };
        let bytes = request.encode_to_vec();
        assert_eq!(
            RegisterNodeRequest::decode(bytes.as_slice()).unwrap(),
            request
        );
    }
}
