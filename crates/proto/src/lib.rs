//! Generated gRPC types and services for every `.proto` file in `proto/`.
//!
//! Kept apart from the implementations so a client (e.g. `restatectl`) does not pull in
//! the servers.

pub mod node_ctl {
    tonic::include_proto!("restate.node_ctl");
}

pub mod metadata {
    tonic::include_proto!("restate.metadata");
}

pub mod bifrost {
    tonic::include_proto!("restate.bifrost");
}

pub mod log_server {
    tonic::include_proto!("restate.log_server");
}

pub mod cluster_ctrl {
    tonic::include_proto!("restate.cluster_ctrl");
}

pub mod metadata_server {
    tonic::include_proto!("restate.metadata_server");
}

pub mod partition {
    tonic::include_proto!("restate.partition");
}
