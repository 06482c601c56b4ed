//! Where the bench's objects live: the in-process test API server, or a real cluster.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use navigator_token_operator::controller::status::is_ready;
use navigator_token_operator::crd::NavigatorToken;
use navigator_token_operator::{CREDENTIALS_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REFRESH_REQUESTED_ANNOTATION};
use serde_json::json;
use testkit::apiserver::ApiServer;

/// Organization GUID of every bench NavigatorToken.
const ORG: &str = "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4";
/// Name of the credentials Secret in each namespace.
pub const CREDENTIALS: &str = "bench-credentials";
/// Requests the bench itself keeps in flight when it creates or patches many objects.
const IN_FLIGHT: usize = 16;

pub struct Cluster {
    /// The bench's own client (its requests are not the operator's).
    pub client: Client,
    /// The kubeconfig the operator and kubectl are given.
    pub kubeconfig: PathBuf,
    /// The in-process API server, when there is no real cluster.
    pub server: Option<ApiServer>,
    /// Namespaces created on a real cluster, deleted by `cleanup`.
    created: Mutex<Vec<String>>,
}

impl Cluster {
    /// A fresh test API server on loopback, and a kubeconfig for it in `dir`.
    pub async fn in_process(dir: &Path) -> Result<Cluster> {
        let server = ApiServer::start().await;
        let url = server.url();
        let kubeconfig = dir.join(format!("kubeconfig-{}", url.rsplit(':').next().unwrap_or("0")));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: bench, cluster: {{server: \"{url}\"}}}}]\n\
                 users: [{{name: bench, user: {{}}}}]\n\
                 contexts: [{{name: bench, context: {{cluster: bench, user: bench}}}}]\ncurrent-context: bench\n"
            ),
        )?;
        let client = Client::try_from(Config::new(url.parse()?))?;
        Ok(Cluster { client, kubeconfig, server: Some(server), created: Mutex::default() })
    }

    /// The current context of `kubeconfig`, with the CRD applied from `operator_bin crd`.
    pub async fn external(kubeconfig: &Path, operator_bin: &Path) -> Result<Cluster> {
        let config = Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(kubeconfig)?, &Default::default()).await?;
        let client = Client::try_from(config)?;
        let crd = std::process::Command::new(operator_bin).arg("crd").output()?;
        if !crd.status.success() {
            bail!("{} crd failed", operator_bin.display());
        }
        let mut kubectl = std::process::Command::new("kubectl")
            .args(["apply", "--server-side", "--field-manager=navigator-bench", "-f", "-"])
            .env("KUBECONFIG", kubeconfig)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        std::io::Write::write_all(&mut kubectl.stdin.take().context("kubectl stdin")?, &crd.stdout)?;
        if !kubectl.wait()?.success() {
            bail!("kubectl apply of the CRD failed");
        }
        let established = std::process::Command::new("kubectl")
            .args(["wait", "--for=condition=Established", "--timeout=60s", "crd/navigatortokens.navigator.dev"])
            .env("KUBECONFIG", kubeconfig)
            .status()?;
        if !established.success() {
            bail!("the NavigatorToken CRD was not established");
        }
        Ok(Cluster { client, kubeconfig: kubeconfig.to_owned(), server: None, created: Mutex::default() })
    }

    /// A namespace for one phase of one N, created (on a real cluster with a unique name).
    pub async fn namespace(&self, prefix: &str, n: usize) -> Result<String> {
        if let Some(server) = &self.server {
            // The in-process server, like a cluster, needs the namespace for writes into it.
            let name = format!("{prefix}-{n}");
            server.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
            return Ok(name);
        }
        let name = format!("{prefix}-{n}-{}", std::process::id());
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &namespace).await?;
        self.created.lock().unwrap().push(name.clone());
        Ok(name)
    }

    /// Deletes the namespaces created on a real cluster.
    pub async fn cleanup(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap());
        for name in names {
            if let Err(e) = Api::<Namespace>::all(self.client.clone()).delete(&name, &DeleteParams::default()).await {
                eprintln!("bench: could not delete namespace {name}: {e}");
            }
        }
    }

    /// Secret writes the in-process server has answered (None on a real cluster): all the
    /// baseline's API requests, without the bench's own watches.
    pub fn secret_writes(&self) -> Option<u64> {
        self.server.as_ref().map(|s| ["create", "update", "patch"].iter().map(|verb| s.counts().get(verb, "secrets")).sum())
    }

    pub async fn put_credentials(&self, ns: &str, client_id: &str, client_secret: &str) -> Result<()> {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": CREDENTIALS, "labels": {CREDENTIALS_LABEL: "true"}},
            "stringData": {"client_id": client_id, "client_secret": client_secret},
        }))?;
        Api::<Secret>::namespaced(self.client.clone(), ns).create(&PostParams::default(), &secret).await?;
        Ok(())
    }

    fn navigator_tokens(&self, ns: &str) -> Api<NavigatorToken> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates a NavigatorToken per name against the CSP endpoint at `endpoint_url`; returns
    /// when each creation was sent.
    pub async fn create_tokens(&self, ns: &str, names: &[String], endpoint_url: &str) -> Result<Vec<(String, Instant)>> {
        let api = self.navigator_tokens(ns);
        futures::stream::iter(names)
            .map(|name| {
                let api = api.clone();
                async move {
                    let token: NavigatorToken = serde_json::from_value(json!({
                        "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
                        "metadata": {"name": name},
                        "spec": {
                            "orgId": ORG,
                            "credentialsSecretRef": {"name": CREDENTIALS},
                            "endpoint": {"type": "CSP", "url": endpoint_url},
                        },
                    }))?;
                    let sent = Instant::now();
                    api.create(&PostParams::default(), &token).await.with_context(|| format!("creating NavigatorToken {name}"))?;
                    Ok::<_, anyhow::Error>((name.clone(), sent))
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Asks for a new token in each NavigatorToken (the documented refresh annotation).
    pub async fn force_refresh(&self, ns: &str, names: &[String]) -> Result<()> {
        let api = self.navigator_tokens(ns);
        let at = format!("{:?}", std::time::SystemTime::now());
        let patch = json!({"metadata": {"annotations": {REFRESH_REQUESTED_ANNOTATION: at}}});
        futures::stream::iter(names)
            .map(|name| {
                let (api, patch) = (api.clone(), patch.clone());
                async move { api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop) }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        Ok(())
    }

    /// Lists the NavigatorTokens of `ns` and the operator's Secrets in it, as a restarted operator's
    /// first lists do (in pages of `page`): both at once, then each alone. The floor of a restart's
    /// readiness, measured against the same API server.
    pub async fn plain_lists(&self, ns: &str, page: u32) -> Result<PlainLists> {
        let tokens = self.navigator_tokens(ns);
        let secrets = Api::<Secret>::namespaced(self.client.clone(), ns);
        let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let started = Instant::now();
        let (listed_tokens, listed_secrets) = futures::try_join!(list_all(&tokens, None, page), list_all(&secrets, Some(&managed), page))?;
        let concurrent = started.elapsed();
        let started = Instant::now();
        list_all(&tokens, None, page).await?;
        let tokens_alone = started.elapsed();
        let started = Instant::now();
        list_all(&secrets, Some(&managed), page).await?;
        let secrets_alone = started.elapsed();
        Ok(PlainLists { tokens: listed_tokens, secrets: listed_secrets, concurrent, tokens_alone, secrets_alone })
    }

    /// Polls until `n` NavigatorTokens report Ready=True; returns when they did.
    pub async fn wait_ready(&self, ns: &str, n: usize, timeout: Duration) -> Result<Instant> {
        let api = self.navigator_tokens(ns);
        let deadline = Instant::now() + timeout;
        loop {
            let listed = Instant::now();
            let ready = api.list(&ListParams::default()).await?.items.iter().filter(|t| is_ready(t.status.as_ref())).count();
            if ready >= n {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(anyhow!("only {ready} of {n} NavigatorTokens Ready after {timeout:?}"));
            }
            // A list of 100,000 takes a while: never more than half of the time spent listing.
            tokio::time::sleep(Duration::from_millis(250).max(listed.elapsed())).await;
        }
    }

    /// Creates `count` Secrets the operator has no business with (no labels, 1 KiB each).
    pub async fn create_unrelated_secrets(&self, ns: &str, count: usize) -> Result<()> {
        let api = Api::<Secret>::namespaced(self.client.clone(), ns);
        let filler = "x".repeat(1024);
        futures::stream::iter(0..count)
            .map(|i| {
                let api = api.clone();
                let secret = serde_json::from_value::<Secret>(json!({
                    "metadata": {"name": format!("unrelated-{i:05}")},
                    "stringData": {"payload": filler},
                }));
                async move { api.create(&PostParams::default(), &secret?).await.map(drop).map_err(anyhow::Error::from) }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await
    }
}

/// How long plain paginated lists of a restart's objects took (see `Cluster::plain_lists`).
pub struct PlainLists {
    pub tokens: usize,
    pub secrets: usize,
    /// Both lists at once, as the operator's watches run.
    pub concurrent: Duration,
    pub tokens_alone: Duration,
    pub secrets_alone: Duration,
}

/// Every object of `api` (matching `selector`) in pages of `page`; returns how many.
async fn list_all<K>(api: &Api<K>, selector: Option<&str>, page: u32) -> Result<usize>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(page);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut count = 0;
    loop {
        let list = api.list(&params).await?;
        count += list.items.len();
        match list.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(count),
        }
    }
}
