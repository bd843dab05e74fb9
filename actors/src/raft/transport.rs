//! Raft messages over gRPC: the sending side of `steep.repl.v1.Raft`.
//!
//! One lazily connected tonic channel per member address, over the same
//! mutual TLS as every peer call. Every message carries the identity
//! envelope (cluster id, our node_id and Raft id, the Raft id it is meant
//! for) that the receiver checks (`steep_repl_consensus::admission`). Calls
//! run on the Raft runtime, whichever thread asks, so that Raft traffic
//! never waits for the actors' thread.

use crate::peer_tls::{ConnectOptions, PeerTransport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steep_repl_consensus::network::{RaftTransport, RpcKind, TransportError};
use steep_repl_consensus::{Member, RaftId, StoreIdentity};
use steep_repl_proto::raft_client::RaftClient;
use steep_repl_proto::{JoinReply, JoinRequest, RaftMessage};
use tonic::transport::Channel;

/// Largest Raft message accepted or sent (snapshot chunks are smaller).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Who this node is in its messages.
#[derive(Clone)]
pub struct Sender {
    pub node_id: String,
    /// The store's identity; its cluster id changes on init and join.
    pub identity: Arc<Mutex<StoreIdentity>>,
}

#[derive(Clone)]
pub struct GrpcRaftTransport {
    inner: Arc<Inner>,
}

struct Inner {
    peers: PeerTransport,
    sender: Sender,
    runtime: tokio::runtime::Handle,
    channels: Mutex<HashMap<String, Channel>>,
    connect_timeout: Duration,
}

/// Splits `host:port` (`[v6]:port` too).
pub fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

impl GrpcRaftTransport {
    /// `runtime` is where calls run (the Raft runtime).
    pub fn new(
        peers: PeerTransport,
        sender: Sender,
        runtime: tokio::runtime::Handle,
        connect_timeout: Duration,
    ) -> Self {
        GrpcRaftTransport {
            inner: Arc::new(Inner {
                peers,
                sender,
                runtime,
                channels: Mutex::new(HashMap::new()),
                connect_timeout,
            }),
        }
    }

    /// The channel to `address`, created on first use. Must run on the
    /// Raft runtime: the channel's worker task is spawned where it is made.
    fn channel(&self, address: &str) -> Result<Channel, TransportError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .map_err(|_| TransportError::Unreachable("channel table poisoned".into()))?;
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let (host, port) = split_address(address).ok_or_else(|| {
            TransportError::Unreachable(format!("{address:?} is not a host:port address"))
        })?;
        let options = ConnectOptions {
            connect_timeout: self.inner.connect_timeout,
            ..Default::default()
        };
        let channel = self
            .inner
            .peers
            .connect_lazy(&host, port, &options)
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    fn envelope(&self, to_raft_id: RaftId, kind: RpcKind, payload: Vec<u8>) -> RaftMessage {
        let (raft_id, cluster_id) = match self.inner.sender.identity.lock() {
            Ok(identity) => (identity.raft_id, identity.cluster_id.clone()),
            Err(poisoned) => {
                let identity = poisoned.into_inner();
                (identity.raft_id, identity.cluster_id.clone())
            }
        };
        RaftMessage {
            cluster_id: cluster_id.unwrap_or_default(),
            from_node_id: self.inner.sender.node_id.clone(),
            from_raft_id: raft_id,
            to_raft_id,
            kind: kind.as_str().to_string(),
            payload,
        }
    }

    /// Asks the node at `address` to join the cluster (`cluster add`).
    pub async fn join(
        &self,
        address: &str,
        request: JoinRequest,
        timeout: Duration,
    ) -> Result<JoinReply, tonic::Status> {
        let this = self.clone();
        let address = address.to_string();
        let call = async move {
            let channel = this
                .channel(&address)
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut client = RaftClient::new(channel);
            match tokio::time::timeout(timeout, client.join(request)).await {
                Ok(reply) => reply.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "{address} did not answer within {timeout:?}"
                ))),
            }
        };
        self.inner
            .runtime
            .spawn(call)
            .await
            .unwrap_or_else(|e| Err(tonic::Status::internal(e.to_string())))
    }
}

/// Whether a failed call certainly never reached the receiver's handler.
fn never_delivered(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (status.message().contains("connect") || status.message().contains("dns"))
}

impl RaftTransport for GrpcRaftTransport {
    fn call(
        &self,
        target: RaftId,
        member: &Member,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let this = self.clone();
        let address = member.grpc.clone();
        let call = async move {
            let channel = this.channel(&address)?;
            let message = this.envelope(target, kind, payload);
            let mut client = RaftClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            match tokio::time::timeout(timeout, client.call(message)).await {
                Err(_) => Err(TransportError::Timeout(timeout)),
                Ok(Ok(reply)) => Ok(reply.into_inner().payload),
                Ok(Err(status)) if status.code() == tonic::Code::PermissionDenied => {
                    Err(TransportError::Refused(status.message().to_string()))
                }
                Ok(Err(status)) if never_delivered(&status) => Err(TransportError::Unreachable(
                    format!("{address}: {}", status.message()),
                )),
                // Reset mid-call: it may have been acted on.
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                    Err(TransportError::Timeout(timeout))
                }
                Ok(Err(status)) => Err(TransportError::Refused(format!(
                    "{address}: {}: {}",
                    status.code(),
                    status.message()
                ))),
            }
        };
        let runtime = self.inner.runtime.clone();
        async move {
            runtime
                .spawn(call)
                .await
                .unwrap_or_else(|e| Err(TransportError::Unreachable(e.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("db1:5433"), Some(("db1".into(), 5433)));
        assert_eq!(split_address("[::1]:5433"), Some(("::1".into(), 5433)));
        assert_eq!(split_address("db1"), None);
        assert_eq!(split_address("db1:0"), None);
        assert_eq!(split_address(":5433"), None);
    }
}
