"""Drives steep.repl.v1.Coordinator from another gRPC stack (Python grpcio),
over mutual TLS, with code generated from our repl.proto at run time.

Usage: interop.py PROTO_DIR HOST:PORT CA_FILE CERT_FILE KEY_FILE
Prints one JSON document with what the server answered.
"""

import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def main() -> int:
    proto_dir, target, ca_file, cert_file, key_file = sys.argv[1:6]
    out = tempfile.mkdtemp(prefix="steep-interop-")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "steep/repl/v1/repl.proto",
    ])
    if status != 0:
        print(f"protoc failed with {status}", file=sys.stderr)
        return 2
    sys.path.insert(0, out)
    from steep.repl.v1 import repl_pb2, repl_pb2_grpc  # noqa: E402 (generated above)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )
    with grpc.secure_channel(target, credentials) as channel:
        stub = repl_pb2_grpc.CoordinatorStub(channel)
        health = stub.HealthCheck(repl_pb2.HealthCheckRequest(), timeout=10)
        nodes = stub.GetNodes(repl_pb2.GetNodesRequest(), timeout=10)
        healthy_only = stub.GetNodes(repl_pb2.GetNodesRequest(status_filter=["healthy"]), timeout=10)
    print(json.dumps({
        "status": repl_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
        "node_id": health.node_id,
        "version": health.version,
        "uptime_since": health.uptime_since.seconds,
        "components": {name: c.healthy for name, c in health.components.items()},
        "nodes": [
            {"node_id": n.node_id, "status": n.status, "priority": n.priority,
             "grpc_port": n.grpc_port, "is_coordinator": n.is_coordinator}
            for n in nodes.nodes
        ],
        "healthy_nodes": [n.node_id for n in healthy_only.nodes],
        "coordinator_id": nodes.coordinator_id,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
