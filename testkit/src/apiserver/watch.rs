//! Watches: history replay, live events, bookmarks, 410 Expired, streaming lists.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::errors::ApiError;
use super::objects::{partial_metadata, set_meta};
use super::routes::{Query, Target};
use super::selectors::Filter;
use super::shared::{Control, Shared, lock};
use super::store::{Change, Op};

/// Watch duration when the client sends no `timeoutSeconds` (the real server picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a watch still has to send.
enum Pending {
    Change(&'static str, Arc<Change>),
    /// An existing object, sent as ADDED (initial events).
    Object(Arc<Value>),
    Line(String),
}

impl Pending {
    fn render(self) -> String {
        match self {
            Pending::Change("DELETED", change) if change.op == Op::Modified => event_line("DELETED", &departed(&change)),
            Pending::Change(kind, change) => event_line(kind, change.json()),
            Pending::Object(obj) => event_line("ADDED", &serde_json::to_string(&*obj).unwrap_or_default()),
            Pending::Line(line) => line,
        }
    }
}

/// An object that stops matching a watch's selector arrives as DELETED carrying its previous
/// (still matching) content at the change's resourceVersion, as the real watch cache sends it.
fn departed(change: &Change) -> String {
    let mut obj = change.previous.as_deref().unwrap_or(&change.object).clone();
    set_meta(&mut obj, "resourceVersion", Value::String(change.rv.to_string()));
    serde_json::to_string(&obj).unwrap_or_default()
}

/// A rendered event line with its object reduced to PartialObjectMetadata (errors stay Status).
fn metadata_only_line(line: &str) -> String {
    let Ok(mut event) = serde_json::from_str::<Value>(line) else { return line.to_owned() };
    if event.get("type").and_then(Value::as_str) == Some("ERROR") {
        return line.to_owned();
    }
    if let Some(object) = event.get_mut("object") {
        *object = partial_metadata(object);
    }
    format!("{event}\n")
}

fn event_line(kind: &str, object_json: &str) -> String {
    format!("{{\"type\":\"{kind}\",\"object\":{object_json}}}\n")
}

fn bookmark_line(kind: &str, api_version: &str, rv: u64, initial_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
    event_line("BOOKMARK", &object.to_string())
}

fn expired_line(requested: u64, oldest: u64) -> String {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    });
    event_line("ERROR", &status.to_string())
}

/// One open watch. Dropping it (client gone, end of stream) unsubscribes.
struct WatchStream {
    shared: Arc<Shared>,
    filter: Filter,
    kind: String,
    api_version: String,
    pending: VecDeque<Pending>,
    events: broadcast::Receiver<Arc<Change>>,
    control: watch::Receiver<Control>,
    /// The resourceVersion this watch has caught up to.
    last_rv: u64,
    bookmarks: bool,
    next_bookmark: Instant,
    deadline: Instant,
    /// End once `pending` is sent (410 Expired).
    closing: bool,
    /// The client asked for PartialObjectMetadata.
    metadata_only: bool,
}

enum Step {
    Stop,
    Event(Arc<Change>),
    Bookmark,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WatchStream {
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if let Pending::Change(_, change) = &item
                    && let Some(due) = self.due(change)
                {
                    // A lagging watch cache: the event goes out late; stop requests still count.
                    tokio::select! {
                        biased;
                        _ = self.control.changed() => return None,
                        () = tokio::time::sleep_until(self.deadline) => return None,
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                let line = item.render();
                return Some(if self.metadata_only { metadata_only_line(&line) } else { line });
            }
            if self.closing {
                return None;
            }
            // Order matters: stop requests first, then queued events before a bookmark (which
            // may only claim a resourceVersion once every earlier event is sent).
            let step = tokio::select! {
                biased;
                _ = self.control.changed() => Step::Stop,
                () = tokio::time::sleep_until(self.deadline) => Step::Stop,
                received = self.events.recv() => match received {
                    Ok(change) => Step::Event(change),
                    // Lagged: this watcher fell too far behind; closing makes it re-watch.
                    Err(_) => Step::Stop,
                },
                () = tokio::time::sleep_until(self.next_bookmark), if self.bookmarks => Step::Bookmark,
            };
            match step {
                Step::Stop => return None,
                Step::Event(change) => {
                    if change.rv > self.last_rv {
                        self.last_rv = change.rv;
                        if let Some(kind) = self.filter.classify(&change) {
                            self.pending.push_back(Pending::Change(kind, change));
                        }
                    }
                }
                Step::Bookmark => self.bookmark(),
            }
        }
    }

    /// When a change may be delivered, if its resource has a watch lag that is not over yet.
    fn due(&self, change: &Change) -> Option<Instant> {
        let lag = *lock(&self.shared.watch_lags).get(&change.key.0.plural)?;
        let due = change.at + lag;
        (due > Instant::now()).then_some(due)
    }

    fn bookmark(&mut self) {
        let store = lock(&self.shared.store);
        // Changes are broadcast under the store lock, so an empty queue now means every change
        // up to `store.rv` has reached this watch.
        if !self.events.is_empty() {
            return;
        }
        self.last_rv = self.last_rv.max(store.rv);
        self.next_bookmark = Instant::now() + store.bookmark_interval;
        drop(store);
        let line = bookmark_line(&self.kind, &self.api_version, self.last_rv, false);
        self.pending.push_back(Pending::Line(line));
    }
}

pub(super) fn open_watch(shared: &Arc<Shared>, t: &Target, query: &Query, metadata_only: bool) -> Result<Response, ApiError> {
    let filter = Filter::new(t, query)?;
    let from = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?),
    };
    let send_initial = query.flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let control = shared.control.subscribe();
    if control.borrow().shutdown {
        return Err(ApiError::new(503, "ServiceUnavailable", "the server is shutting down"));
    }

    let store = lock(&shared.store);
    // Subscribing and reading the history under one lock: nothing is missed or sent twice.
    let events = store.events.subscribe();
    let mut pending = VecDeque::new();
    let mut closing = false;
    let kind = store.kind_for(&t.res.plural);
    let api_version = t.api_version();
    match from {
        Some(rv) if !send_initial => {
            if rv < store.oldest_rv {
                pending.push_back(Pending::Line(expired_line(rv, store.oldest_rv)));
                closing = true;
            } else {
                let start = store.history.partition_point(|c| c.rv <= rv);
                for change in store.history.range(start..) {
                    if let Some(kind) = filter.classify(change) {
                        pending.push_back(Pending::Change(kind, change.clone()));
                    }
                }
            }
        }
        _ => {
            // No resourceVersion (or "0", or a streaming list): the current state first.
            for (_, obj) in store.scope(&t.res, t.namespace.as_deref(), None) {
                if filter.matches(obj) {
                    pending.push_back(Pending::Object(obj.clone()));
                }
            }
            if send_initial {
                let line = bookmark_line(&kind, &api_version, store.rv, true);
                pending.push_back(Pending::Line(line));
            }
        }
    }
    let last_rv = store.rv;
    let now = Instant::now();
    let next_bookmark = now + store.bookmark_interval;
    drop(store);

    shared.watches.fetch_add(1, Ordering::SeqCst);
    let stream = WatchStream {
        shared: shared.clone(),
        filter,
        kind,
        api_version,
        pending,
        events,
        control,
        last_rv,
        bookmarks: query.flag("allowWatchBookmarks"),
        next_bookmark,
        deadline: now + timeout,
        closing,
        metadata_only,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let line = stream.next_line().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line)), stream))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
