//! The Kubernetes client configuration, found as kubectl finds it, with the API server's proxy
//! chosen as kubectl chooses it.
//!
//! kube reads `HTTPS_PROXY` for every kubeconfig, matches `NO_PROXY` against the proxy's own
//! URL, and tunnels even a loopback or plain-http API server through it: with a corporate proxy
//! in the environment, a local cluster (kind, minikube, `kubectl proxy`) could not be reached.
//! kubectl uses the kubeconfig's `proxy-url` if set, else Go's `ProxyFromEnvironment`
//! ([`crate::token::proxy::from_environment`]); so does this. In a pod (no kubeconfig) nothing
//! changes: no proxy, as before.

use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no usable configuration was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The kubeconfig exists but cannot be used (or lacks the context asked for).
    #[error("cannot use the kubeconfig{}: {source}", .context.as_ref().map(|c| format!(" context {c:?}")).unwrap_or_default())]
    Kubeconfig {
        /// The context asked for, if any.
        context: Option<String>,
        /// kube's reason.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor an in-cluster configuration.
    #[error("no Kubernetes configuration (set KUBECONFIG or create ~/.kube/config, as for kubectl; in a pod, the service account): {0}")]
    Missing(String),
    /// The proxy for the API server is unusable.
    #[error("the proxy for the Kubernetes API server: {0}")]
    Proxy(String),
}

/// The configuration for `context` (None: the kubeconfig's current context, or in a pod the
/// in-cluster configuration when there is no kubeconfig).
pub async fn load(context: Option<&str>) -> Result<Config, ConfigError> {
    let fail = |source| ConfigError::Kubeconfig { context: context.map(str::to_owned), source };
    let kubeconfig = match Kubeconfig::read() {
        Ok(kubeconfig) => kubeconfig,
        Err(error) if context.is_none() => {
            return Config::incluster().map_err(|in_cluster| ConfigError::Missing(format!("{error}; in-cluster: {in_cluster}")));
        }
        Err(error) => return Err(fail(error)),
    };
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..KubeConfigOptions::default() };
    let proxy_url = configured_proxy(&kubeconfig, &options);
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(fail)?;
    config.proxy_url = match proxy_url {
        // The URL may carry a password: the message names only the field.
        Some(url) => Some(url.parse().map_err(|e| ConfigError::Proxy(format!("the kubeconfig's proxy-url is not a valid URL: {e}")))?),
        None => {
            let server = reqwest::Url::parse(&config.cluster_url.to_string()).map_err(|e| ConfigError::Proxy(e.to_string()))?;
            let chosen = crate::token::proxy::from_environment(&server, |name| std::env::var(name).ok()).map_err(ConfigError::Proxy)?;
            chosen.map(|url| url.as_str().parse()).transpose().map_err(|e| ConfigError::Proxy(format!("not a valid URL: {e}")))?
        }
    };
    Ok(config)
}

/// The `proxy-url` of the cluster the chosen context names, if set.
fn configured_proxy(kubeconfig: &Kubeconfig, options: &KubeConfigOptions) -> Option<String> {
    let context_name = options.context.as_ref().or(kubeconfig.current_context.as_ref())?;
    let context = kubeconfig.contexts.iter().find(|c| &c.name == context_name)?.context.as_ref()?;
    let cluster_name = options.cluster.as_ref().unwrap_or(&context.cluster);
    let cluster = kubeconfig.clusters.iter().find(|c| &c.name == cluster_name)?.cluster.as_ref()?;
    cluster.proxy_url.clone().filter(|url| !url.trim().is_empty())
}
