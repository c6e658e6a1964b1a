//! `mcpwatch-collector quickstart`: a dev PKI, a collector and one local agent in one process
//! on an embedded SQLite under DIR, with every URL printed, an admin API token and the web
//! console's `admin` user (password in a 0600 file). When Docker answers and the demo image
//! exists (`scripts/demo-image.sh`), the agent supervises a demo MCP server behind its
//! gateway; otherwise one line says how to get it. For a first look, not production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpwatch_agent::AgentConfig;
use mcpwatch_common::certs;
use tokio_util::sync::CancellationToken;

use crate::config::CollectorConfig;
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
/// How long the quickstart waits for Docker to answer before going on without the demo.
const DOCKER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the demo MCP server can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demo {
    Ready,
    NoImage,
    NoDocker,
}

/// Asks the local Docker daemon for the demo image.
pub async fn demo_status(image: &str) -> Demo {
    let Ok(docker) = mcpwatch_agent::supervisor::connect_local() else {
        return Demo::NoDocker;
    };
    let docker = match tokio::time::timeout(DOCKER_WAIT, docker.negotiate_version()).await {
        Ok(Ok(d)) => d,
        _ => return Demo::NoDocker,
    };
    match tokio::time::timeout(DOCKER_WAIT, docker.inspect_image(image)).await {
        Ok(Ok(_)) => Demo::Ready,
        Ok(Err(_)) => Demo::NoImage,
        Err(_) => Demo::NoDocker,
    }
}

/// The agent config's part for the demo server (empty without it).
fn demo_config(demo: Demo, image: &str, gateway: SocketAddr) -> String {
    if demo != Demo::Ready {
        return String::new();
    }
    format!(
        "\n[gateway]\nlisten = \"{gateway}\"\n\n\
         [[mcp_server]]\nname = \"demo\"\nimage = {image:?}\nargs = [\"--transport\", \"stdio\"]\n\
         transport = \"stdio\"\n"
    )
}

/// The banner's line about MCP servers.
pub fn demo_line(demo: Demo, image: &str, gateway: SocketAddr) -> String {
    match demo {
        Demo::Ready => format!("  demo MCP server           http://{gateway}/mcp/demo (image {image})"),
        Demo::NoImage => format!(
            "  demo MCP server           none: image {image} is missing; build it with scripts/demo-image.sh and start again"
        ),
        Demo::NoDocker => "  demo MCP server           none: Docker does not answer; start dockerd and run scripts/demo-image.sh".to_owned(),
    }
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
    let demo = demo_status(&opts.demo_image).await;
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
    println!("{}", demo_line(demo, &opts.demo_image, opts.gateway));
    println!("  admin token               {}", token_path.display());
    println!(
        "  configs                   {} {}",
        collector_toml.display(),
        agent_toml.display()
    );
    println!("Press Ctrl-C to stop.");

    let collector_task = tokio::spawn(crate::run(collector, shutdown.clone()));
    // Let the collector bind first so the agent's first connect succeeds; a failure here
    // surfaces below, and the agent would retry with backoff anyway.
    tokio::task::yield_now().await;
    let agent_result = mcpwatch_agent::run(agent, shutdown.clone()).await;
    shutdown.cancel();
    let collector_result = collector_task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "collector task failed");
        Ok(())
    });
    agent_result?;
    collector_result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_demo_one_line_says_how_to_get_it_and_the_agent_gets_no_server() {
        let gw: SocketAddr = "127.0.0.1:9466".parse().expect("address");
        let no_image = demo_line(Demo::NoImage, "mcpwatch-demo:latest", gw);
        assert!(
            no_image.contains("mcpwatch-demo:latest is missing")
                && no_image.contains("scripts/demo-image.sh")
        );
        assert!(demo_line(Demo::NoDocker, "x", gw).contains("Docker does not answer"));
        assert_eq!(demo_config(Demo::NoImage, "x", gw), "");
        let ready = demo_config(Demo::Ready, "mcpwatch-demo:latest", gw);
        assert!(ready.contains("[[mcp_server]]") && ready.contains("listen = \"127.0.0.1:9466\""));
        assert!(ready.contains("image = \"mcpwatch-demo:latest\""));
    }
}
