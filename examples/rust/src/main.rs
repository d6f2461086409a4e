//! The test scenarios of `examples/typescript/scenarios.js`, written with the Rust SDK
//! (`restate-sdk` 0.13), served over HTTP/2 without TLS on 127.0.0.1:$PORT (default 9080).
//! `ctx.run` side effects append a line to `$SIDE_EFFECT_FILE`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Greeter;

#[restate_sdk::service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(format!("Hello {name}!"))
    }
}

struct Counter;

#[restate_sdk::object]
impl Counter {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, delta: u64) -> HandlerResult<u64> {
        let total = ctx.get::<u64>("total").await?.unwrap_or(0) + delta;
        ctx.set("total", total);
        Ok(total)
    }

    #[handler]
    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
        Ok(ctx.get::<u64>("total").await?.unwrap_or(0))
    }
}

struct Sleeper;

#[restate_sdk::service]
impl Sleeper {
    #[handler]
    async fn sleep(&self, ctx: Context<'_>, millis: u64) -> HandlerResult<String> {
        ctx.sleep(Duration::from_millis(millis)).await?;
        Ok("slept".to_owned())
    }
}

fn append_side_effect(tag: &str) -> std::io::Result<()> {
    let path = std::env::var("SIDE_EFFECT_FILE").unwrap_or_else(|_| "/tmp/side-effects.txt".to_owned());
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{tag}")
}

struct Runner;

#[restate_sdk::service]
impl Runner {
    #[handler(name = "sideEffect")]
    async fn side_effect(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let written = tag.clone();
        ctx.run(|| async move {
            append_side_effect(&written).map_err(HandlerError::from)?;
            Ok(written)
        })
        .name("append")
        .await?;
        Ok(format!("ran {tag}"))
    }
}

#[derive(Serialize, Deserialize)]
struct AddRequest {
    key: String,
    delta: u64,
}

struct Caller;

#[restate_sdk::service]
impl Caller {
    #[handler(name = "callGreet")]
    async fn call_greet(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
        let greeting = ctx.service_client::<GreeterClient>().greet(name).call().await?;
        Ok(format!("called: {greeting}"))
    }

    #[handler(name = "sendAdd")]
    async fn send_add(&self, ctx: Context<'_>, request: Json<AddRequest>) -> HandlerResult<String> {
        let request = request.into_inner();
        ctx.object_client::<CounterClient>(request.key)
            .add(request.delta)
            .send();
        Ok("sent".to_owned())
    }
}

/// Attempts per key of `Failing/failTwice`, in this process.
struct Failing {
    attempts: Mutex<HashMap<String, u32>>,
}

#[restate_sdk::service]
impl Failing {
    #[handler]
    async fn terminal(&self, _ctx: Context<'_>, message: String) -> HandlerResult<String> {
        Err(TerminalError::new_with_code(400, message).into())
    }

    #[handler(name = "failTwice")]
    async fn fail_twice(&self, _ctx: Context<'_>, key: String) -> HandlerResult<String> {
        let attempt = {
            let mut attempts = self.attempts.lock().map_err(|_| TerminalError::new("poisoned"))?;
            let attempt = attempts.entry(key).or_default();
            *attempt += 1;
            *attempt
        };
        if attempt <= 2 {
            return Err(std::io::Error::other(format!("attempt {attempt} failed")).into());
        }
        Ok(format!("succeeded after {attempt} attempts"))
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9080);
    let endpoint = Endpoint::builder()
        .bind(Greeter)
        .bind(Counter)
        .bind(Sleeper)
        .bind(Runner)
        .bind(Caller)
        .bind(Failing {
            attempts: Mutex::default(),
        })
        .build();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // The SDK's own server leaves Nagle's algorithm on: its second small write of a response
    // then waits for the runtime's (delayed) ACK. NODELAY=1 serves the same endpoint with
    // TCP_NODELAY, to tell that wait apart from the runtime's own latency.
    if std::env::var("NODELAY").as_deref() == Ok("1") {
        serve_without_nagle(endpoint, address).await;
        return;
    }
    HttpServer::new(endpoint).listen_and_serve(address).await;
}

async fn serve_without_nagle(endpoint: Endpoint, address: std::net::SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    let endpoint = restate_sdk::hyper::HyperEndpoint::new(endpoint);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), endpoint);
            let _ = connection.await;
        });
    }
}
