//! Single sign-on through an OpenID Connect provider: `[oidc]` settings, the relying party
//! (discovery, keys, the authorization code flow with PKCE, ID-token checks), the sign-ins
//! under way, and the identity a token proves. The API's `oidc` routes drive it; accounts
//! and their group bindings are the store's (`store::query::oidc`).

mod error;
mod identity;
pub mod pending;
mod relying_party;
pub mod settings;
mod transport;

pub use error::OidcError;
pub use identity::Identity;
pub use relying_party::{printable, Callback, RelyingParty};
pub use settings::{OidcSettings, RawOidc};
