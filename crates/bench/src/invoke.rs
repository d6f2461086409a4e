//! `restate-bench invoke`: N workers, each POSTing one JSON body to a handler's ingress URL in
//! a loop and waiting for the whole answer; calls/s and the latency of successful (2xx) calls.
//! `--concurrency 1` is the sequential case. With several `--url`s the workers take them in
//! turn (e.g. one per node's ingress). The longest time one worker went without a successful
//! call is reported: the stall a fault caused to the callers it reached.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use reqwest::header::CONTENT_TYPE;

use crate::report::{Latencies, print_with};

/// Name of the operation in the table and the JSON line.
const OPERATION: &str = "invoke";
/// Distinct error messages kept for the report.
const KEPT_ERRORS: usize = 5;
/// Characters of an answer kept in an error message or the sample answer.
const KEPT_ANSWER: usize = 200;

#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// Ingress URL of the handler, e.g. http://127.0.0.1:8080/Greeter/greet; repeat it to
    /// spread the workers over several (worker i uses URL i mod n). `{worker}` in a URL is
    /// replaced by the worker's number, e.g. to give each worker its own object key.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Workers calling at once (1: sequential calls).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long the measured calls run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Request body, sent as `content-type: application/json`.
    #[arg(long, default_value = "\"Sam\"")]
    body: String,
    /// Calls made (by all workers) before the measurement starts; not counted.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// HTTP/2 without TLS (prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Longest wait for one answer (a call past it counts as an error).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What one worker (or, merged, all of them) saw.
struct Outcome {
    calls: Latencies,
    /// The first distinct error messages of measured calls.
    error_samples: Vec<String>,
    /// The answer of one successful measured call.
    sample_answer: Option<String>,
    /// When each successful measured call of one worker ended.
    successes: Vec<Instant>,
    /// The longest stall of each worker merged in: (length, start).
    stalls: Vec<(Duration, Instant)>,
    warmup_calls: u64,
    warmup_errors: u64,
}

impl Outcome {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            calls: Latencies::new(OPERATION)?,
            error_samples: Vec::new(),
            sample_answer: None,
            successes: Vec::new(),
            stalls: Vec::new(),
            warmup_calls: 0,
            warmup_errors: 0,
        })
    }

    fn keep_error(&mut self, message: String) {
        if self.error_samples.len() < KEPT_ERRORS && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.calls.merge(&other.calls);
        for message in other.error_samples {
            self.keep_error(message);
        }
        if self.sample_answer.is_none() {
            self.sample_answer = other.sample_answer;
        }
        self.stalls.extend(other.stalls);
        self.warmup_calls += other.warmup_calls;
        self.warmup_errors += other.warmup_errors;
    }
}

/// One call; `Ok` for a 2xx answer (with its body if `keep_answer`), `Err` with a message for
/// any other status or a transport error.
async fn call(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &str,
    keep_answer: bool,
) -> Result<Option<String>, String> {
    let response = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|error| describe(&error))?;
    let status = response.status();
    let answer = response.bytes().await.map_err(|error| describe(&error))?;
    if status.is_success() {
        Ok(keep_answer.then(|| clip(&String::from_utf8_lossy(&answer))))
    } else {
        Err(format!("HTTP {status}: {}", clip(&String::from_utf8_lossy(&answer))))
    }
}

/// The error with its chain of causes (reqwest's own message says little).
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(KEPT_ANSWER) {
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// The longest time within `[start, end]` without a successful call ending: (its length, when
/// it began).
fn longest_stall(mut successes: Vec<Instant>, start: Instant, end: Instant) -> (Duration, Instant) {
    successes.sort_unstable();
    let mut previous = start;
    let mut longest = (Duration::ZERO, start);
    for at in successes.into_iter().chain(std::iter::once(end)) {
        let at = at.clamp(start, end);
        if at.duration_since(previous) > longest.0 {
            longest = (at.duration_since(previous), previous);
        }
        previous = at;
    }
    longest
}

/// Worker `worker`'s URL: the URLs in turn, `{worker}` replaced by its number.
fn worker_url(urls: &[String], worker: usize) -> anyhow::Result<reqwest::Url> {
    let template = &urls[worker % urls.len()];
    let url = template.replace("{worker}", &worker.to_string());
    reqwest::Url::parse(&url).with_context(|| format!("`{template}` is not a URL"))
}

pub(crate) async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let urls = (0..args.concurrency)
        .map(|worker| worker_url(&args.url, worker))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let label = args.url.join(" ");
    // Benchmarks run on loopback: no proxy from the environment.
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(args.timeout);
    if args.http2 {
        builder = builder.http2_prior_knowledge();
    }
    let client = builder.build().context("cannot build the HTTP client")?;

    let started = Instant::now() + args.warmup;
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for url in urls {
        let client = client.clone();
        let body = args.body.clone();
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::new()?;
            loop {
                let begin = Instant::now();
                if begin >= deadline {
                    break;
                }
                let measured = begin >= started;
                let keep_answer = measured && outcome.sample_answer.is_none();
                match call(&client, &url, &body, keep_answer).await {
                    Ok(answer) if measured => {
                        outcome.calls.record(begin.elapsed());
                        outcome.successes.push(Instant::now());
                        if answer.is_some() {
                            outcome.sample_answer = answer;
                        }
                    }
                    Ok(_) => outcome.warmup_calls += 1,
                    Err(message) if measured => {
                        outcome.calls.errors += 1;
                        outcome.keep_error(message);
                    }
                    Err(_) => {
                        outcome.warmup_calls += 1;
                        outcome.warmup_errors += 1;
                    }
                }
            }
            let successes = std::mem::take(&mut outcome.successes);
            outcome.stalls.push(longest_stall(successes, started, Instant::now()));
            anyhow::Ok(outcome)
        }));
    }
    let mut total = Outcome::new()?;
    for worker in workers {
        total.merge(worker.await??);
    }
    let elapsed = started.elapsed();
    let (stall, stall_at) = total
        .stalls
        .iter()
        .max_by_key(|(length, _)| *length)
        .map_or((Duration::ZERO, Duration::ZERO), |(length, at)| {
            (*length, at.saturating_duration_since(started))
        });

    let protocol = if args.http2 { "HTTP/2 (h2c)" } else { "HTTP/1.1" };
    println!(
        "POST {label} over {protocol}: {} workers, {:.1}s measured after {:.1}s of warm-up ({} warm-up calls, {} failed)",
        args.concurrency,
        elapsed.as_secs_f64(),
        args.warmup.as_secs_f64(),
        total.warmup_calls,
        total.warmup_errors
    );
    if let Some(answer) = &total.sample_answer {
        println!("answer: {answer}");
    }
    for message in &total.error_samples {
        println!("error: {message}");
    }
    println!(
        "longest stall: {} ms without a successful call (one worker), from {:.2}s",
        stall.as_millis(),
        stall_at.as_secs_f64()
    );
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let mut extra = serde_json::Map::new();
    extra.insert("url".into(), label.clone().into());
    extra.insert("longest_stall_ms".into(), (stall.as_millis() as u64).into());
    extra.insert("longest_stall_from_s".into(), stall_at.as_secs_f64().into());
    extra.insert("concurrency".into(), args.concurrency.into());
    extra.insert("duration_s".into(), args.duration.as_secs_f64().into());
    extra.insert("warmup_s".into(), args.warmup.as_secs_f64().into());
    extra.insert("http2".into(), args.http2.into());
    extra.insert("calls".into(), total.calls.count().into());
    extra.insert(
        "requests_per_sec".into(),
        ((total.calls.count() as f64 / seconds * 10.0).round() / 10.0).into(),
    );
    extra.insert("errors".into(), total.calls.errors.into());
    extra.insert("error_samples".into(), total.error_samples.into());
    extra.insert("sample_answer".into(), total.sample_answer.into());
    let bands: serde_json::Map<String, serde_json::Value> = total
        .calls
        .bands()
        .into_iter()
        .map(|(label, count)| (label, count.into()))
        .collect();
    extra.insert("histogram".into(), bands.into());
    crate::report::print_bands(&total.calls);
    print_with(&label, args.concurrency, elapsed, &[&total.calls], extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_stall_is_the_widest_gap_between_successes_including_the_ends() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let (stall, from) = longest_stall(vec![at(300), at(100), at(1500), at(1600)], start, at(2000));
        assert_eq!((stall, from), (Duration::from_millis(1200), at(300)));
        let (stall, from) = longest_stall(Vec::new(), start, at(500));
        assert_eq!((stall, from), (Duration::from_millis(500), start));
    }

    #[test]
    fn workers_take_the_urls_in_turn_with_their_number() {
        let urls = vec![
            "http://a/C/k{worker}/add".to_owned(),
            "http://b/C/k{worker}/add".to_owned(),
        ];
        assert_eq!(worker_url(&urls, 3).unwrap().as_str(), "http://b/C/k3/add");
        assert!(worker_url(&["not a url".to_owned()], 0).is_err());
    }
}
