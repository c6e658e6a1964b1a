//! Sign-ins under way: what `/oidc/login` chose (nonce, PKCE verifier, where to land) kept
//! under the `state` it sent the browser off with, until `/oidc/callback` takes it back —
//! once. Each is bound to the browser that started it by a random value in a cookie, so a
//! callback URL planted in another browser (login CSRF) is refused. In memory: a restart
//! only makes sign-ins under way start again. Bounded (when full, the oldest goes: a flood
//! of started sign-ins cannot lock everyone out of starting one), and entries expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::digest::{digest, SHA256};

/// How long a browser may spend at the provider.
pub const TTL: Duration = Duration::from_secs(600);
/// Sign-ins under way at most (beyond: the oldest is dropped).
pub const MAX_PENDING: usize = 10_000;

/// One sign-in under way (its secrets never printed).
pub struct PendingLogin {
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where the console wants to land afterwards (a local path).
    pub return_to: String,
    /// SHA-256 of the browser's binding cookie.
    binding: Vec<u8>,
    started: Instant,
}

/// Why a callback's `state` is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    #[error("no sign-in is under way with this state (unknown, already used, or expired)")]
    UnknownState,
    #[error("the sign-in was started in another browser")]
    OtherBrowser,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct PendingLogins {
    by_state: Mutex<HashMap<String, PendingLogin>>,
}

fn hash(binding: &str) -> Vec<u8> {
    digest(&SHA256, binding.as_bytes()).as_ref().to_vec()
}

impl PendingLogins {
    /// Keeps a sign-in under `state`, bound to the browser holding `binding`.
    pub fn insert(
        &self,
        state: String,
        binding: &str,
        nonce: String,
        pkce_verifier: String,
        return_to: String,
        now: Instant,
    ) {
        let mut map = self.by_state.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PENDING {
            map.retain(|_, p| now.duration_since(p.started) < TTL);
        }
        if map.len() >= MAX_PENDING {
            let oldest = map
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            state,
            PendingLogin {
                nonce,
                pkce_verifier,
                return_to,
                binding: hash(binding),
                started: now,
            },
        );
    }

    /// Takes the sign-in under `state` back (it cannot be taken twice), if it is live and
    /// `binding` is the browser's that started it.
    pub fn take(
        &self,
        state: &str,
        binding: Option<&str>,
        now: Instant,
    ) -> Result<PendingLogin, PendingError> {
        let mut map = self.by_state.lock().unwrap_or_else(|p| p.into_inner());
        let p = map.remove(state).ok_or(PendingError::UnknownState)?;
        if now.duration_since(p.started) >= TTL {
            return Err(PendingError::UnknownState);
        }
        // Hashes of equal length compared whole: no early exit on the secret's bytes.
        let same = binding.is_some_and(|b| {
            let h = hash(b);
            h.iter()
                .zip(&p.binding)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        });
        if !same {
            return Err(PendingError::OtherBrowser);
        }
        Ok(p)
    }

    pub fn len(&self) -> usize {
        self.by_state.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(p: &PendingLogins, state: &str, now: Instant) {
        p.insert(
            state.into(),
            "cookie-1",
            "n".into(),
            "v".into(),
            "/".into(),
            now,
        )
    }

    #[test]
    fn oidc_pending_sign_ins_are_taken_once_by_their_own_browser_and_expire() {
        let p = PendingLogins::default();
        let t0 = Instant::now();
        add(&p, "s1", t0);
        add(&p, "s2", t0);
        add(&p, "s3", t0);
        assert_eq!(p.take("s1", Some("cookie-1"), t0).unwrap().nonce, "n");
        assert_eq!(
            p.take("s1", Some("cookie-1"), t0).unwrap_err(),
            PendingError::UnknownState,
            "once"
        );
        assert_eq!(
            p.take("s2", Some("cookie-2"), t0).unwrap_err(),
            PendingError::OtherBrowser
        );
        assert_eq!(
            p.take("s2", Some("cookie-1"), t0).unwrap_err(),
            PendingError::UnknownState,
            "a refused callback used it up"
        );
        assert_eq!(
            p.take("s3", None, t0).unwrap_err(),
            PendingError::OtherBrowser
        );
        add(&p, "s4", t0);
        assert_eq!(
            p.take("s4", Some("cookie-1"), t0 + TTL).unwrap_err(),
            PendingError::UnknownState
        );
        assert!(p.is_empty());
    }

    #[test]
    fn oidc_pending_sign_ins_are_bounded_the_oldest_making_room() {
        let p = PendingLogins::default();
        let t0 = Instant::now();
        for i in 0..MAX_PENDING {
            add(
                &p,
                &format!("s{i}"),
                t0 + std::time::Duration::from_millis(i as u64),
            );
        }
        let t1 = t0 + std::time::Duration::from_secs(1);
        add(&p, "newest", t1);
        assert_eq!(p.len(), MAX_PENDING);
        assert!(p.take("newest", Some("cookie-1"), t1).is_ok());
        assert_eq!(
            p.take("s0", Some("cookie-1"), t1).unwrap_err(),
            PendingError::UnknownState,
            "the oldest made room"
        );
        assert!(p.take("s1", Some("cookie-1"), t1).is_ok());
    }
}
