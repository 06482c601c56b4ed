//! Loopback stand-ins used by the operator's tests and benchmark: a Kubernetes API server
//! (`apiserver`) and the two VMware token endpoints (`token_server`). They bind 127.0.0.1 only.

pub mod apiserver;
pub mod token_server;
