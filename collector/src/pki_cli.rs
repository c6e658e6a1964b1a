//! `enroll-token create|list|revoke` and `certs revoke`: the fleet PKI's commands on the
//! database, for bootstrapping and break-glass. A running collector picks up a revocation
//! made here within a second (it polls the database) and closes the session using it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use mcpwatch_collector::enroll_token::{self, TokenRequest};
use mcpwatch_collector::notify::rfc3339_ms;
use mcpwatch_collector::store::admin::{audit_cli, with_db};
use mcpwatch_collector::store::query::certificates::{self, Revocation};
use mcpwatch_collector::store::query::enroll_tokens;
use mcpwatch_common::config::Duration;

use crate::admin_cli::{finish, DbArgs, Failure};

#[derive(Debug, Args)]
pub struct EnrollTokenCmd {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    action: EnrollTokenAction,
}

#[derive(Debug, Subcommand)]
enum EnrollTokenAction {
    /// Create a bootstrap token and print it (the only time it is shown).
    Create {
        /// Lifetime, e.g. 24h (default), 7d; at most 365d.
        #[arg(long, value_name = "DURATION")]
        expires: Option<Duration>,
        /// Enrollments it allows (default 1).
        #[arg(long)]
        uses: Option<i64>,
        /// Operator labels for every host it enrolls: team=a,env=prod.
        #[arg(long, value_name = "K=V,...")]
        labels: Option<String>,
        /// The one agent name it enrolls, or a pattern with '*' (default: any name).
        #[arg(long, value_name = "NAME|PATTERN")]
        name: Option<String>,
        /// A note for people.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List bootstrap tokens (never their secrets).
    List,
    /// Revoke a bootstrap token by id.
    Revoke { id: i64 },
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The certificate's serial (hex; ':' and leading zeros allowed).
    #[arg(long)]
    serial: String,
}

pub fn enroll_token(cmd: EnrollTokenCmd) -> ExitCode {
    finish(run_enroll_token(cmd))
}

pub fn revoke(args: RevokeArgs) -> ExitCode {
    finish(run_revoke(args))
}

fn now_ms() -> i64 {
    mcpwatch_collector::now_ms()
}

fn run_enroll_token(cmd: EnrollTokenCmd) -> Result<(), Failure> {
    let db = cmd.db.path()?;
    let now = now_ms();
    match cmd.action {
        EnrollTokenAction::Create {
            expires,
            uses,
            labels,
            name,
            description,
        } => {
            let labels = enroll_token::parse_labels(labels.as_deref().unwrap_or(""))
                .map_err(Failure::Usage)?;
            let minted = enroll_token::mint(
                TokenRequest {
                    description,
                    name,
                    labels,
                    uses,
                    lifetime_ms: expires.map(|d| d.as_millis_i64()),
                },
                "cli",
                now,
            )
            .map_err(Failure::Usage)?;
            let id = with_db(&db, |c| {
                let id = enroll_tokens::create(c, &minted.row, now)?;
                // Audited as the API route doing the same; never the secret.
                let detail = format!(
                    "uses {}, name {}, labels {:?}",
                    minted.row.max_uses,
                    minted.row.name.as_deref().unwrap_or("*"),
                    minted.row.labels
                );
                audit_cli(
                    c,
                    now,
                    "POST /api/v1/enroll-tokens",
                    format!("/api/v1/enroll-tokens/{id}"),
                    detail,
                )?;
                Ok(id)
            })?;
            eprintln!(
                "enrollment token {id} created (uses {}, expires {}); it is shown only this once:",
                minted.row.max_uses,
                rfc3339_ms(minted.row.expires_ms)
            );
            println!("{}", enroll_token::format(id, &minted.secret));
            Ok(())
        }
        EnrollTokenAction::List => {
            let rows = with_db(&db, enroll_tokens::list)?;
            println!(
                "{:<6} {:<9} {:<8} {:<24} {:<24} {:<24} DESCRIPTION",
                "ID", "STATE", "USED", "EXPIRES", "NAME", "LABELS"
            );
            for t in rows {
                let state = if t.revoked_ms.is_some() {
                    "revoked"
                } else if t.expires_ms <= now {
                    "expired"
                } else if t.used >= t.max_uses {
                    "used"
                } else {
                    "active"
                };
                let labels: Vec<String> =
                    t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<6} {:<9} {:<8} {:<24} {:<24} {:<24} {}",
                    t.id,
                    state,
                    format!("{}/{}", t.used, t.max_uses),
                    rfc3339_ms(t.expires_ms),
                    t.name.as_deref().unwrap_or("*"),
                    labels.join(","),
                    t.description
                );
            }
            Ok(())
        }
        EnrollTokenAction::Revoke { id } => {
            let revoked = with_db(&db, |c| {
                let revoked = enroll_tokens::revoke(c, id, now)?;
                if revoked {
                    let object = format!("/api/v1/enroll-tokens/{id}/revoke");
                    let detail = format!("enrollment token {id} revoked");
                    audit_cli(
                        c,
                        now,
                        "POST /api/v1/enroll-tokens/{id}/revoke",
                        object,
                        detail,
                    )?;
                }
                Ok(revoked)
            })?;
            if revoked {
                eprintln!("enrollment token {id} revoked");
                Ok(())
            } else {
                Err(Failure::Usage(format!(
                    "no enrollment token {id}, or it is revoked already"
                )))
            }
        }
    }
}

fn run_revoke(args: RevokeArgs) -> Result<(), Failure> {
    let db = args.db.path()?;
    let serial = mcpwatch_common::cert_info::canonical_serial(&args.serial)
        .ok_or_else(|| Failure::Usage("--serial: hex digits, at most 20 bytes".into()))?;
    let now = now_ms();
    let revocation = with_db(&db, |c| {
        let revocation = certificates::revoke(c, &serial, None, "cli", now)?;
        if let Revocation::Revoked(row, _) = &revocation {
            let object = format!(
                "/api/v1/hosts/{}/certificates/{serial}/revoke",
                row.identity
            );
            let detail = format!("certificate {serial} revoked, with any renewed from it");
            audit_cli(
                c,
                now,
                "POST /api/v1/hosts/{agent_id}/certificates/{serial}/revoke",
                object,
                detail,
            )?;
        }
        Ok(revocation)
    })?;
    match revocation {
        Revocation::Revoked(row, _) => {
            let who = if row.identity.is_empty() {
                "a certificate this collector has not seen yet".to_owned()
            } else {
                format!("agent {}", row.identity)
            };
            eprintln!("certificate {serial} of {who} revoked; a running collector refuses it within a second");
            Ok(())
        }
        Revocation::Already(_) => Err(Failure::Usage(format!(
            "certificate {serial} is revoked already"
        ))),
        Revocation::Missing => Err(Failure::Usage(format!("no certificate {serial}"))),
    }
}
