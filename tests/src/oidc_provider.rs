//! The OpenID Connect provider of the single sign-on tests: `console/e2e/oidc-provider.mjs`
//! (npm `oidc-provider`, installed with the console's packages) as a child process on
//! loopback, its users file (rewritten to move users between groups), key rotation (a
//! restart with a new signing key), misbehaviour on demand, and a sign-in walked through it
//! without a browser (`oidc-flow.mjs`) up to the provider's redirect back to the collector.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::CollectorProc;
use crate::{free_addr, wait_for};

/// The client secret the provider and the collector's `[oidc]` share in the tests.
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console")
}

pub struct OidcProvider {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
    redirect: String,
}

impl OidcProvider {
    /// A provider to run in `dir`, its address chosen (the collector's `[oidc] issuer` needs
    /// it before the provider can know the collector's callback).
    pub fn new(dir: &Path) -> OidcProvider {
        std::fs::create_dir_all(dir).expect("mkdir");
        OidcProvider {
            child: None,
            addr: free_addr(),
            dir: dir.to_owned(),
            redirect: String::new(),
        }
    }

    /// Starts it for a collector whose callback is `redirect`, knowing `users`
    /// (`{"alice": {"groups": ["sre"]}, ...}`), and waits until it answers.
    pub fn start(&mut self, redirect: &str, users: &Value) {
        self.redirect = redirect.to_owned();
        self.set_users(users);
        self.launch(false);
    }

    fn launch(&mut self, rotate: bool) {
        assert!(
            console_dir().join("node_modules/oidc-provider").exists(),
            "console/node_modules is missing: run scripts/test.sh (it runs npm ci)"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("provider.log"))
            .expect("log");
        let child = Command::new("node")
            .arg("e2e/oidc-provider.mjs")
            .current_dir(console_dir())
            .env("OP_PORT", self.addr.port().to_string())
            .env("RP_REDIRECT", &self.redirect)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("USERS_FILE", self.dir.join("users.json"))
            .env("KEYS_FILE", self.dir.join("jwks.json"))
            .env("ROTATE", if rotate { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run node (Node 20 is on every machine this runs on)");
        self.child = Some(child);
        let addr = self.addr;
        wait_for("oidc-provider", Duration::from_secs(30), || {
            crate::api::request(addr, "GET", "/.well-known/openid-configuration", None, None)
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// The issuer, as `[oidc] issuer` must name it.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the users (read again at every sign-in).
    pub fn set_users(&self, users: &Value) {
        std::fs::write(self.dir.join("users.json"), users.to_string()).expect("users.json");
    }

    /// Makes the next ID tokens misbehave: `wrong_aud`, `expired`, `wrong_nonce`,
    /// `unknown_key`, or `none`.
    pub fn tamper(&self, mode: &str) {
        let r = crate::api::request(
            self.addr,
            "POST",
            &format!("/test/tamper?mode={mode}"),
            None,
            None,
        )
        .expect("tamper");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Stops the provider (it is down until `restart`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, with a new signing key first when `rotate`.
    pub fn restart(&mut self, rotate: bool) {
        self.stop();
        self.launch(rotate);
    }

    /// Walks a sign-in of `user` from the collector at `collector` to the provider's
    /// redirect back.
    pub fn walk(&self, collector: SocketAddr, user: &str) -> Walk {
        let out = Command::new("node")
            .arg("e2e/oidc-flow.mjs")
            .arg(format!("http://{collector}"))
            .arg(user)
            .current_dir(console_dir())
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "oidc-flow: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("oidc-flow output");
        match v["callback"].as_str() {
            Some(url) => Walk::Back {
                path: url
                    .split_once(&collector.to_string())
                    .map(|(_, p)| p.to_owned())
                    .expect("callback on the collector"),
                binding: v["binding"].as_str().unwrap_or_default().to_owned(),
            },
            None => Walk::Refused(v["refused"].as_str().unwrap_or_default().to_owned()),
        }
    }
}

/// Turns on single sign-on at `op` for the collector `c` (stopped, configured, started
/// again), with `bindings` (`[[oidc.group_binding]]` tables), then starts `op` for it,
/// knowing `users`.
pub fn connect(c: &mut CollectorProc, op: &mut OidcProvider, bindings: &str, users: &Value) {
    let dir = c.config.parent().expect("config dir").to_owned();
    std::fs::write(dir.join("oidc-secret"), format!("{CLIENT_SECRET}\n")).expect("secret");
    c.stop();
    c.child = None;
    let mut text = std::fs::read_to_string(&c.config).expect("config");
    text.push_str(&format!(
        "\n[oidc]\nissuer = \"{}\"\nclient_id = \"mcpwatch\"\n\
         client_secret = {{ file = \"oidc-secret\" }}\n\
         redirect_url = \"http://{}/api/v1/oidc/callback\"\n\
         display_name = \"Test IdP\"\nsession_lifetime = \"1h\"\n{bindings}",
        op.issuer(),
        c.http
    ));
    std::fs::write(&c.config, text).expect("config");
    c.restart();
    op.start(&format!("http://{}/api/v1/oidc/callback", c.http), users);
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a walked sign-in ended.
#[derive(Debug, Clone)]
pub enum Walk {
    /// The provider sends the browser back: the callback's path and query, and the binding
    /// cookie the collector set when the sign-in started.
    Back { path: String, binding: String },
    /// The collector refused to start it: its redirect (`/?sso_error=...`).
    Refused(String),
}
