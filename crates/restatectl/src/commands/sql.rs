//! `restatectl sql`: SQL over the partition stores, through a node's admin API (`POST /query`,
//! the endpoint the `restate` CLI and web UI use). Restate's restatectl queries cluster-state
//! tables instead; restate-rs shows cluster state with `status`, `nodes list`, `logs list` and
//! `partitions list`, and answers SQL over the `sys_*` tables of the admin API.

use anyhow::{Context, bail};
use clap::Args;

use crate::connection::Addresses;
use crate::table::new_table;

/// The admin API port a node listens on unless `[admin] bind-address` says otherwise.
const DEFAULT_ADMIN_PORT: u16 = 9070;

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The SQL query, e.g. "SELECT id, status FROM sys_invocation LIMIT 10".
    query: String,
    /// Print the rows as one JSON object per line.
    #[arg(long, conflicts_with = "json")]
    jsonl: bool,
    /// Print the rows as a JSON array.
    #[arg(long)]
    json: bool,
    /// The admin API of the node to ask (default: the host of the first --address, port 9070).
    #[arg(long, env = "RESTATECTL_ADMIN_URL")]
    admin_url: Option<String>,
}

/// The first address's host with the default admin port.
fn default_admin_url(addresses: &Addresses) -> anyhow::Result<String> {
    let Some(address) = addresses.addresses.first() else {
        bail!("no address given: use --address or --admin-url");
    };
    let uri: tonic::codegen::http::Uri = address.parse().with_context(|| format!("`{address}` is not a URL"))?;
    let Some(host) = uri.host() else {
        bail!("`{address}` has no host; use --admin-url");
    };
    Ok(format!("http://{host}:{DEFAULT_ADMIN_PORT}/"))
}

pub(crate) async fn run(args: SqlArgs, addresses: &Addresses) -> anyhow::Result<()> {
    let admin_url = match &args.admin_url {
        Some(url) => restate_net::normalize_address(url),
        None => default_admin_url(addresses)?,
    };
    let url = format!("{admin_url}query");
    crate::settings::verbose(&format!("POST {url}"));
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .context("cannot build an HTTP client")?;
    let response = client
        .post(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&serde_json::json!({ "query": args.query }))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin API at {admin_url}: {e}; pass the node's admin address with --admin-url \
                 (its `[admin] bind-address`)"
            )
        })?;
    let status = response.status();
    let body = response.text().await.context("reading the answer of /query")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        bail!("the query failed ({status}): {message}");
    }
    let answer: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON: {body}"))?;
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if args.jsonl {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(());
    }
    // Columns in the order they first appear (nulls are left out of a row).
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        if let Some(object) = row.as_object() {
            for key in object.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    let header: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = new_table(&header);
    for row in &rows {
        table.add_row(
            columns
                .iter()
                .map(|column| match &row[column] {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>(),
        );
    }
    if !rows.is_empty() {
        println!("{table}");
    }
    println!("{} row(s)", rows.len());
    Ok(())
}
