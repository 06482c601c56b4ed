//! Watches the token Secrets as a consumer would see them: when each first held a token,
//! the expiry of the token each holds now, and, over a window, how long before expiry each
//! refresh landed and which Secrets were seen holding an expired token.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// The key both the operator (by default) and the baseline write the token under.
const TOKEN_KEY: &str = "token";

/// What a window saw.
#[derive(Default)]
pub struct Window {
    /// Per refresh, seconds between its landing and the previous token's expiry (negative: late).
    pub leads: Vec<f64>,
    /// Secrets confirmed (by a GET) to hold an expired token at some moment.
    pub expired: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    /// Expiry (unix seconds) of the token each Secret holds.
    expiry: HashMap<String, i64>,
    first_token: HashMap<String, Instant>,
    window: Option<Window>,
}

pub struct Tracker {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl Tracker {
    /// Watches the Secrets in `ns` that match `selector`.
    pub async fn start(client: Client, ns: &str, selector: &str) -> Result<Tracker> {
        let api = Api::<Secret>::namespaced(client, ns);
        let state = Arc::new(Mutex::new(State::default()));
        let mut events = watcher(api.clone(), watcher::Config::default().labels(selector)).default_backoff().applied_objects().boxed();
        let watch = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    let Ok(secret) = event else { continue };
                    let Some(exp) = expiry(&secret) else { continue };
                    let mut state = state.lock().unwrap();
                    let name = secret.name_any();
                    state.first_token.entry(name.clone()).or_insert_with(Instant::now);
                    let previous = state.expiry.insert(name, exp);
                    if let (Some(window), Some(previous)) = (state.window.as_mut(), previous)
                        && previous != exp
                    {
                        window.leads.push(previous as f64 - unix_now());
                    }
                }
            })
        };
        // The watch may lag; a Secret is counted expired only if a GET confirms it.
        let audit = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let suspects: Vec<String> = {
                        let state = state.lock().unwrap();
                        if state.window.is_none() {
                            continue;
                        }
                        state.expiry.iter().filter(|(_, exp)| (**exp as f64) <= unix_now()).map(|(name, _)| name.clone()).collect()
                    };
                    for name in suspects {
                        let Ok(secret) = api.get(&name).await else { continue };
                        if expiry(&secret).is_some_and(|exp| exp as f64 <= unix_now()) {
                            state.lock().unwrap().window.as_mut().map(|w| w.expired.insert(name));
                        }
                    }
                }
            })
        };
        Ok(Tracker { state, tasks: vec![watch, audit] })
    }

    /// Waits until `n` Secrets hold a token whose expiry satisfies `ok(expiry, now)` (unix
    /// seconds); returns when they did.
    pub async fn wait_for(&self, n: usize, what: &str, timeout: Duration, ok: impl Fn(i64, i64) -> bool) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = unix_now() as i64;
            let count = self.state.lock().unwrap().expiry.values().filter(|exp| ok(**exp, now)).count();
            if count >= n {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(anyhow!("only {count} of {n} Secrets hold {what} after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When each Secret was first seen holding a token.
    pub fn first_token_at(&self) -> HashMap<String, Instant> {
        self.state.lock().unwrap().first_token.clone()
    }

    pub fn start_window(&self) {
        self.state.lock().unwrap().window = Some(Window::default());
    }

    pub fn end_window(&self) -> Window {
        self.state.lock().unwrap().window.take().unwrap_or_default()
    }
}

/// The `exp` claim of the JWT a Secret holds.
fn expiry(secret: &Secret) -> Option<i64> {
    let token = secret.data.as_ref()?.get(TOKEN_KEY)?;
    navigator_token_operator::token::jwt::expiry(std::str::from_utf8(&token.0).ok()?)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}
