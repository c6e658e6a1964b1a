//! The relying party: sends a browser to the provider (authorization code flow, PKCE S256,
//! a fresh `state` and `nonce`), and turns the callback into a verified identity: the code
//! exchanged with the client secret and the PKCE verifier, the ID token's signature checked
//! against the provider's keys (fetched again once when a token names a key not seen yet:
//! rotation), its `iss`, `aud`, `exp`, `iat` (within the clock skew) and `nonce` checked.
//! Discovery is cached for an hour, and a stale copy is used while the provider is down.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims,
    IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::error::OidcError;
use super::identity::Identity;
use super::pending::PendingLogins;
use super::settings::OidcSettings;
use super::transport;

/// Every claim the provider sends beyond the standard ones (the groups claim among them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

pub type Claims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;
type Fields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type RpClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Discovery is fetched again after this.
const REFRESH: Duration = Duration::from_secs(3600);
/// After a failed discovery, a stale copy serves this long before the next try.
const RETRY: Duration = Duration::from_secs(60);
/// The provider's keys are fetched again for an unknown key at most this often. Tokens come
/// from the provider's own token endpoint (never from the browser), so only a misbehaving
/// provider names unknown keys; this bounds what it can make the collector fetch.
const KEYS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// An ID token issued longer ago than this (plus the skew) is refused: a code is redeemed
/// within seconds of its issue.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(600);
/// Requests to the provider time out after this.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Signature algorithms accepted: the asymmetric ones (never `none`, never an HMAC keyed
/// with the client secret).
const ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

struct Discovered {
    metadata: CoreProviderMetadata,
    /// When discovery is due again.
    due: Instant,
    keys_fetched: Instant,
}

/// What the provider's callback carries (`/oidc/callback?...`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    /// RFC 9207: the issuer that answers; must be ours when present.
    pub iss: Option<String>,
    /// The provider refused (`access_denied`, ...).
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The relying party of one `[oidc]` provider (the API's handle on single sign-on).
pub struct RelyingParty {
    pub settings: OidcSettings,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<Discovered>>,
    pub pending: PendingLogins,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl RelyingParty {
    pub fn new(settings: OidcSettings) -> Result<RelyingParty, String> {
        Ok(RelyingParty {
            settings,
            http: transport::client(TIMEOUT)?,
            discovered: tokio::sync::Mutex::new(None),
            pending: PendingLogins::default(),
        })
    }

    /// The provider's metadata: cached, fetched when due; a stale copy while it is down.
    async fn metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        let mut cached = self.discovered.lock().await;
        let now = Instant::now();
        if let Some(d) = cached.as_ref().filter(|d| now < d.due) {
            return Ok(d.metadata.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
        let http = |r| transport::send(self.http.clone(), r);
        match CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| e.to_string())
            .and_then(|m| endpoints_safe(&m).map(|()| m))
        {
            Ok(metadata) => {
                *cached = Some(Discovered {
                    metadata: metadata.clone(),
                    due: now + REFRESH,
                    keys_fetched: now,
                });
                Ok(metadata)
            }
            Err(why) => match cached.as_mut() {
                Some(d) => {
                    tracing::warn!(error = %why, "OIDC discovery failed; using the copy from before");
                    d.due = now + RETRY;
                    Ok(d.metadata.clone())
                }
                None => Err(OidcError::ProviderUnavailable(why)),
            },
        }
    }

    /// Fetches the provider's keys again (a token named a key not in the cached set), at
    /// most every [`KEYS_MIN_INTERVAL`]; the refreshed metadata, or `None` if too soon.
    async fn refresh_keys(&self) -> Result<Option<CoreProviderMetadata>, OidcError> {
        let mut cached = self.discovered.lock().await;
        let Some(d) = cached.as_mut() else {
            return Ok(None);
        };
        if d.keys_fetched.elapsed() < KEYS_MIN_INTERVAL {
            return Ok(None);
        }
        d.keys_fetched = Instant::now();
        let http = |r| transport::send(self.http.clone(), r);
        let keys = CoreJsonWebKeySet::fetch_async(d.metadata.jwks_uri(), &http)
            .await
            .map_err(|e| OidcError::ProviderUnavailable(e.to_string()))?;
        d.metadata = d.metadata.clone().set_jwks(keys);
        tracing::info!("OIDC signing keys fetched again");
        Ok(Some(d.metadata.clone()))
    }

    fn client(&self, metadata: CoreProviderMetadata) -> Result<RpClient, OidcError> {
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect_url: {e}")))?;
        Ok(RpClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(redirect))
    }

    /// Whether the provider answers its discovery document now: a browser is not sent to
    /// a provider that is down (the console says so instead). One request per sign-in
    /// started, which `/oidc/login` limits per address like logins.
    async fn reachable(&self) -> Result<(), OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let down = |why: String| OidcError::ProviderUnavailable(why);
        let answer = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| down(e.without_url().to_string()))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(down(format!("discovery answered {}", answer.status())))
        }
    }

    /// Starts a sign-in for the browser holding `binding`: the provider URL to send it to.
    pub async fn begin(&self, binding: &str, return_to: String) -> Result<String, OidcError> {
        self.reachable().await?;
        let client = self.client(self.metadata().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        self.pending.insert(
            state.secret().clone(),
            binding,
            nonce.secret().clone(),
            verifier.secret().clone(),
            return_to,
            Instant::now(),
        );
        Ok(url.to_string())
    }

    /// Finishes the sign-in a callback answers: the verified identity, and where the
    /// browser wanted to land. The sign-in is used up whatever the outcome.
    pub async fn finish(
        &self,
        callback: Callback,
        binding: Option<&str>,
    ) -> Result<(Identity, String), OidcError> {
        let state = callback
            .state
            .as_deref()
            .ok_or(OidcError::Malformed("state"))?;
        let pending = self
            .pending
            .take(state, binding, Instant::now())
            .map_err(OidcError::Pending)?;
        if let Some(error) = callback.error {
            return Err(OidcError::ProviderRefused(printable(&error, 64)));
        }
        if let Some(iss) = &callback.iss {
            if *iss != self.settings.issuer {
                return Err(OidcError::WrongIssuer);
            }
        }
        let code = callback.code.ok_or(OidcError::Malformed("code"))?;
        let client = self.client(self.metadata().await?)?;
        let http = |r| transport::send(self.http.clone(), r);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let id_token = tokens.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(pending.nonce);
        let claims = match id_token.claims(&self.verifier(&client), &nonce) {
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => match self.refresh_keys().await? {
                Some(metadata) => {
                    let client = self.client(metadata)?;
                    let verifier = self.verifier(&client);
                    let claims = id_token.claims(&verifier, &nonce).cloned();
                    claims
                }
                None => Err(
                    openidconnect::ClaimsVerificationError::SignatureVerification(
                        openidconnect::SignatureVerificationError::NoMatchingKey,
                    ),
                ),
            },
            other => other.cloned(),
        }
        .map_err(OidcError::from_claims)?;
        let identity = Identity::from_claims(&self.settings, &claims)?;
        Ok((identity, pending.return_to))
    }

    fn verifier<'a>(
        &self,
        client: &'a RpClient,
    ) -> openidconnect::IdTokenVerifier<'a, CoreJsonWebKey> {
        let skew = TimeDelta::from_std(self.settings.clock_skew).unwrap_or(TimeDelta::zero());
        let oldest = TimeDelta::from_std(MAX_TOKEN_AGE).unwrap_or(TimeDelta::zero()) + skew;
        client
            .id_token_verifier()
            .set_allowed_algs(ALGS)
            // `exp` is compared with this: a token is good until `exp + skew`.
            .set_time_fn(move || Utc::now() - skew)
            .set_issue_time_verifier_fn(move |iat| {
                let now = Utc::now();
                if iat > now + skew {
                    Err(format!("issued in the future ({iat})"))
                } else if iat < now - oldest {
                    Err(format!("issued too long ago ({iat})"))
                } else {
                    Ok(())
                }
            })
    }
}

/// The endpoints the provider advertises take the client secret, codes and keys: held to
/// the issuer's rule (https, or http on loopback) whatever host they name.
fn endpoints_safe(m: &CoreProviderMetadata) -> Result<(), String> {
    let mut urls = vec![
        (
            "authorization_endpoint",
            m.authorization_endpoint().url().as_str(),
        ),
        ("jwks_uri", m.jwks_uri().url().as_str()),
    ];
    if let Some(t) = m.token_endpoint() {
        urls.push(("token_endpoint", t.url().as_str()));
    }
    for (name, url) in urls {
        super::settings::check_url(url).map_err(|e| format!("the provider's {name}: {e}"))?;
    }
    Ok(())
}

/// At most `max` printable ASCII characters of `text` (a provider's words, for logs and
/// audit rows).
pub fn printable(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

fn token_error(
    e: RequestTokenError<transport::TransportError, StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            OidcError::CodeRefused(printable(r.error().as_ref(), 64))
        }
        RequestTokenError::Request(e) => OidcError::ProviderUnavailable(e.to_string()),
        RequestTokenError::Parse(e, _) => OidcError::BadAnswer(e.to_string()),
        RequestTokenError::Other(e) => OidcError::BadAnswer(e),
    }
}
