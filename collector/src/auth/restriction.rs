//! What a login session may do before its account is in order: a password past the policy's
//! maximum age must be changed, and an account the policy requires a second factor of must
//! enrol one, before anything else. Decided per request from the account as it is now, so a
//! change (the new password, the confirmed factor) frees the session at once.

use axum::http::Method;

use super::settings::{AuthSettings, MfaRequirement};
use super::{Grant, Permission};

/// The one thing a restricted session must do first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    PasswordExpired,
    MfaEnrollment,
}

/// The account behind a login session, as far as restrictions go.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    pub user_id: i64,
    pub password_changed_ms: i64,
    /// When the session passed a second factor (`None`: it did not).
    pub session_mfa_ms: Option<i64>,
    pub grants: &'a [Grant],
}

impl Restriction {
    /// The error code the API answers with.
    pub fn code(self) -> &'static str {
        match self {
            Restriction::PasswordExpired => "password_expired",
            Restriction::MfaEnrollment => "mfa_enrollment_required",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Restriction::PasswordExpired => {
                "your password has expired: change it (PUT /api/v1/users/{your id}/password) first"
            }
            Restriction::MfaEnrollment => {
                "this account must sign in with a second factor: enrol one (POST /api/v1/me/mfa/totp) first"
            }
        }
    }

    /// The restriction on a login session of `account` at `now_ms`, if any (API tokens have
    /// none: they are the machine path).
    pub fn of(settings: &AuthSettings, account: &Account<'_>, now_ms: i64) -> Option<Restriction> {
        if needs_mfa(settings.require_mfa, account.grants) && account.session_mfa_ms.is_none() {
            return Some(Restriction::MfaEnrollment);
        }
        settings
            .password
            .expired(account.password_changed_ms, now_ms)
            .then_some(Restriction::PasswordExpired)
    }

    /// Whether a restricted session may still make this request: see who it is, sign out,
    /// and do what is asked of it.
    pub fn allows(self, method: &Method, path: &str, user_id: i64) -> bool {
        let path = path.trim_end_matches('/');
        let always = (method == Method::GET && path == "/api/v1/me")
            || (method == Method::DELETE && path == "/api/v1/sessions/current");
        always
            || match self {
                Restriction::PasswordExpired => {
                    method == Method::PUT && path == format!("/api/v1/users/{user_id}/password")
                }
                Restriction::MfaEnrollment => {
                    (method == Method::GET && path == "/api/v1/me/mfa")
                        || (method == Method::POST
                            && matches!(
                                path,
                                "/api/v1/me/mfa/totp" | "/api/v1/me/mfa/totp/confirm"
                            ))
                }
            }
    }
}

/// Whether accounts holding `grants` must sign in with a second factor.
pub fn needs_mfa(requirement: MfaRequirement, grants: &[Grant]) -> bool {
    match requirement {
        MfaRequirement::None => false,
        MfaRequirement::All => true,
        MfaRequirement::Admins => grants.iter().any(|g| {
            matches!(
                g.permission,
                Permission::UsersAdmin | Permission::AdminBackup
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    #[test]
    fn auth_restriction_follows_policy_and_allows_only_the_way_out() {
        let admin = [Grant {
            permission: Permission::UsersAdmin,
            scope: Scope::AllHosts,
        }];
        let viewer = [Grant {
            permission: Permission::HostsRead,
            scope: Scope::AllHosts,
        }];
        let mut settings = AuthSettings::default();
        let account = |grants, mfa: Option<i64>| Account {
            user_id: 7,
            password_changed_ms: 0,
            session_mfa_ms: mfa,
            grants,
        };
        assert_eq!(Restriction::of(&settings, &account(&admin, None), 1), None);
        settings.require_mfa = MfaRequirement::Admins;
        assert_eq!(
            Restriction::of(&settings, &account(&admin, None), 1),
            Some(Restriction::MfaEnrollment)
        );
        assert_eq!(Restriction::of(&settings, &account(&viewer, None), 1), None);
        assert_eq!(
            Restriction::of(&settings, &account(&admin, Some(1)), 1),
            None
        );
        settings.password.max_age_ms = Some(1_000);
        assert_eq!(
            Restriction::of(&settings, &account(&viewer, None), 1_000),
            Some(Restriction::PasswordExpired)
        );

        let r = Restriction::PasswordExpired;
        assert!(r.allows(&Method::GET, "/api/v1/me", 7));
        assert!(r.allows(&Method::DELETE, "/api/v1/sessions/current", 7));
        assert!(r.allows(&Method::PUT, "/api/v1/users/7/password", 7));
        assert!(!r.allows(&Method::PUT, "/api/v1/users/8/password", 7));
        assert!(!r.allows(&Method::GET, "/api/v1/hosts", 7));
        assert!(!r.allows(&Method::POST, "/api/v1/me/mfa/totp", 7));
        let m = Restriction::MfaEnrollment;
        assert!(m.allows(&Method::POST, "/api/v1/me/mfa/totp", 7));
        assert!(m.allows(&Method::POST, "/api/v1/me/mfa/totp/confirm", 7));
        assert!(!m.allows(&Method::POST, "/api/v1/tokens", 7));
        assert!(!m.allows(&Method::PUT, "/api/v1/users/7/password", 7));
    }
}
