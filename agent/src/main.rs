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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, run) = match cli.command {
        Command::Run { config } => (config, true),
        Command::CheckConfig { config } => (config, false),
    };
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
        mcpwatch_agent::run(config, token)
    })
}
