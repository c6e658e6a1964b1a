//! The admin CLI on the database: `user`, `role` and `token` commands for bootstrap and
//! break-glass, and `audit verify`. Each command opens the database file itself (found through the collector's
//! config, or given with `--db`) and runs in one transaction, so it works whether or not the
//! collector is running; a running collector sees the change on its next request.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use mcpwatch_collector::auth::credential::{self, Kind};
use mcpwatch_collector::auth::password::{self, PasswordPolicy};
use mcpwatch_collector::auth::{permission_names, Permission, Scope};
use mcpwatch_collector::config::{CollectorConfig, DEFAULT_PATH};
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::admin::{audit_cli, with_db};
use mcpwatch_collector::store::audit_chain::{self, Verdict};
use mcpwatch_collector::store::query::{mfa, roles, tokens, users};
use mcpwatch_collector::store::StoreError;
use mcpwatch_common::config::{ConfigError, Duration, EXIT_CONFIG};

/// Where the database is: the collector's config (its `[store] path`) or the file itself.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Collector configuration file whose `[store] path` names the database
    /// [default: /etc/mcpwatch/collector.toml].
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "db")]
    config: Option<PathBuf>,
    /// The database file itself, instead of --config.
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
}

/// How a new password arrives (never as an argument: it would show in `ps`).
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from standard input (one line; the newline is dropped).
    #[arg(long, conflicts_with = "password_file")]
    password_stdin: bool,
    /// Read the password from this file (first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UserCmd {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    action: UserAction,
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create a user, optionally bound to roles.
    Add {
        /// 1 to 64 of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// Bind this role (repeatable: --role admin --role viewer).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Host selector for the role bindings, e.g. '{team="a"}' (default: every host).
        #[arg(long, value_name = "SELECTOR", default_value = "")]
        hosts: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List users with their role bindings.
    List,
    /// Set a user's password (ends the user's sessions; clears a lockout).
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Disable a user: its sessions end and its tokens stop working.
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// Remove a user's second factor (a lost device) and end its sessions; audited.
    MfaReset { name: String },
}

#[derive(Debug, Args)]
pub struct RoleCmd {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    action: RoleAction,
}

#[derive(Debug, Subcommand)]
enum RoleAction {
    /// List roles and their permissions.
    List,
    /// Create (or replace) a custom role.
    Add {
        name: String,
        /// A permission, e.g. hosts:read (repeatable, or comma-separated).
        #[arg(
            long = "permission",
            value_name = "P",
            required = true,
            value_delimiter = ','
        )]
        permissions: Vec<String>,
    },
    /// Delete a custom role nobody is bound to.
    Delete { name: String },
    /// Bind ROLE to USER, for every host or those a selector matches.
    Bind {
        user: String,
        role: String,
        /// Host selector, e.g. '{team="a"}' (default: every host).
        #[arg(long, value_name = "SELECTOR", default_value = "")]
        hosts: String,
    },
    /// Remove USER's binding of ROLE (for exactly that selector).
    Unbind {
        user: String,
        role: String,
        #[arg(long, value_name = "SELECTOR", default_value = "")]
        hosts: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenCmd {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create an API token and print it (the only time it is shown).
    Create {
        /// A label for people.
        name: String,
        /// Owner; without one the token holds every permission (narrowed by --permission).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Limit the token to this permission (repeatable, or comma-separated).
        #[arg(long = "permission", value_name = "P", value_delimiter = ',')]
        permissions: Vec<String>,
        /// Lifetime, e.g. 30d, 12h (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        expires: Option<Duration>,
    },
    /// Revoke a token by id (effective at once).
    Revoke { id: i64 },
    /// List tokens (never their secrets).
    List,
}

#[derive(Debug, Args)]
pub struct AuditCmd {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    action: AuditAction,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Walk the audit log's hash chain from the oldest row retention kept; print OK and
    /// the count, or the first broken row and why (exit status 1).
    Verify,
}

/// Why a command failed.
pub(crate) enum Failure {
    Config(ConfigError),
    Store(StoreError),
    Usage(String),
    /// A check found a problem (exit status 1, like any failure).
    Check(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

pub(crate) fn finish(r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("mcpwatch-collector: invalid configuration: {e}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Err(Failure::Store(e)) => {
            let msg = match e {
                StoreError::Invalid(m) | StoreError::Conflict(m) => m,
                other => other.to_string(),
            };
            eprintln!("mcpwatch-collector: {msg}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(m) | Failure::Check(m)) => {
            eprintln!("mcpwatch-collector: {m}");
            ExitCode::FAILURE
        }
    }
}

impl DbArgs {
    pub(crate) fn path(&self) -> Result<PathBuf, Failure> {
        self.resolve().map(|(db, _)| db)
    }

    /// The database and the password policy: the config's `[auth]`, or the defaults when
    /// the database is given with `--db`.
    fn resolve(&self) -> Result<(PathBuf, PasswordPolicy), Failure> {
        if let Some(db) = &self.db {
            return Ok((db.clone(), PasswordPolicy::default()));
        }
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        CollectorConfig::load(&config)
            .map(|c| (c.db_path, c.api.auth.password))
            .map_err(Failure::Config)
    }
}

impl PasswordArgs {
    /// The password, checked against `policy` for `username`.
    fn read(&self, username: &str, policy: &PasswordPolicy) -> Result<String, Failure> {
        let text = match (&self.password_file, self.password_stdin) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map_err(|e| Failure::Usage(format!("reading {}: {e}", f.display())))?,
            (None, true) => {
                let mut s = String::new();
                std::io::stdin()
                    .take(64 * 1024)
                    .read_to_string(&mut s)
                    .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
                s
            }
            (None, false) => {
                return Err(Failure::Usage(
                    "give the password with --password-stdin or --password-file FILE".into(),
                ))
            }
        };
        let pw = text.lines().next().unwrap_or_default().to_owned();
        policy.check(username, &pw).map_err(Failure::Usage)?;
        Ok(pw)
    }
}

fn parse_permissions(names: &[String]) -> Result<Vec<Permission>, Failure> {
    let mut out = names
        .iter()
        .map(|n| n.trim().parse::<Permission>().map_err(Failure::Usage))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn hash(pw: &str) -> Result<String, Failure> {
    password::hash(pw).map_err(Failure::Usage)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch.
fn utc(ms: i64) -> String {
    mcpwatch_collector::notify::rfc3339_ms(ms)
}

fn perms_text(names: &[String]) -> String {
    names.join(",")
}

pub fn user(cmd: UserCmd) -> ExitCode {
    finish(run_user(cmd))
}

// Over 80 lines on purpose: one match arm per `user` subcommand.
fn run_user(cmd: UserCmd) -> Result<(), Failure> {
    let (db, policy) = cmd.db.resolve()?;
    let now = now_ms();
    match cmd.action {
        UserAction::Add {
            name,
            roles,
            hosts,
            password,
        } => {
            users::check_name("username", &name)?;
            let h = hash(&password.read(&name, &policy)?)?;
            let hosts = Scope::normalize(&hosts).map_err(Failure::Usage)?;
            let id = with_db(&db, |c| {
                let id = users::create_user(c, &name, &h, now)?;
                for role in &roles {
                    roles::bind(c, id, role, &hosts, now)?;
                }
                Ok(id)
            })?;
            println!("user {name} created (id {id}) in {}", db.display());
        }
        UserAction::List => {
            let users = with_db(&db, users::list_users)?;
            println!(
                "{:<6} {:<24} {:<9} {:<21} BINDINGS",
                "ID", "USERNAME", "STATE", "CREATED"
            );
            for u in users {
                let state = if u.disabled {
                    "disabled"
                } else if u.locked_until_ms > now {
                    "locked"
                } else {
                    "active"
                };
                let bindings = u
                    .bindings
                    .iter()
                    .map(|b| {
                        if b.host_selector.is_empty() {
                            b.role.clone()
                        } else {
                            format!("{}@{}", b.role, b.host_selector)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                println!(
                    "{:<6} {:<24} {:<9} {:<21} {}",
                    u.id,
                    u.username,
                    state,
                    utc(u.created_ms),
                    bindings
                );
            }
        }
        UserAction::Passwd { name, password } => {
            let h = hash(&password.read(&name, &policy)?)?;
            with_db(&db, |c| {
                let id = users::existing_user_id(c, &name)?;
                users::set_password(c, id, &h, now, None)?;
                let object = format!("/api/v1/users/{id}/password");
                let detail = format!("password of {name} changed");
                audit_cli(c, now, "PUT /api/v1/users/{id}/password", object, detail)
            })?;
            println!("password of {name} changed; its sessions ended");
        }
        UserAction::Disable { name } => {
            with_db(&db, |c| {
                users::set_disabled(c, users::existing_user_id(c, &name)?, true)
            })?;
            println!("user {name} disabled; its sessions ended");
        }
        UserAction::Enable { name } => {
            with_db(&db, |c| {
                users::set_disabled(c, users::existing_user_id(c, &name)?, false)
            })?;
            println!("user {name} enabled");
        }
        UserAction::MfaReset { name } => {
            with_db(&db, |c| {
                let id = users::existing_user_id(c, &name)?;
                mfa::reset(c, id)?;
                let (action, object) = (
                    "DELETE /api/v1/users/{id}/mfa",
                    format!("/api/v1/users/{id}/mfa"),
                );
                audit_cli(
                    c,
                    now,
                    action,
                    object,
                    format!("second factor of {name} reset"),
                )
            })?;
            println!("second factor of {name} removed; its sessions ended");
        }
    }
    Ok(())
}

pub fn role(cmd: RoleCmd) -> ExitCode {
    finish(run_role(cmd))
}

fn run_role(cmd: RoleCmd) -> Result<(), Failure> {
    let db = cmd.db.path()?;
    let now = now_ms();
    match cmd.action {
        RoleAction::List => {
            println!("{:<24} {:<8} PERMISSIONS", "NAME", "BUILTIN");
            for r in with_db(&db, roles::list_roles)? {
                println!(
                    "{:<24} {:<8} {}",
                    r.name,
                    if r.builtin { "yes" } else { "no" },
                    perms_text(&r.permissions)
                );
            }
        }
        RoleAction::Add { name, permissions } => {
            let perms = parse_permissions(&permissions)?;
            let created = with_db(&db, |c| {
                roles::put_role(c, &name, &permission_names(&perms), now)
            })?;
            let what = if created { "created" } else { "replaced" };
            println!(
                "role {name} {what}: {}",
                perms_text(&permission_names(&perms))
            );
        }
        RoleAction::Delete { name } => {
            if !with_db(&db, |c| roles::delete_role(c, &name))? {
                return Err(Failure::Usage(format!("no role {name:?}")));
            }
            println!("role {name} deleted");
        }
        RoleAction::Bind { user, role, hosts } => {
            let hosts = Scope::normalize(&hosts).map_err(Failure::Usage)?;
            let b = with_db(&db, |c| {
                roles::bind(c, users::existing_user_id(c, &user)?, &role, &hosts, now)
            })?;
            let scope = if b.host_selector.is_empty() {
                "every host".to_owned()
            } else {
                b.host_selector.clone()
            };
            println!("{user} bound to {role} for {scope} (binding {})", b.id);
        }
        RoleAction::Unbind { user, role, hosts } => {
            if !with_db(&db, |c| {
                roles::unbind_role(c, users::existing_user_id(c, &user)?, &role, &hosts)
            })? {
                return Err(Failure::Usage(format!(
                    "{user} has no binding of {role} for {hosts:?}"
                )));
            }
            println!("{user} unbound from {role}");
        }
    }
    Ok(())
}

pub fn token(cmd: TokenCmd) -> ExitCode {
    finish(run_token(cmd))
}

/// The token table of `token list`.
fn print_tokens(tokens: &[tokens::TokenRow], users: &[users::UserRow], now: i64) {
    println!(
        "{:<6} {:<24} {:<16} {:<9} {:<21} {:<21} PERMISSIONS",
        "ID", "NAME", "USER", "STATE", "EXPIRES", "LAST USED"
    );
    for t in tokens {
        let owner = match t.user_id {
            None => "-".to_owned(),
            Some(uid) => users
                .iter()
                .find(|u| u.id == uid)
                .map_or_else(|| format!("#{uid}"), |u| u.username.clone()),
        };
        let state = if t.revoked {
            "revoked"
        } else if t.expires_ms.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<6} {:<24} {:<16} {:<9} {:<21} {:<21} {}",
            t.id,
            t.name,
            owner,
            state,
            t.expires_ms.map_or_else(|| "never".to_owned(), utc),
            t.last_used_ms.map_or_else(|| "never".to_owned(), utc),
            match (&t.permissions, t.user_id) {
                (Some(p), _) => perms_text(p),
                (None, Some(_)) => "(the owner's)".to_owned(),
                (None, None) => "(all)".to_owned(),
            }
        );
    }
}

fn run_token(cmd: TokenCmd) -> Result<(), Failure> {
    let db = cmd.db.path()?;
    let now = now_ms();
    match cmd.action {
        TokenAction::Create {
            name,
            user,
            permissions,
            expires,
        } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
                return Err(Failure::Usage(
                    "a token name is 1 to 128 printable characters".into(),
                ));
            }
            let perms = if permissions.is_empty() {
                None
            } else {
                Some(parse_permissions(&permissions)?)
            };
            let expires_ms = match expires {
                Some(d) if d.as_millis_i64() <= 0 => {
                    return Err(Failure::Usage("--expires must be positive".into()))
                }
                Some(d) => Some(now.saturating_add(d.as_millis_i64())),
                None => None,
            };
            let secret = credential::secret()
                .map_err(|e| Failure::Usage(format!("no random secret: {e}")))?;
            let h = credential::hash(&secret);
            let id = with_db(&db, |c| {
                let owner = match &user {
                    Some(u) => Some(users::existing_user_id(c, u)?),
                    None => None,
                };
                let names = perms.as_deref().map(permission_names);
                tokens::create_token(c, &name, owner, names.as_deref(), expires_ms, &h, now)
            })?;
            eprintln!("token {id} {name:?} created; it is shown only this once:");
            println!("{}", credential::format(Kind::Token, id, &secret));
        }
        TokenAction::Revoke { id } => {
            if !with_db(&db, |c| tokens::revoke_token(c, id))? {
                return Err(Failure::Usage(format!("no token with id {id}")));
            }
            println!("token {id} revoked");
        }
        TokenAction::List => {
            let (tokens, users) = with_db(&db, |c| {
                Ok((tokens::list_tokens(c, None)?, users::list_users(c)?))
            })?;
            print_tokens(&tokens, &users, now);
        }
    }
    Ok(())
}

pub fn audit(cmd: AuditCmd) -> ExitCode {
    finish(run_audit(cmd))
}

fn run_audit(cmd: AuditCmd) -> Result<(), Failure> {
    let db = cmd.db.path()?;
    match cmd.action {
        AuditAction::Verify => {
            // Opening would create an empty database, which would verify as OK.
            if !db.is_file() {
                return Err(Failure::Usage(format!("no database at {}", db.display())));
            }
            // Read-only, never migrated: verifying must not change what it verifies (a
            // pre-chain copy would otherwise be chained afresh and pass). A read snapshot,
            // no write lock: a running collector keeps writing meanwhile.
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(StoreError::from)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(StoreError::from)?;
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(StoreError::from)?;
            if version < audit_chain::FIRST_CHAINED_SCHEMA {
                return Err(Failure::Check(format!(
                    "the database is at schema version {version}, before the audit chain (v{}): \
                     nothing to verify (the collector chains existing rows when it migrates)",
                    audit_chain::FIRST_CHAINED_SCHEMA
                )));
            }
            match audit_chain::verify(&conn, None, true)? {
                Verdict::Intact { rows, checkpoint } => {
                    println!(
                        "audit chain OK: {rows} rows verified; newest id {} hash {}; \
                         rows up to id {} removed by retention",
                        checkpoint.id, checkpoint.hash, checkpoint.removed_upto
                    );
                }
                Verdict::Broken { id, reason, .. } => {
                    return Err(Failure::Check(format!(
                        "audit chain BROKEN at row {id}: {reason}"
                    )));
                }
            }
        }
    }
    Ok(())
}
