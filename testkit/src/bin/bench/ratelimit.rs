//! A token endpoint that allows R requests per second: a loopback proxy in front of the
//! stand-in that answers 429 with `Retry-After: 1` once its bucket (R tokens, refilled at R/s)
//! is empty, as a rate-limited SaaS endpoint does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Limiter {
    rate: f64,
    upstream: String,
    http: reqwest::Client,
    started: Instant,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Tokens in the bucket, and when it was last refilled.
    bucket: f64,
    refilled: Option<Instant>,
    received: usize,
    rejected: u64,
    per_second: HashMap<u64, usize>,
}

pub struct RateLimitedEndpoint {
    limiter: Arc<Limiter>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RateLimitedEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RateLimitedEndpoint {
    /// Listens on loopback and forwards what the limit allows to `upstream` (a base URL).
    pub async fn start(upstream: &str, rate: f64) -> Result<RateLimitedEndpoint> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let limiter = Arc::new(Limiter {
            rate,
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            started: Instant::now(),
            counts: Mutex::new(Counts { bucket: rate.max(1.0), ..Counts::default() }),
        });
        let app = axum::Router::new().fallback(forward).with_state(limiter.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RateLimitedEndpoint { limiter, url, task })
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn received(&self) -> usize {
        self.limiter.counts.lock().unwrap().received
    }

    pub fn rejected(&self) -> u64 {
        self.limiter.counts.lock().unwrap().rejected
    }

    /// The most requests received within one second.
    pub fn busiest_second(&self) -> usize {
        self.limiter.counts.lock().unwrap().per_second.values().copied().max().unwrap_or(0)
    }
}

impl Limiter {
    /// Counts a request; true if the bucket had a token for it.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap();
        counts.received += 1;
        *counts.per_second.entry(now.duration_since(self.started).as_secs()).or_default() += 1;
        let elapsed = counts.refilled.map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        counts.bucket = (counts.bucket + elapsed * self.rate).min(self.rate.max(1.0));
        counts.refilled = Some(now);
        if counts.bucket >= 1.0 {
            counts.bucket -= 1.0;
            true
        } else {
            counts.rejected += 1;
            false
        }
    }
}

async fn forward(State(limiter): State<Arc<Limiter>>, request: Request) -> Response {
    if !limiter.admit() {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "rate limited").into_response();
    }
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let headers = request.headers().clone();
    let Ok(body) = to_bytes(request.into_body(), 1 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut upstream = limiter.http.post(format!("{}{path}", limiter.upstream)).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut out = HeaderMap::new();
            if let Some(content_type) = answer.headers().get(header::CONTENT_TYPE) {
                out.insert(header::CONTENT_TYPE, content_type.clone());
            }
            let body = answer.bytes().await.unwrap_or_default();
            (status, out, Body::from(body)).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
