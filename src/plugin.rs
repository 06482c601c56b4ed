//! The kubectl plugin `kubectl nvt` (`status`, `renew`, `inspect`), like cert-manager's cmctl.
//!
//! The operator's binary is the plugin: installed (symlinked or copied) as `kubectl-nvt` on PATH
//! it parses these commands directly; otherwise they are under `navigator-token-operator nvt`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::controller::secret::{is_ours, is_recorded_token};
use crate::controller::status::rfc3339;
use crate::crd::{ClusterNavigatorToken, NavigatorToken, NavigatorTokenStatus};
use crate::reasons::{CREDENTIALS_EXPIRING, READY, ROLLOUTS_RESTARTED};
use crate::redact::Sensitive;
use crate::token::jwt;
use crate::{EXPIRES_AT_ANNOTATION, ISSUED_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REFRESH_REQUESTED_ANNOTATION};
use crate::{TOKEN_FINGERPRINT_ANNOTATION, TOKEN_NAME_ANNOTATION};

/// The plugin's executable name; kubectl runs `kubectl-nvt` for `kubectl nvt`.
pub const PLUGIN_NAME: &str = "kubectl-nvt";

/// Field manager of the plugin's patches, so that `managedFields` tell who asked for a renewal.
const FIELD_MANAGER: &str = "kubectl-nvt";

/// Width of the label column of `status` and `inspect`.
const LABEL_WIDTH: usize = 25;

/// True when the binary was started as [`PLUGIN_NAME`] (argv\[0\]'s file name, without `.exe`).
pub fn invoked_as_plugin(argv0: Option<&OsStr>) -> bool {
    argv0.map(Path::new).and_then(Path::file_stem).is_some_and(|stem| stem == PLUGIN_NAME)
}

/// The command line of the binary when it runs as `kubectl-nvt`.
#[derive(Parser)]
#[command(name = PLUGIN_NAME, bin_name = "kubectl nvt", version, about = "Status, renewal and inspection of NavigatorTokens and ClusterNavigatorTokens")]
pub struct PluginCli {
    /// The plugin's flags and command.
    #[command(flatten)]
    pub args: PluginArgs,
}

/// The plugin's flags and command (also the `nvt` subcommand of the operator's binary).
#[derive(Args)]
pub struct PluginArgs {
    /// Namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// The plugin's commands.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Show a NavigatorToken's conditions, failures, schedule and the state of its Secret
    /// (with --cluster: a ClusterNavigatorToken's, with its namespace counts and failures).
    Status {
        /// The NavigatorToken (with --cluster: the ClusterNavigatorToken).
        name: String,
        /// NAME is a ClusterNavigatorToken.
        #[arg(long)]
        cluster: bool,
    },
    /// Ask the operator for a new token now (sets navigator.dev/refresh-requested-at).
    Renew(RenewArgs),
    /// Show the expiry and non-secret claims of the token in a NavigatorToken's Secret
    /// (with --cluster: in the ClusterNavigatorToken's Secret in the namespace of -n).
    Inspect {
        /// The NavigatorToken (with --cluster: the ClusterNavigatorToken).
        name: String,
        /// NAME is a ClusterNavigatorToken; the Secret inspected is the one in the namespace of -n.
        #[arg(long)]
        cluster: bool,
        /// Also print the access token itself.
        #[arg(long)]
        show_token: bool,
    },
}

/// `renew NAME...` or `renew --all [-A] [-l SELECTOR]`; with `--cluster`, of ClusterNavigatorTokens.
#[derive(Args)]
pub struct RenewArgs {
    /// The NavigatorTokens (with --cluster: ClusterNavigatorTokens) to renew.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Renew every NavigatorToken in the namespace (or, with -A, in all namespaces); with
    /// --cluster, every ClusterNavigatorToken.
    #[arg(long)]
    pub all: bool,
    /// With --all: in all namespaces (overrides -n, as in kubectl).
    #[arg(short = 'A', long, requires = "all", conflicts_with_all = ["names", "cluster"])]
    pub all_namespaces: bool,
    /// With --all: only those matching this label selector.
    #[arg(short = 'l', long, requires = "all", conflicts_with = "names")]
    pub selector: Option<String>,
    /// The names are ClusterNavigatorTokens (--all: all of them).
    #[arg(long)]
    pub cluster: bool,
}

/// Runs a plugin command: its output on stdout, then any error on stderr (as kubectl: `error: ...`).
pub async fn main(args: PluginArgs) -> ExitCode {
    let mut out = String::new();
    let result = run(args, &mut out).await;
    // What was done before an error is printed too (the renewals that were made).
    print!("{out}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The API server's message may quote an object, or an admission webhook's text.
            eprintln!("error: {}", printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: PluginArgs, out: &mut String) -> anyhow::Result<()> {
    let (client, namespace) = connect(args.context.as_deref(), args.namespace).await?;
    match args.command {
        PluginCommand::Status { name, cluster: false } => status(&client, &namespace, &name, out).await,
        PluginCommand::Status { name, cluster: true } => cluster_status(&client, &name, out).await,
        PluginCommand::Renew(renew_args) if renew_args.cluster => cluster_renew(&client, &renew_args, out).await,
        PluginCommand::Renew(renew_args) => renew(&client, &namespace, &renew_args, out).await,
        PluginCommand::Inspect { name, cluster, show_token } => inspect(&client, &namespace, &name, cluster, show_token, out).await,
    }
}

/// A client for the kubeconfig context (as kubectl picks it) and the namespace to use.
async fn connect(context: Option<&str>, namespace: Option<String>) -> anyhow::Result<(Client, String)> {
    let config = crate::kubeconfig::load(context).await?;
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config).context("cannot create a Kubernetes client")?, namespace))
}

/// An object named in messages: `NavigatorToken "x" in namespace "y"`, or a cluster-scoped
/// `ClusterNavigatorToken "x"` (no namespace).
struct Named<'a> {
    kind: &'a str,
    plural: &'a str,
    namespace: Option<&'a str>,
    name: &'a str,
}

impl Named<'_> {
    /// A clear error for a failed API call on this object: not found, forbidden (RBAC), or other.
    fn error(&self, verb: &str, err: kube::Error) -> anyhow::Error {
        let Named { kind, plural, namespace, name } = self;
        let (where_, can_i_scope) = match namespace {
            Some(namespace) => (format!(" in namespace {namespace:?}"), format!(" -n {namespace}")),
            None => (String::new(), String::new()),
        };
        match &err {
            kube::Error::Api(status) if status.is_not_found() => anyhow!("{kind} {name:?} not found{where_}"),
            kube::Error::Api(status) if status.is_forbidden() => anyhow!(
                "not allowed to {verb} {kind} {name:?}{where_}: {} (check with: kubectl auth can-i {verb} {plural}{can_i_scope})",
                status.message
            ),
            _ => anyhow::Error::new(err).context(format!("cannot {verb} {kind} {name:?}{where_}")),
        }
    }
}

async fn get_token(client: &Client, namespace: &str, name: &str) -> anyhow::Result<NavigatorToken> {
    let api: Api<NavigatorToken> = Api::namespaced(client.clone(), namespace);
    let named = Named { kind: "NavigatorToken", plural: "navigatortokens", namespace: Some(namespace), name };
    api.get(name).await.map_err(|e| named.error("get", e))
}

async fn get_cluster_token(client: &Client, name: &str) -> anyhow::Result<ClusterNavigatorToken> {
    let api: Api<ClusterNavigatorToken> = Api::all(client.clone());
    let named = Named { kind: "ClusterNavigatorToken", plural: "clusternavigatortokens", namespace: None, name };
    api.get(name).await.map_err(|e| named.error("get", e))
}

/// The Secret `name` in `namespace`; a missing one is `Ok(None)`.
async fn get_secret(client: &Client, name: &str, namespace: &str) -> anyhow::Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let named = Named { kind: "Secret", plural: "secrets", namespace: Some(namespace), name };
    api.get_opt(name).await.map_err(|e| named.error("get", e))
}

/// One line of the label column layout; `indent` nests it under the line above. Every string
/// from the cluster is shown through here (or [`printable`]): label and value are made
/// [`printable`].
fn line(out: &mut String, indent: usize, label: &str, value: impl std::fmt::Display) {
    let (label, value) = (printable(label), printable(&value.to_string()));
    let label = format!("{:indent$}{label}:", "");
    // A label too long for the column (a namespace name) still gets a space before its value.
    let width = LABEL_WIDTH.max(label.len() + 1);
    out.push_str(&format!("{label:<width$}{value}\n"));
}

/// `text` as it may be shown on a terminal. What the plugin prints comes from objects that
/// tenants write (a Secret's annotations and token, status messages that quote them or an
/// endpoint), so control characters (ESC, BEL, CR, newline, …) and the bidirectional overrides
/// are written as escapes (`\u{1b}`, `\n`): such a string can neither drive the terminal (set
/// its title, clear the screen, hide text) nor break the layout of its line.
fn printable(text: &str) -> String {
    let hidden = |c: char| c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(hidden) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An RFC 3339 time with how far it is from `now` (`in 20m`, `5m ago`); other text as it is.
fn when(time: &str, now: Timestamp) -> String {
    let Ok(t) = time.parse::<Timestamp>() else { return time.to_owned() };
    let seconds = t.as_second() - now.as_second();
    let span = crate::duration::format(std::time::Duration::from_secs(seconds.unsigned_abs()));
    // Now counts as past: a failure that just happened reads "0s ago", not "in 0s".
    if seconds > 0 { format!("{time} (in {span})") } else { format!("{time} ({span} ago)") }
}

/// `kubectl nvt status NAME`.
async fn status(client: &Client, namespace: &str, name: &str, out: &mut String) -> anyhow::Result<()> {
    let token = get_token(client, namespace, name).await?;
    // A Secret that cannot be read is part of the picture, not a reason to hide the rest.
    let secret = get_secret(client, &token.target_secret_name(), namespace).await.map_err(|e| e.to_string());
    out.push_str(&render_status(&token, secret, Timestamp::now()));
    Ok(())
}

/// The `status` screen. Never shows a token: the Secret's data is only compared with its fingerprint.
fn render_status(token: &NavigatorToken, secret: Result<Option<Secret>, String>, now: Timestamp) -> String {
    let mut out = String::new();
    let namespace = token.namespace().unwrap_or_default();
    line(&mut out, 0, "NavigatorToken", format!("{namespace}/{}", token.name_any()));
    let status = token.status.clone().unwrap_or_default();
    let no_status = "unknown (no status yet: is the operator running and watching this namespace?)";
    render_token_status(&mut out, token.spec.suspend, &status, no_status, now);
    line(&mut out, 0, "Secret", format!("{namespace}/{}", token.target_secret_name()));
    match secret {
        Err(message) => line(&mut out, 2, "Readable", format!("no: {message}")),
        Ok(None) => line(&mut out, 2, "Exists", "no"),
        Ok(Some(secret)) => render_secret_state(&mut out, token, &secret, now),
    }
    out
}

/// What both kinds' status screens show of the token: suspension, conditions, the last failure,
/// the schedule and the CSP API token's own expiry. `no_status` is the Ready line without a status.
fn render_token_status(out: &mut String, suspended: bool, status: &NavigatorTokenStatus, no_status: &str, now: Timestamp) {
    if suspended {
        line(out, 0, "Suspended", "yes (spec.suspend: no refreshes)");
    }
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    match condition(READY) {
        Some(ready) => render_condition(out, READY, ready, now),
        None => line(out, 0, READY, no_status),
    }
    match &status.last_failure {
        Some(failure) => {
            line(out, 0, "Last failure", format!("{} {}", failure.reason, when(&failure.time, now)));
            line(out, 2, "Message", &failure.message);
            line(out, 2, "Consecutive failures", status.consecutive_failures);
        }
        None => line(out, 0, "Last failure", "none"),
    }
    let time = |t: &Option<String>| t.as_deref().map_or_else(|| "-".to_owned(), |t| when(t, now));
    line(out, 0, "Next refresh", time(&status.next_refresh_at));
    line(out, 0, "Expires", time(&status.expires_at));
    line(out, 0, "Issued", time(&status.issued_at));
    line(out, 0, "Granted lifetime", status.granted_lifetime.as_deref().unwrap_or("-"));
    if let Some(rollouts) = condition(ROLLOUTS_RESTARTED) {
        render_condition(out, ROLLOUTS_RESTARTED, rollouts, now);
    }
    if let Some(credentials) = &status.credentials {
        let expiry = match (&credentials.api_token_expires_at, credentials.api_token_never_expires) {
            (_, true) => "never".to_owned(),
            (Some(at), false) => when(at, now),
            (None, false) => "unknown".to_owned(),
        };
        line(out, 0, "API token expires", expiry);
        line(out, 2, "Checked", time(&credentials.api_token_checked_at));
    }
    if let Some(expiring) = condition(CREDENTIALS_EXPIRING) {
        render_condition(out, CREDENTIALS_EXPIRING, expiring, now);
    }
}

/// `kubectl nvt status --cluster NAME`.
async fn cluster_status(client: &Client, name: &str, out: &mut String) -> anyhow::Result<()> {
    let token = get_cluster_token(client, name).await?;
    out.push_str(&render_cluster_status(&token, Timestamp::now()));
    Ok(())
}

/// The `status --cluster` screen: the token's part as for a NavigatorToken, then the namespace
/// counts and failures from the status. The Secrets (in tenant namespaces) are not read.
fn render_cluster_status(token: &ClusterNavigatorToken, now: Timestamp) -> String {
    let mut out = String::new();
    line(&mut out, 0, "ClusterNavigatorToken", token.name_any());
    let status = token.status.clone().unwrap_or_default();
    let no_status = "unknown (no status yet: is the operator running, watching all namespaces, with --cluster-tokens?)";
    render_token_status(&mut out, token.spec.suspend, &status.token, no_status, now);
    line(&mut out, 0, "Secret", format!("{} in each selected namespace", token.target_secret_name()));
    match status.namespaces {
        Some(counts) => {
            line(&mut out, 2, "Selected", counts.selected);
            line(&mut out, 2, "Written", counts.written);
            line(&mut out, 2, "Failed", counts.failed);
        }
        None => line(&mut out, 2, "Namespaces", "unknown (no counts in the status yet)"),
    }
    if !status.namespace_failures.is_empty() {
        // The status lists only the first few; the count above says how many there are.
        out.push_str("Namespace failures:\n");
        for failure in &status.namespace_failures {
            line(&mut out, 2, &failure.namespace, format!("{}: {}", failure.reason, failure.message));
        }
    }
    out
}

fn render_condition(out: &mut String, type_: &str, condition: &Condition, now: Timestamp) {
    let since = when(&rfc3339(condition.last_transition_time.0), now);
    line(out, 0, type_, format!("{} ({}) since {since}", condition.status, condition.reason));
    if !condition.message.is_empty() {
        line(out, 2, "Message", &condition.message);
    }
}

fn render_secret_state(out: &mut String, token: &NavigatorToken, secret: &Secret, now: Timestamp) {
    line(out, 2, "Exists", "yes");
    let managed = if is_ours(secret, &token.placement()) {
        "yes".to_owned()
    } else {
        format!("no (not labelled {MANAGED_BY_LABEL}={MANAGED_BY_VALUE} with {TOKEN_NAME_ANNOTATION}={})", token.name_any())
    };
    line(out, 2, "Managed", managed);
    line(out, 2, "Expires at", secret.annotations().get(EXPIRES_AT_ANNOTATION).map_or_else(|| "-".to_owned(), |t| when(t, now)));
    let key = token.spec.target().access_token_key().to_owned();
    let fingerprint = match secret.data.as_ref().and_then(|data| data.get(&key)) {
        None => format!("no key {key:?}"),
        Some(_) if !secret.annotations().contains_key(TOKEN_FINGERPRINT_ANNOTATION) => {
            format!("key {key:?}: no {TOKEN_FINGERPRINT_ANNOTATION} annotation to compare with")
        }
        Some(value) if is_recorded_token(secret, &value.0) => format!("key {key:?} matches {TOKEN_FINGERPRINT_ANNOTATION}"),
        Some(_) => format!("key {key:?} does NOT match {TOKEN_FINGERPRINT_ANNOTATION} (edited by someone else?)"),
    };
    line(out, 2, "Token", fingerprint);
}

/// `kubectl nvt renew`: one line per NavigatorToken asked for a new token.
async fn renew(client: &Client, namespace: &str, args: &RenewArgs, out: &mut String) -> anyhow::Result<()> {
    let targets: Vec<(String, String)> = if args.all {
        let api: Api<NavigatorToken> =
            if args.all_namespaces { Api::all(client.clone()) } else { Api::namespaced(client.clone(), namespace) };
        let params = args.selector.as_deref().map_or_else(ListParams::default, |s| ListParams::default().labels(s));
        let scope = if args.all_namespaces { "all namespaces".to_owned() } else { format!("namespace {namespace:?}") };
        let list = api.list(&params).await.map_err(|e| match e {
            kube::Error::Api(status) if status.is_forbidden() => {
                anyhow!("not allowed to list NavigatorTokens in {scope}: {}", status.message)
            }
            e => anyhow::Error::new(e).context(format!("cannot list NavigatorTokens in {scope}")),
        })?;
        if list.items.is_empty() {
            out.push_str(&format!("No NavigatorTokens to renew in {scope}\n"));
            return Ok(());
        }
        list.items.iter().map(|t| (t.namespace().unwrap_or_default(), t.name_any())).collect()
    } else {
        args.names.iter().map(|name| (namespace.to_owned(), name.clone())).collect()
    };
    let renewal = Renewal::now();
    for (namespace, name) in &targets {
        let api: Api<NavigatorToken> = Api::namespaced(client.clone(), namespace);
        let named = Named { kind: "NavigatorToken", plural: "navigatortokens", namespace: Some(namespace), name };
        renewal.request(&api, &named, out).await?;
    }
    Ok(())
}

/// `kubectl nvt renew --cluster`: one line per ClusterNavigatorToken asked for a new token.
async fn cluster_renew(client: &Client, args: &RenewArgs, out: &mut String) -> anyhow::Result<()> {
    let api: Api<ClusterNavigatorToken> = Api::all(client.clone());
    let names: Vec<String> = if args.all {
        let params = args.selector.as_deref().map_or_else(ListParams::default, |s| ListParams::default().labels(s));
        let list = api.list(&params).await.map_err(|e| match e {
            kube::Error::Api(status) if status.is_forbidden() => {
                anyhow!(
                    "not allowed to list ClusterNavigatorTokens: {} (check with: kubectl auth can-i list clusternavigatortokens)",
                    status.message
                )
            }
            e => anyhow::Error::new(e).context("cannot list ClusterNavigatorTokens"),
        })?;
        if list.items.is_empty() {
            out.push_str("No ClusterNavigatorTokens to renew\n");
            return Ok(());
        }
        list.items.iter().map(ResourceExt::name_any).collect()
    } else {
        args.names.clone()
    };
    let renewal = Renewal::now();
    for name in &names {
        let named = Named { kind: "ClusterNavigatorToken", plural: "clusternavigatortokens", namespace: None, name };
        renewal.request(&api, &named, out).await?;
    }
    Ok(())
}

/// One `renew` run: the same requested-at time for every object it renews.
struct Renewal {
    requested_at: String,
}

impl Renewal {
    fn now() -> Renewal {
        // Full precision, not seconds: the operator acts on a new value, and two renewals within
        // one second must both count.
        Renewal { requested_at: Timestamp::now().to_string() }
    }

    /// Sets the refresh annotation on `named` (a merge patch) and says so in `out`.
    async fn request<K>(&self, api: &Api<K>, named: &Named<'_>, out: &mut String) -> anyhow::Result<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let requested_at = &self.requested_at;
        let patch = Patch::Merge(json!({"metadata": {"annotations": {REFRESH_REQUESTED_ANNOTATION: requested_at}}}));
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        api.patch(named.name, &params, &patch).await.map_err(|e| named.error("patch", e))?;
        let object = match named.namespace {
            Some(namespace) => format!("{namespace}/{}", named.name),
            None => named.name.to_owned(),
        };
        let kind = named.kind;
        let object = printable(&object);
        out.push_str(&format!("Requested a new token for {kind} {object} ({REFRESH_REQUESTED_ANNOTATION}={requested_at})\n"));
        Ok(())
    }
}

/// `kubectl nvt inspect NAME`; with `--cluster`, the ClusterNavigatorToken's Secret in `namespace`.
async fn inspect(client: &Client, namespace: &str, name: &str, cluster: bool, show_token: bool, out: &mut String) -> anyhow::Result<()> {
    // Each kind says which Secret it writes and under which key, as the operator reads it.
    let (cnvt, token);
    let (place, kind) = if cluster {
        cnvt = get_cluster_token(client, name).await?;
        (cnvt.placement(), "ClusterNavigatorToken")
    } else {
        token = get_token(client, namespace, name).await?;
        (token.placement(), "NavigatorToken")
    };
    let secret_name = &place.secret_name;
    let secret = get_secret(client, secret_name, namespace)
        .await?
        .ok_or_else(|| {
            let status = if cluster { format!("kubectl nvt status --cluster {name}") } else { format!("kubectl nvt status {name} -n {namespace}") };
            anyhow!(
                "Secret {secret_name:?} of {kind} {name:?} not found in namespace {namespace:?}: no token has been written there yet; see why with: {status}"
            )
        })?;
    if cluster && !is_ours(&secret, &place) {
        // Not this ClusterNavigatorToken's (the namespace is not selected, or the name is taken).
        return Err(anyhow!("Secret {namespace}/{secret_name} was not written for ClusterNavigatorToken {name:?}"));
    }
    let key = place.target.access_token_key().to_owned();
    let value = secret.data.as_ref().and_then(|data| data.get(&key)).map(|v| Sensitive::new(String::from_utf8_lossy(&v.0)));
    let value = value.ok_or_else(|| anyhow!("Secret {namespace}/{secret_name} has no key {key:?}"))?;
    out.push_str(&render_inspect(&secret, &key, &value, show_token, Timestamp::now()));
    Ok(())
}

/// The `inspect` screen: annotations and the JWT's displayable claims; the token only when asked.
fn render_inspect(secret: &Secret, key: &str, access_token: &Sensitive, show_token: bool, now: Timestamp) -> String {
    let mut out = String::new();
    line(&mut out, 0, "Secret", format!("{}/{} (key {key})", secret.namespace().unwrap_or_default(), secret.name_any()));
    for (label, annotation) in [("Issued at", ISSUED_AT_ANNOTATION), ("Expires at", EXPIRES_AT_ANNOTATION)] {
        let value = secret.annotations().get(annotation).map_or_else(|| "-".to_owned(), |t| when(t, now));
        line(&mut out, 0, label, format!("{value}  [{annotation}]"));
    }
    match jwt::claims(access_token.expose()) {
        None => line(&mut out, 0, "Claims", "none: the token is not a JWT"),
        Some(claims) => {
            out.push_str("Claims:\n");
            for name in jwt::DISPLAYABLE_CLAIMS {
                let Some(value) = claims.get(*name) else { continue };
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                // exp and iat are Unix seconds; show them as times too.
                let time = (*name == "exp" || *name == "iat").then(|| value.as_i64()).flatten();
                match time.and_then(|s| Timestamp::from_second(s).ok()) {
                    Some(t) => line(&mut out, 2, name, format!("{text} = {}", when(&rfc3339(t), now))),
                    None => line(&mut out, 2, name, text),
                }
            }
        }
    }
    if show_token {
        line(&mut out, 0, "Token", access_token.expose());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name_only() {
        assert!(invoked_as_plugin(Some(OsStr::new("kubectl-nvt"))));
        assert!(invoked_as_plugin(Some(OsStr::new("/home/me/.local/bin/kubectl-nvt"))));
        assert!(invoked_as_plugin(Some(OsStr::new("kubectl-nvt.exe"))));
        assert!(!invoked_as_plugin(Some(OsStr::new("/usr/bin/navigator-token-operator"))));
        assert!(!invoked_as_plugin(Some(OsStr::new("kubectl-nvt-old"))));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn times_say_how_far_away_they_are() {
        let now: Timestamp = "2026-11-29T05:00:00Z".parse().unwrap();
        assert_eq!(when("2026-11-29T05:20:00Z", now), "2026-11-29T05:20:00Z (in 20m)");
        assert_eq!(when("2026-11-29T03:30:00Z", now), "2026-11-29T03:30:00Z (1h30m ago)");
        assert_eq!(when("2026-11-29T05:00:00Z", now), "2026-11-29T05:00:00Z (0s ago)");
        assert_eq!(when("soon", now), "soon");
    }

    /// Sets the terminal's title, rings its bell, clears the screen, and starts a line of its own.
    const HOSTILE: &str = "\x1b]0;pwned\x07 \x1b[2J\r\nFORGED: line \u{202e}txt.exe";

    fn assert_inert(screen: &str) {
        assert!(!screen.contains(['\x1b', '\x07', '\r', '\u{202e}']), "{screen:?}");
        assert!(!screen.lines().any(|l| l.starts_with("FORGED")), "a field broke its line:\n{screen}");
        assert!(screen.contains(r"\u{1b}]0;pwned\u{7} \u{1b}[2J\r\nFORGED: line \u{202e}txt.exe"), "{screen}");
    }

    #[test]
    fn strings_from_the_cluster_cannot_drive_the_terminal_or_break_the_layout() {
        let now: Timestamp = "2026-11-29T04:45:00Z".parse().unwrap();
        let token: NavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": "t", "namespace": "team-a"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "CredentialsInvalid", "message": HOSTILE,
                                "lastTransitionTime": "2026-11-29T04:30:00Z"}],
                "lastFailure": {"time": "2026-11-29T04:30:00Z", "reason": "CredentialsInvalid", "message": HOSTILE},
                "grantedLifetime": HOSTILE,
            },
        }))
        .unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "t", "namespace": "team-a", "annotations": {EXPIRES_AT_ANNOTATION: HOSTILE, ISSUED_AT_ANNOTATION: HOSTILE}},
            "data": {},
        }))
        .unwrap();
        assert_inert(&render_status(&token, Ok(Some(secret.clone())), now));
        assert_inert(&render_status(&token, Err(HOSTILE.to_owned()), now));

        // The token in the Secret is the tenant's to write too: its claims, and the token itself.
        use base64::Engine;
        let claims = json!({"sub": HOSTILE, "iss": HOSTILE, "exp": 1795928400});
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let jwt = Sensitive::new(format!("eyJhbGciOiJub25lIn0.{payload}.{HOSTILE}"));
        let inspected = render_inspect(&secret, "token", &jwt, true, now);
        assert_inert(&inspected);
        assert!(inspected.contains("  sub:"), "{inspected}");

        let cnvt: ClusterNavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken", "metadata": {"name": "vendor"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"namespace": "ops", "name": "creds"},
                     "target": {"namespaceSelector": {}, "secretName": "vendor-token"}},
            "status": {"namespaceFailures": [{"namespace": HOSTILE, "reason": "SecretInvalid", "message": HOSTILE}]},
        }))
        .unwrap();
        assert_inert(&render_cluster_status(&cnvt, now));
        assert_eq!(printable("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
    }

    #[test]
    fn the_cluster_status_screen_lines_up_and_lists_the_namespace_failures() {
        let now: Timestamp = "2026-11-29T04:45:00Z".parse().unwrap();
        let cnvt: ClusterNavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken",
            "metadata": {"name": "vendor"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"namespace": "ops", "name": "creds"},
                     "target": {"namespaceSelector": {}, "secretName": "vendor-token"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "NamespacesFailing",
                                "message": "1 of 3 namespaces hold no valid token in Secret vendor-token (a-tenant-namespace-with-a-long-name)", "lastTransitionTime": "2026-11-29T04:30:00Z"}],
                "issuedAt": "2026-11-29T04:30:00Z", "expiresAt": "2026-11-29T05:00:00Z", "nextRefreshAt": "2026-11-29T04:50:00Z",
                "grantedLifetime": "30m", "namespaces": {"selected": 3, "written": 2, "failed": 1},
                "namespaceFailures": [{"namespace": "a-tenant-namespace-with-a-long-name", "reason": "SecretConflict",
                                       "message": "Secret a-tenant-namespace-with-a-long-name/vendor-token already exists"}],
            },
        }))
        .unwrap();
        let expected = "\
ClusterNavigatorToken:   vendor
Ready:                   False (NamespacesFailing) since 2026-11-29T04:30:00Z (15m ago)
  Message:               1 of 3 namespaces hold no valid token in Secret vendor-token (a-tenant-namespace-with-a-long-name)
Last failure:            none
Next refresh:            2026-11-29T04:50:00Z (in 5m)
Expires:                 2026-11-29T05:00:00Z (in 15m)
Issued:                  2026-11-29T04:30:00Z (15m ago)
Granted lifetime:        30m
Secret:                  vendor-token in each selected namespace
  Selected:              3
  Written:               2
  Failed:                1
Namespace failures:
  a-tenant-namespace-with-a-long-name: SecretConflict: Secret a-tenant-namespace-with-a-long-name/vendor-token already exists
";
        assert_eq!(render_cluster_status(&cnvt, now), expected);
    }
}
