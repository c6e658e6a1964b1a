//! The quickstart's demo MCP server: whether Docker answers and holds the demo image, the
//! agent config that supervises it, the banner line, and — when the image is missing in a
//! source checkout — building it with `scripts/demo-image.sh` in the background, then adding
//! the server to the running agent (its config file grows by the server; a reload command
//! goes down the agent's stream).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcpwatch_common::wire::CommandAction;
use tokio_util::sync::CancellationToken;

use crate::command::{CommandError, CommandRouter};

/// How long the quickstart waits for Docker to answer before going on without the demo.
const DOCKER_WAIT: Duration = Duration::from_secs(3);
/// A first build compiles the fixture: minutes on a small machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long the reload is retried while the agent is not yet connected.
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// Whether the demo MCP server can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demo {
    Ready,
    NoImage,
    NoDocker,
}

/// Asks the local Docker daemon for the demo image.
pub async fn status(image: &str) -> Demo {
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

/// The agent's gateway, written whether or not the demo runs, so adding the demo later
/// needs no new listener.
pub fn gateway_config(gateway: SocketAddr) -> String {
    format!("\n[gateway]\nlisten = \"{gateway}\"\n")
}

/// TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The demo server's `[[mcp_server]]` table: the fixture over stdio, in its own container.
pub fn server_config(image: &str) -> String {
    format!(
        "\n[[mcp_server]]\nname = \"demo\"\nimage = {}\nargs = [\"--transport\", \"stdio\"]\n\
         transport = \"stdio\"\n",
        toml_string(image)
    )
}

/// `scripts/demo-image.sh` of the source tree this binary was built from, if it is still
/// there. Never a script found relative to the working directory: running the quickstart
/// inside some other checkout must not execute that checkout's code.
pub fn build_script() -> Option<PathBuf> {
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-image.sh"))
        .filter(|p| p.is_file())
}

/// The banner's line about the demo server.
pub fn banner_line(
    demo: Demo,
    image: &str,
    gateway: SocketAddr,
    building: Option<&Path>,
) -> String {
    const LEAD: &str = "  demo MCP server           ";
    match (demo, building) {
        (Demo::Ready, _) => format!("{LEAD}http://{gateway}/mcp/demo (image {image})"),
        (Demo::NoImage, Some(log)) => format!(
            "{LEAD}building image {image} with scripts/demo-image.sh (log {}); it starts when ready",
            log.display()
        ),
        (Demo::NoImage, None) => format!(
            "{LEAD}none: image {image} is missing; build it with scripts/demo-image.sh and start again"
        ),
        (Demo::NoDocker, _) => {
            format!("{LEAD}none: Docker does not answer; start dockerd and run scripts/demo-image.sh")
        }
    }
}

/// Where the demo is added once built.
pub struct DemoBuild {
    pub script: PathBuf,
    pub image: String,
    pub log: PathBuf,
    pub agent_toml: PathBuf,
    pub agent_id: String,
    pub gateway: SocketAddr,
}

/// Builds the image, appends the server to the agent's config and has the agent reload it;
/// prints one line with the outcome. Stops early on `stop`.
pub async fn build_and_add(b: DemoBuild, router: CommandRouter, stop: CancellationToken) {
    let outcome = tokio::select! {
        () = stop.cancelled() => return,
        r = build_and_reload(&b, &router) => r,
    };
    match outcome {
        Ok(()) => println!(
            "  demo MCP server           ready: http://{}/mcp/demo (image {})",
            b.gateway, b.image
        ),
        Err(why) => println!("  demo MCP server           not started: {why}"),
    }
}

async fn build_and_reload(b: &DemoBuild, router: &CommandRouter) -> Result<(), String> {
    let log = std::fs::File::create(&b.log).map_err(|e| format!("{}: {e}", b.log.display()))?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(&b.script)
        .arg(&b.image)
        // Cargo's flags for this process must not leak into the script's build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .kill_on_drop(true);
    let status = tokio::time::timeout(BUILD_TIMEOUT, cmd.status())
        .await
        .map_err(|_| format!("the image build took over {} s", BUILD_TIMEOUT.as_secs()))?
        .map_err(|e| format!("running {}: {e}", b.script.display()))?;
    if !status.success() {
        return Err(format!("the image build failed; see {}", b.log.display()));
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&b.agent_toml)
        .map_err(|e| format!("{}: {e}", b.agent_toml.display()))?;
    file.write_all(server_config(&b.image).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", b.agent_toml.display()))?;
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    loop {
        match router
            .send(&b.agent_id, CommandAction::Reload, Duration::from_secs(10))
            .await
        {
            Ok(r) if r.ok => return Ok(()),
            Ok(r) => return Err(format!("the agent refused the reload: {}", r.message)),
            Err(CommandError::AgentOffline(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("the agent did not reload: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_config_for_each_case() {
        let gw: SocketAddr = "127.0.0.1:9466".parse().expect("address");
        let image = "mcpwatch-demo:latest";
        let no_image = banner_line(Demo::NoImage, image, gw, None);
        assert!(
            no_image.contains("mcpwatch-demo:latest is missing"),
            "{no_image}"
        );
        let building = banner_line(
            Demo::NoImage,
            image,
            gw,
            Some(Path::new("/d/demo-image.log")),
        );
        assert!(building.contains("building image") && building.contains("/d/demo-image.log"));
        assert!(banner_line(Demo::NoDocker, image, gw, None).contains("Docker does not answer"));
        assert!(
            banner_line(Demo::Ready, image, gw, None).contains("http://127.0.0.1:9466/mcp/demo")
        );
        assert_eq!(
            gateway_config(gw),
            "\n[gateway]\nlisten = \"127.0.0.1:9466\"\n"
        );
        assert!(server_config(image).contains("image = \"mcpwatch-demo:latest\""));
    }

    #[test]
    fn an_image_name_cannot_break_out_of_its_toml_string() {
        let hostile = "x\"\nimage = \"evil\\\u{1}";
        let text = server_config(hostile);
        let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["mcp_server"][0]["image"].as_str(), Some(hostile));
    }
}
