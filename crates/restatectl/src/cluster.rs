//! Cluster-wide lookups shared by the commands: the nodes configuration and the admin nodes
//! that serve the cluster controller.

use std::future::Future;

use anyhow::{anyhow, bail};
use restate_proto::cluster_ctrl::cluster_ctrl_svc_client::ClusterCtrlSvcClient;
use restate_types::Role;
use restate_types::metadata::NodesConfiguration;
use tonic::transport::Channel;

use crate::connection::{Addresses, call_error, is_unreachable};

/// The nodes configuration and its version; explains an unprovisioned cluster.
pub(crate) async fn nodes_config(addresses: &Addresses) -> anyhow::Result<(u32, NodesConfiguration)> {
    match addresses.nodes_config().await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => bail!("the cluster is not provisioned yet; provision it with `restatectl provision`"),
        Err(error)
            if error
                .to_string()
                .contains(restate_metadata_store::AWAITING_PROVISIONING) =>
        {
            bail!("the cluster is not provisioned yet; provision it with `restatectl provision` ({error:#})")
        }
        Err(error) => Err(error),
    }
}

/// Admin nodes first (from the nodes configuration; those the operator named before the
/// others, as the ones expected to answer), then the other given addresses.
pub(crate) fn admin_addresses(addresses: &Addresses, nodes: Option<&NodesConfiguration>) -> Vec<String> {
    if addresses.single {
        return addresses.addresses.clone();
    }
    let mut admins: Vec<String> = nodes
        .map(|nodes| {
            nodes
                .with_role(Role::Admin)
                .map(|n| restate_net::normalize_address(&n.address))
                .collect()
        })
        .unwrap_or_default();
    admins.sort_by_key(|address| !addresses.addresses.contains(address));
    for address in &addresses.addresses {
        if !admins.contains(address) {
            admins.push(address.clone());
        }
    }
    admins
}

/// Prints a note on stderr, once per run however many calls run into the same thing.
pub(crate) fn note_once(note: &str) {
    static NOTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut noted = NOTED.lock().unwrap_or_else(|p| p.into_inner());
    if !noted.iter().any(|n| n == note) {
        crate::settings::note(note);
        noted.push(note.to_owned());
    }
}

/// Calls the cluster controller on the first admin node that answers; unreachable nodes and
/// nodes without the admin role are skipped with a note.
pub(crate) async fn on_admin<T, F, Fut>(addresses: &Addresses, admins: &[String], call: F) -> anyhow::Result<T>
where
    F: Fn(ClusterCtrlSvcClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    first_admin(addresses, admins, false, call).await
}

/// [`on_admin`] for a call that changes nothing: a node that does not answer in time (e.g. a
/// paused process) is skipped too, since asking the next one cannot do anything twice.
pub(crate) async fn read_from_admin<T, F, Fut>(addresses: &Addresses, admins: &[String], call: F) -> anyhow::Result<T>
where
    F: Fn(ClusterCtrlSvcClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    first_admin(addresses, admins, true, call).await
}

async fn first_admin<T, F, Fut>(addresses: &Addresses, admins: &[String], read_only: bool, call: F) -> anyhow::Result<T>
where
    F: Fn(ClusterCtrlSvcClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut skipped = Vec::new();
    for address in admins {
        let client = ClusterCtrlSvcClient::new(addresses.channel(address)?);
        match call(client).await {
            Ok(answer) => {
                for note in &skipped {
                    note_once(&format!("skipped {note}"));
                }
                crate::settings::verbose(&format!("admin node {address} answered"));
                return Ok(answer);
            }
            Err(status) if is_unreachable(&status) => skipped.push(format!("{address} (unreachable)")),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                skipped.push(format!("{address} (no admin role)"))
            }
            Err(status)
                if read_only
                    && matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unavailable
                    ) =>
            {
                skipped.push(format!("{address} (no answer: {})", status.message()))
            }
            Err(status) => return Err(call_error(address, &status)),
        }
    }
    Err(anyhow!(
        "no admin node answered ({}); pass the address of a node with the admin role with --address",
        skipped.join(", ")
    ))
}
