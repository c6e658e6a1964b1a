//! `mcpwatch-collector`: parses the command line, loads the config, sets up logging and runs
//! the collector library; maps errors to exit codes (64 for configuration errors). The
//! `user`, `role`, `token` and `audit` commands live in `admin_cli`, `backup` and `restore`
//! in `backup_cli`.

mod admin_cli;
mod backup_cli;
mod pki_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcpwatch_collector::config::{CollectorConfig, DEFAULT_PATH};
use mcpwatch_collector::quickstart::{self, QuickstartOptions};
use mcpwatch_common::shutdown::RuntimeThreads;
use mcpwatch_common::{certs, config::EXIT_CONFIG, logging, shutdown};

/// mcpwatch collector: receives agent streams over mutual TLS and keeps their history.
#[derive(Parser)]
#[command(name = "mcpwatch-collector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector (as the systemd service does).
    Run {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration (including TLS files) and exit.
    CheckConfig {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Development PKI: a CA, the collector's certificate, agent certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Dev PKI, collector and one local agent on an embedded SQLite under DIR.
    Quickstart {
        /// Data directory (PKI, configs, database, spool, admin.token).
        #[arg(long, default_value = "./mcpwatch-data")]
        dir: PathBuf,
        /// Ingest (mTLS) listen address.
        #[arg(long, default_value = "127.0.0.1:7443")]
        ingest: SocketAddr,
        /// Collector HTTP listen address (/metrics, /healthz, /readyz).
        #[arg(long, default_value = "127.0.0.1:9465")]
        http: SocketAddr,
        /// Agent /metrics listen address.
        #[arg(long, default_value = "127.0.0.1:9464")]
        agent_metrics: SocketAddr,
        /// The agent's MCP gateway listen address (used when the demo server runs).
        #[arg(long, default_value = "127.0.0.1:9466")]
        gateway: SocketAddr,
        /// Image of the demo MCP server the local agent supervises when Docker answers and
        /// the image exists (`scripts/demo-image.sh` builds it).
        #[arg(long, default_value = "mcpwatch-demo:latest")]
        demo_image: String,
    },
    /// API users on the database: add, list, passwd, disable, enable.
    User(admin_cli::UserCmd),
    /// API roles on the database: list, add, delete, bind, unbind.
    Role(admin_cli::RoleCmd),
    /// API tokens on the database: create, revoke, list.
    Token(admin_cli::TokenCmd),
    /// Bootstrap tokens for agent enrollment on the database: create, list, revoke.
    EnrollToken(pki_cli::EnrollTokenCmd),
    /// The audit log on the database: verify its hash chain.
    Audit(admin_cli::AuditCmd),
    /// Back up the database while the collector runs: a verified, 0600 copy in FILE.
    Backup(backup_cli::BackupArgs),
    /// Put a backup in place of the database (the collector must be stopped).
    Restore(backup_cli::RestoreArgs),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a dev CA and the collector's certificate in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS names or IPs for the collector's certificate (localhost, 127.0.0.1 and
        /// ::1 are always included).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Issue a client certificate for agent NAME, signed by the CA in DIR.
    IssueAgent {
        #[arg(long)]
        dir: PathBuf,
        /// The agent's identity (its DNS SAN), usually the host name.
        #[arg(long)]
        name: String,
    },
    /// Revoke an agent certificate by serial, on the database (live within a second).
    Revoke(pki_cli::RevokeArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { config } => match CollectorConfig::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(err) => config_error(err),
        },
        Command::Run { config } => {
            let config = match CollectorConfig::load(&config) {
                Ok(c) => c,
                Err(err) => return config_error(err),
            };
            logging::init(&config.log_level, config.log_json);
            shutdown::run_until_signal(
                "mcpwatch-collector",
                RuntimeThreads::Workers(None),
                |token| mcpwatch_collector::run(config, token),
            )
        }
        Command::Certs { command } => {
            let result = match command {
                CertsCommand::Revoke(args) => return pki_cli::revoke(args),
                CertsCommand::Init { dir, names } => certs::init(&dir, &names).map(|()| {
                    println!("CA and collector certificate written to {}", dir.display());
                }),
                CertsCommand::IssueAgent { dir, name } => {
                    certs::issue_agent(&dir, &name).map(|p| {
                        println!("{}\n{}", p.cert.display(), p.key.display());
                    })
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("mcpwatch-collector: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Quickstart {
            dir,
            ingest,
            http,
            agent_metrics,
            gateway,
            demo_image,
        } => {
            logging::init("info", false);
            let options = QuickstartOptions {
                dir,
                ingest,
                http,
                agent_metrics,
                gateway,
                demo_image,
            };
            shutdown::run_until_signal(
                "mcpwatch-collector",
                RuntimeThreads::Workers(None),
                |token| quickstart::run(options, token),
            )
        }
        Command::User(cmd) => admin_cli::user(cmd),
        Command::Role(cmd) => admin_cli::role(cmd),
        Command::Token(cmd) => admin_cli::token(cmd),
        Command::EnrollToken(cmd) => pki_cli::enroll_token(cmd),
        Command::Audit(cmd) => admin_cli::audit(cmd),
        Command::Backup(args) => backup_cli::backup(args),
        Command::Restore(args) => backup_cli::restore(args),
    }
}

fn config_error(err: mcpwatch_common::config::ConfigError) -> ExitCode {
    eprintln!("mcpwatch-collector: invalid configuration: {err}");
    ExitCode::from(EXIT_CONFIG as u8)
}
