//! Certificate renewal over the agent's mTLS session (protocol version 3): the agent sends
//! a CSR for its own identity when two thirds of its certificate's lifetime have passed,
//! and the collector answers with a certificate, or why not. No token: the session's
//! certificate is the credential, and the collector signs only the identity it proves.

use serde::{Deserialize, Serialize};

/// Agent → collector: a PKCS#10 request (DER) for the session's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_der: Vec<u8>,
}

/// Collector → agent: the answer to a [`RenewRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResult {
    pub ok: bool,
    /// The new certificate (PEM) when `ok`.
    pub certificate_pem: String,
    /// Why not, when not `ok`.
    pub message: String,
}
