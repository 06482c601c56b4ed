//! The token endpoint stand-in as a process, for trying the operator without a VMware account
//! (`testkit/try-locally.sh`): serves Navigator and CSP tokens on 127.0.0.1 until stopped.
//!
//!   cargo run -p testkit --bin token-endpoint -- [LIFETIME_SECONDS]
//!
//! Prints one line, `http://127.0.0.1:PORT`, then a log line per token issued. It accepts the
//! client id `testkit-client` with the secret `testkit-secret`.

use std::time::Duration;

use testkit::token_server::{TokenServer, TokenServerConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(120);
    let server = TokenServer::start(TokenServerConfig { lifetime: Duration::from_secs(seconds), ..TokenServerConfig::default() }).await;
    println!("{}", server.base_url());
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let count = server.request_count();
        if count > seen {
            seen = count;
            eprintln!("token-endpoint: token request #{count} answered (tokens live {seconds} s)");
        }
    }
}
