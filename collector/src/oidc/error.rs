//! Why a single sign-on failed: a precise reason for the audit log and the collector's log,
//! and a short code the console turns into a message (never the provider's raw answer).

use openidconnect::{ClaimsVerificationError, SignatureVerificationError};

use super::pending::PendingError;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("single sign-on is misconfigured: {0}")]
    Config(String),
    #[error("the identity provider cannot be reached: {0}")]
    ProviderUnavailable(String),
    #[error("{0}")]
    Pending(PendingError),
    #[error("the callback has no {0}")]
    Malformed(&'static str),
    #[error("the identity provider refused the sign-in: {0}")]
    ProviderRefused(String),
    #[error("the callback names another issuer")]
    WrongIssuer,
    #[error("the identity provider refused the code ({0}): replayed, expired or not ours")]
    CodeRefused(String),
    #[error("the identity provider's answer is malformed: {0}")]
    BadAnswer(String),
    #[error("the identity provider answered no ID token")]
    NoIdToken,
    #[error("ID token refused: {reason} ({detail})")]
    IdToken {
        reason: &'static str,
        detail: String,
    },
    #[error("the ID token has no usable {claim} claim: {why}")]
    Claim { claim: String, why: String },
}

impl OidcError {
    /// The code the console shows a message for (`/?sso_error=CODE`).
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::Config(_) => "misconfigured",
            OidcError::ProviderUnavailable(_) => "provider_unavailable",
            OidcError::Pending(PendingError::OtherBrowser) => "other_browser",
            OidcError::Pending(PendingError::UnknownState) | OidcError::Malformed(_) => {
                "expired_or_tampered"
            }
            OidcError::ProviderRefused(_) => "provider_refused",
            OidcError::WrongIssuer
            | OidcError::CodeRefused(_)
            | OidcError::BadAnswer(_)
            | OidcError::NoIdToken
            | OidcError::IdToken { .. } => "token_refused",
            OidcError::Claim { .. } => "claims",
        }
    }

    pub(super) fn from_claims(e: ClaimsVerificationError) -> OidcError {
        let reason = match &e {
            ClaimsVerificationError::Expired(_) => "expired or issued at a wrong time",
            ClaimsVerificationError::InvalidAudience(_) => "wrong audience",
            ClaimsVerificationError::InvalidIssuer(_) => "wrong issuer",
            ClaimsVerificationError::InvalidNonce(_) => "wrong nonce",
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ) => "signed by an unknown key",
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::DisallowedAlg(_),
            ) => "signed with a refused algorithm",
            ClaimsVerificationError::SignatureVerification(_) => "bad signature",
            _ => "invalid",
        };
        OidcError::IdToken {
            reason,
            detail: super::relying_party::printable(&e.to_string(), 200),
        }
    }
}
