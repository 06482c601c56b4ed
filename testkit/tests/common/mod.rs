//! Helpers shared by the test API server's test binaries.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

/// Reads a watch stream line by line.
pub struct Watch {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Watch {
    /// Reads the events of an open watch response.
    pub fn new(response: reqwest::Response) -> Watch {
        Watch { response, buffer: Vec::new() }
    }

    /// The next event, or None once the server ended the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a watch line is JSON"));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event that is not a bookmark.
    pub async fn next_change(&mut self) -> Value {
        loop {
            let event = self.next().await.expect("watch ended early");
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }

    /// Asserts that no event other than bookmarks arrives within `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return,
                Ok(Some(event)) if event["type"] == "BOOKMARK" => continue,
                Ok(other) => panic!("expected no event, got {other:?}"),
            }
        }
    }
}
