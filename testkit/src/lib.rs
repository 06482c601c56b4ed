//! Loopback stand-ins used by the operator's tests and benchmark: a Kubernetes API server
//! (`apiserver`), the two VMware token endpoints (`token_server`) and an egress proxy
//! (`connect_proxy`). They bind 127.0.0.1 only.

pub mod apiserver;
pub mod connect_proxy;
pub mod token_server;
