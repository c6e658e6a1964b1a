//! `mcpwatch-collector quickstart`: a dev PKI, a collector and one local agent in one process
//! on an embedded SQLite under DIR, with every URL printed, an admin API token and the web
//! console's `admin` user (password in a 0600 file). When Docker answers, the agent also
//! supervises a demo MCP server behind its gateway (`demo_server`: the image is built from
//! the project's fixture when missing); otherwise one line says why not. For a first look,
//! not production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpwatch_agent::AgentConfig;
use mcpwatch_common::certs;
use tokio_util::sync::CancellationToken;

use crate::command::CommandRouter;
use crate::config::CollectorConfig;
use crate::demo_server::{self, Demo, DemoBuild};
use crate::token::AdminPassword;

pub struct QuickstartOptions {
    pub dir: PathBuf,
    pub ingest: SocketAddr,
    pub http: SocketAddr,
    pub agent_metrics: SocketAddr,
    pub gateway: SocketAddr,
    pub demo_image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Certs(#[from] certs::CertError),
    #[error("generated config: {0}")]
    Config(#[from] mcpwatch_common::config::ConfigError),
    #[error("collector: {0}")]
    Collector(#[from] crate::CollectorError),
    #[error("agent: {0}")]
    Agent(#[from] mcpwatch_agent::AgentError),
}

const AGENT_NAME: &str = "local";

/// The agent config's gateway, and the demo server when its image is there.
fn demo_config(demo: Demo, image: &str, gateway: SocketAddr) -> String {
    let mut text = demo_server::gateway_config(gateway);
    if demo == Demo::Ready {
        text.push_str(&demo_server::server_config(image));
    }
    text
}
fn write(path: &Path, text: &str) -> Result<(), QuickstartError> {
    std::fs::write(path, text).map_err(|source| QuickstartError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates DIR with PKI, configs and admin token (keeping what an earlier run made), prints
/// the URLs, and runs collector + agent until `shutdown`.
// Over 80 lines on purpose: the quickstart is one script (PKI, configs, token, collector,
// agent, banner, wait), read top to bottom.
pub async fn run(
    opts: QuickstartOptions,
    shutdown: CancellationToken,
) -> Result<(), QuickstartError> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).map_err(|source| QuickstartError::Io {
        path: dir.clone(),
        source,
    })?;
    let dir = dir.canonicalize().map_err(|source| QuickstartError::Io {
        path: dir.clone(),
        source,
    })?;
    let pki = dir.join("pki");
    if !certs::ca_paths(&pki).key.exists() {
        certs::init(&pki, &[])?;
    }
    if !certs::agent_paths(&pki, AGENT_NAME).key.exists() {
        certs::issue_agent(&pki, AGENT_NAME)?;
    }
    let collector_toml = dir.join("collector.toml");
    write(
        &collector_toml,
        &format!(
            "# Written by `mcpwatch-collector quickstart`.\n\
             [ingest]\nlisten = \"{ingest}\"\n\n\
             [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/collector.crt\"\nkey = \"pki/collector.key\"\n\n\
             [store]\npath = \"collector.db\"\n\n\
             [http]\nlisten = \"{http}\"\n",
            ingest = opts.ingest,
            http = opts.http,
        ),
    )?;
    let demo = demo_server::status(&opts.demo_image).await;
    let build_script = (demo == Demo::NoImage)
        .then(demo_server::build_script)
        .flatten();
    let build_log = dir.join("demo-image.log");
    let agent_toml = dir.join("agent.toml");
    write(
        &agent_toml,
        &format!(
            "# Written by `mcpwatch-collector quickstart`.\n\
             [collector]\naddress = \"{ingest}\"\nserver_name = \"localhost\"\n\n\
             [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/agent-{AGENT_NAME}.crt\"\nkey = \"pki/agent-{AGENT_NAME}.key\"\n\n\
             [spool]\ndir = \"spool\"\n\n\
             [metrics]\nlisten = \"{metrics}\"\n{demo}",
            ingest = opts.ingest,
            metrics = opts.agent_metrics,
            demo = demo_config(demo, &opts.demo_image, opts.gateway),
        ),
    )?;
    let token_path = dir.join("admin.token");
    if !token_path.exists() {
        crate::token::write_admin_token(&token_path, &dir.join("collector.db")).map_err(
            |source| QuickstartError::Io {
                path: token_path.clone(),
                source,
            },
        )?;
    }
    let password_path = dir.join("admin.password");
    let admin_password =
        crate::token::write_admin_password(&password_path, &dir.join("collector.db")).map_err(
            |source| QuickstartError::Io {
                path: password_path.clone(),
                source,
            },
        )?;
    let collector = CollectorConfig::load(&collector_toml)?;
    let agent = AgentConfig::load(&agent_toml)?;

    println!("mcpwatch quickstart in {}", dir.display());
    println!("  console                   http://{}/", opts.http);
    println!("  console user              {}", crate::token::ADMIN_USER);
    match admin_password {
        AdminPassword::Created | AdminPassword::Kept => {
            println!("  console password file     {}", password_path.display());
        }
        AdminPassword::FileMissing => println!(
            "  console password          {} is gone; set a new one with: mcpwatch-collector user passwd admin --db {}",
            password_path.display(),
            dir.join("collector.db").display()
        ),
    }
    println!("  collector ingest (mTLS)   {}", opts.ingest);
    println!("  collector metrics         http://{}/metrics", opts.http);
    println!(
        "  collector health          http://{}/healthz  http://{}/readyz",
        opts.http, opts.http
    );
    println!(
        "  agent metrics             http://{}/metrics",
        opts.agent_metrics
    );
    println!(
        "  agent health              http://{}/healthz",
        opts.agent_metrics
    );
    println!(
        "  database                  {}",
        collector.db_path.display()
    );
    println!(
        "{}",
        demo_server::banner_line(
            demo,
            &opts.demo_image,
            opts.gateway,
            build_script.as_ref().map(|_| build_log.as_path())
        )
    );
    println!("  admin token               {}", token_path.display());
    println!(
        "  configs                   {} {}",
        collector_toml.display(),
        agent_toml.display()
    );
    println!("Press Ctrl-C to stop.");

    let router = CommandRouter::new();
    let collector_task = tokio::spawn(crate::run_with_router(
        collector,
        shutdown.clone(),
        router.clone(),
    ));
    if let Some(script) = build_script {
        let build = DemoBuild {
            script,
            image: opts.demo_image.clone(),
            log: build_log,
            agent_toml: agent_toml.clone(),
            agent_id: AGENT_NAME.to_owned(),
            gateway: opts.gateway,
        };
        tokio::spawn(demo_server::build_and_add(build, router, shutdown.clone()));
    }
    // Let the collector bind first so the agent's first connect succeeds; a failure here
    // surfaces below, and the agent would retry with backoff anyway.
    tokio::task::yield_now().await;
    let agent_result = mcpwatch_agent::run(agent, None, shutdown.clone()).await;
    shutdown.cancel();
    let collector_result = collector_task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "collector task failed");
        Ok(())
    });
    agent_result?;
    collector_result?;
    Ok(())
}
