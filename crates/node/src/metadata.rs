//! The node's metadata client, and `MetadataProxySvc`, which serves metadata operations
//! through it (so `restatectl metadata …` works whatever store the cluster uses).

use std::sync::Arc;

use restate_config::{Configuration, MetadataClientKind};
use restate_metadata_store::proto_conv;
use restate_metadata_store::{MetadataClient, ReplicatedStoreClient};
use restate_proto::metadata as pb;
use restate_proto::metadata::metadata_proxy_svc_server::MetadataProxySvc;
use restate_types::Role;
use tonic::{Request, Response, Status};

/// Builds the metadata client for `[metadata-client]`.
pub(crate) async fn create_client(
    config: &Configuration,
) -> Result<(MetadataClient, Option<Arc<ReplicatedStoreClient>>), String> {
    let options = &config.metadata_client;
    let limit = options
        .message_size_limit
        .unwrap_or(config.networking.message_size_limit)
        .0 as usize;
    match options.kind {
        MetadataClientKind::Replicated => {
            let mut addresses = Vec::new();
            if config.has_role(Role::MetadataServer) {
                addresses.push(config.advertised_address().to_string());
            }
            addresses.extend(options.addresses.iter().cloned());
            let client = Arc::new(ReplicatedStoreClient::new(
                &config.cluster_name,
                addresses,
                options.connect_timeout,
                options.request_timeout,
            ));
            Ok((MetadataClient::new(client.clone(), limit), Some(client)))
        }
        _ => {
            let store = restate_metadata_providers::connect(options)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no client for `[metadata-client] type = \"{}\"`", options.kind.as_str()))?;
            tracing::info!(store = store.kind(), "connected to the metadata store");
            Ok((MetadataClient::new(store, limit), None))
        }
    }
}

/// `MetadataProxySvc` over the node's own metadata client.
pub(crate) struct MetadataProxy {
    pub(crate) cluster_name: String,
    pub(crate) client: MetadataClient,
}

impl MetadataProxy {
    fn check(&self, cluster: Option<&pb::ClusterIdentity>) -> Result<(), Status> {
        match cluster {
            Some(cluster) if !cluster.cluster_name.is_empty() && cluster.cluster_name != self.cluster_name => {
                Err(Status::permission_denied(format!(
                    "this node belongs to cluster `{}`, but the request is for cluster `{}`",
                    self.cluster_name, cluster.cluster_name
                )))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl MetadataProxySvc for MetadataProxy {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        self.check(request.cluster.as_ref())?;
        let value = self
            .client
            .get(&request.key)
            .await
            .map_err(proto_conv::read_error_to_status)?;
        Ok(Response::new(pb::GetResponse {
            value: value.map(proto_conv::value_to_proto),
            write_id: 0,
        }))
    }

    async fn get_version(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetVersionResponse>, Status> {
        let request = request.into_inner();
        self.check(request.cluster.as_ref())?;
        let version = self
            .client
            .get_version(&request.key)
            .await
            .map_err(proto_conv::read_error_to_status)?;
        Ok(Response::new(pb::GetVersionResponse {
            version: version.map(|v| v.0),
        }))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        self.check(request.cluster.as_ref())?;
        restate_types::metadata::validate_key(&request.key).map_err(Status::invalid_argument)?;
        let value = proto_conv::value_from_proto(request.value)?;
        let precondition = proto_conv::precondition_from_proto(request.precondition)?;
        self.client
            .put(&request.key, value, precondition)
            .await
            .map_err(proto_conv::write_error_to_status)?;
        Ok(Response::new(pb::PutResponse {}))
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let request = request.into_inner();
        self.check(request.cluster.as_ref())?;
        let keys = self
            .client
            .store()
            .keys()
            .await
            .map_err(proto_conv::read_error_to_status)?;
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        self.check(request.cluster.as_ref())?;
        let precondition = proto_conv::precondition_from_proto(request.precondition)?;
        self.client
            .delete(&request.key, precondition)
            .await
            .map_err(proto_conv::write_error_to_status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}
