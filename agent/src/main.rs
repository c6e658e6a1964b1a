//! `mcpwatch-agent`: parses the command line, loads the config, sets up logging and runs the
//! agent library; maps errors to exit codes (64 for configuration errors).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcpwatch_agent::{config::DEFAULT_PATH, AgentConfig};
use mcpwatch_common::shutdown::{self, RuntimeThreads};
use mcpwatch_common::{config::EXIT_CONFIG, logging};

/// mcpwatch agent: host metrics and MCP server supervision, streamed to the collector.
#[derive(Parser)]
#[command(name = "mcpwatch-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (as the systemd service does).
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
    /// Get this agent's certificate from the collector with a bootstrap token: the key is
    /// made here, and the certificate and CA bundle are written where [tls] points. Does
    /// nothing when a valid certificate is there already (unless --force).
    Enroll {
        /// Configuration file ([tls] says where the files go).
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// The collector's API, https://HOST:PORT.
        #[arg(long)]
        collector: String,
        /// The bootstrap token (mcpe_...).
        #[arg(
            long,
            conflicts_with = "token_file",
            required_unless_present = "token_file"
        )]
        token: Option<String>,
        /// A file holding the bootstrap token (keeps it out of `ps`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// SHA-256 fingerprint of the collector's CA (SHA256:AB:CD:...).
        #[arg(long, conflicts_with = "ca", required_unless_present = "ca")]
        ca_fingerprint: Option<String>,
        /// Or the CA bundle to verify the collector with.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The identity to ask for. Default: agent_id from the configuration, else the
        /// host name.
        #[arg(long)]
        name: Option<String>,
        /// Replace a valid certificate that is already there.
        #[arg(long)]
        force: bool,
    },
    /// Give a state directory (created if missing) and what is under it to the user the
    /// agent runs as, for an init container with CAP_CHOWN and CAP_FOWNER only. Links are
    /// not followed, other filesystems not entered; a directory already right is left alone.
    PrepareDir {
        /// Absolute path of the directory.
        path: PathBuf,
        /// UID:GID to give it to.
        #[arg(long)]
        owner: String,
        /// Permission bits of the directory itself, octal.
        #[arg(long, default_value = "0700")]
        mode: String,
    },
}

fn prepare_dir(path: &std::path::Path, owner: &str, mode: &str) -> ExitCode {
    use mcpwatch_agent::prepare_dir::{parse_mode, parse_owner, prepare};
    let done = parse_owner(owner).and_then(|(uid, gid)| {
        let mode = parse_mode(mode)?;
        prepare(path, uid, gid, mode)
    });
    match done {
        Ok(done) => {
            println!(
                "{}: ready ({} entries changed)",
                path.display(),
                done.changed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcpwatch-agent prepare-dir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the spool lock of `dir`, waiting up to `spool::LOCK_WAIT` (saying so on stderr:
/// logging is not set up yet). On a runtime of its own so that SIGTERM and SIGINT end the
/// wait (`Ok(None)`) and SIGHUP does not kill: in a container the agent is pid 1, which
/// the kernel sends no signal it has no handler for.
fn wait_for_spool(
    dir: &std::path::Path,
) -> Result<Option<mcpwatch_agent::spool::SpoolLock>, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let wait = mcpwatch_agent::spool::LOCK_WAIT;
    Ok(runtime.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let signals = tokio::spawn(shutdown::watch_signals(stop.clone(), None));
        let taken = mcpwatch_agent::spool::lock_waiting(dir, wait, &stop, |holder| {
            eprintln!(
                "mcpwatch-agent: spool directory {} is in use by {holder}; waiting up to {}s",
                dir.display(),
                wait.as_secs()
            )
        })
        .await;
        stop.cancel();
        let _ = signals.await;
        taken
    })?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, run) = match cli.command {
        Command::Run { config } => (config, true),
        Command::CheckConfig { config } => (config, false),
        Command::Enroll {
            config,
            collector,
            token,
            token_file,
            ca_fingerprint,
            ca,
            name,
            force,
        } => {
            let args = mcpwatch_agent::enroll_cli::Args {
                config,
                collector,
                token,
                token_file,
                ca_fingerprint,
                ca,
                name,
                force,
            };
            return mcpwatch_agent::enroll_cli::run(args);
        }
        Command::PrepareDir { path, owner, mode } => return prepare_dir(&path, &owner, &mode),
    };
    let mut spool_lock = None;
    if run {
        if let Ok(raw) =
            mcpwatch_common::config::load::<mcpwatch_agent::config::RawAgentConfig>(&path)
        {
            // Before any state is touched: another agent on this state (the one a rollout
            // replaces) may still be running.
            match wait_for_spool(&raw.spool_dir(&path)) {
                Ok(Some(lock)) => spool_lock = Some(lock),
                // Stopped while waiting: nothing was started.
                Ok(None) => return ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("mcpwatch-agent: {err}");
                    return ExitCode::FAILURE;
                }
            }
            // A renewal a crash interrupted is finished before the files are read.
            mcpwatch_agent::renewal::recover(&raw.tls.resolve(&path));
        }
    }
    let config = match AgentConfig::load(&path) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("mcpwatch-agent: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if !run {
        println!("{}: ok (agent_id {})", path.display(), config.agent_id);
        return ExitCode::SUCCESS;
    }
    logging::init(&config.log_level, config.log_json);
    // One thread: the agent wakes once per interval and its gateway needs a fraction of a
    // core at thousands of calls per second (BENCHMARKS.md); a work-stealing pool only added
    // cross-thread wake-ups to every cycle. Disk flushes run on the spool writer's thread.
    shutdown::run_until_signal("mcpwatch-agent", RuntimeThreads::Current, |token| {
        mcpwatch_agent::run(config, spool_lock, token)
    })
}
