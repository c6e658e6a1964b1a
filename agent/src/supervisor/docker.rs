//! Thin bollard wrapper: every Docker Engine call the supervisor makes, each with a deadline,
//! errors classified (unreachable, not found, conflict, API), and the container template
//! built from a spec. Nothing here keeps state or panics on what the daemon returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, EventMessage};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RestartContainerOptions, StartContainerOptions, StatsOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::container_template::{
    container_name, create_body, LABEL_AGENT, LABEL_HASH, LABEL_MANAGED, LABEL_SERVER,
};
use super::spec::McpServerSpec;

/// Deadline for short calls (inspect, create, start, remove, list). Generous because a
/// loaded daemon can take seconds, but bounded so a hung daemon never wedges the supervisor.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    #[error("docker daemon unreachable: {0}")]
    Unreachable(String),
    #[error("docker {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("docker API error {status}: {message}")]
    Api { status: u16, message: String },
}

impl DockerError {
    /// The daemon could not be reached (or did not answer): retry later, do not count it as
    /// a failure of the server.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DockerError::Unreachable(_) | DockerError::Timeout { .. }
        )
    }
}

impl From<BollardError> for DockerError {
    fn from(e: BollardError) -> Self {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => DockerError::NotFound(message),
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } => DockerError::Conflict(message),
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Api {
                status: status_code,
                message,
            },
            BollardError::RequestTimeoutError => DockerError::Timeout {
                op: "request",
                after: Duration::ZERO,
            },
            BollardError::JsonDataError { message, .. } => DockerError::Api {
                status: 0,
                message: format!("undecodable answer: {message}"),
            },
            BollardError::JsonSerdeError { err } => DockerError::Api {
                status: 0,
                message: format!("undecodable answer: {err}"),
            },
            BollardError::APIVersionParseError {} => DockerError::Api {
                status: 0,
                message: "unparseable API version".into(),
            },
            // Transport-level failures: socket missing, connection refused or reset.
            other => DockerError::Unreachable(other.to_string()),
        }
    }
}

pub(super) async fn timed<T>(
    op: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, BollardError>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(DockerError::from),
        Err(_) => Err(DockerError::Timeout { op, after }),
    }
}

/// A client for the local daemon's unix socket (`$DOCKER_HOST` if it is a `unix://` URL).
/// Fails when the socket does not exist (yet); [`DockerApi::local`] waits for it instead.
pub fn connect_local() -> Result<Docker, DockerError> {
    Docker::connect_with_unix_defaults().map_err(DockerError::from)
}

/// The socket [`connect_local`] uses.
fn local_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// The short form of a container id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// What the supervisor needs to know about one managed container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub server: Option<String>,
    pub config_hash: Option<String>,
    pub running: bool,
    /// Docker's state word: created, running, exited, dead, paused, ...
    pub status: String,
    /// Created but never started (e.g. the agent died between create and start).
    pub never_started: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub started_at_ms: Option<i64>,
}

impl ContainerInfo {
    fn from_inspect(r: ContainerInspectResponse) -> Option<ContainerInfo> {
        let id = r.id?;
        let labels = r.config.and_then(|c| c.labels).unwrap_or_default();
        let state = r.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let started_at_ms = state.started_at.as_deref().and_then(parse_rfc3339_ms);
        Some(ContainerInfo {
            id,
            server: labels.get(LABEL_SERVER).cloned(),
            config_hash: labels.get(LABEL_HASH).cloned(),
            // A paused container is up as far as restarts are concerned.
            running: state.running.unwrap_or(false),
            never_started: status == ContainerStateStatusEnum::CREATED,
            status: status.to_string(),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            // Docker reports "0001-01-01T00:00:00Z" for never; that parses to None.
            started_at_ms,
        })
    }
}

/// One container event, reduced to what the supervisor acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEvent {
    pub id: String,
    /// `start`, `die`, `oom`, `destroy`, ... (health events carry a suffix; unused).
    pub action: String,
    pub server: Option<String>,
    /// From `die` events.
    pub exit_code: Option<i64>,
    /// Daemon clock, nanoseconds since the epoch.
    pub time_nano: i64,
}

impl ContainerEvent {
    fn from_message(m: EventMessage) -> Option<ContainerEvent> {
        let actor = m.actor?;
        let attrs = actor.attributes.unwrap_or_default();
        Some(ContainerEvent {
            id: actor.id?,
            action: m.action?,
            server: attrs.get(LABEL_SERVER).cloned(),
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
            time_nano: m
                .time_nano
                .or_else(|| m.time.map(|s| s.saturating_mul(1_000_000_000)))
                .unwrap_or(0),
        })
    }
}

/// Docker calls scoped to one agent's managed containers.
#[derive(Clone)]
pub struct DockerApi {
    client: Arc<Mutex<Client>>,
    agent_id: String,
}

enum Client {
    Ready(Docker),
    /// Not connected yet: bollard refuses to build a client while the socket file is
    /// missing (agent started before dockerd), so build it on first use.
    Socket(String),
}

impl DockerApi {
    pub fn new(docker: Docker, agent_id: impl Into<String>) -> Self {
        DockerApi {
            client: Arc::new(Mutex::new(Client::Ready(docker))),
            agent_id: agent_id.into(),
        }
    }

    /// The local daemon (as [`connect_local`]), connecting once its socket exists.
    pub fn local(agent_id: impl Into<String>) -> Self {
        Self::at_socket(local_socket(), agent_id)
    }

    /// The daemon at unix socket `path`, connecting once it exists.
    pub fn at_socket(path: impl Into<String>, agent_id: impl Into<String>) -> Self {
        DockerApi {
            client: Arc::new(Mutex::new(Client::Socket(path.into()))),
            agent_id: agent_id.into(),
        }
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The bollard client (cheap clone), building it if the socket has appeared.
    pub fn client(&self) -> Result<Docker, DockerError> {
        // A poisoned lock only means another thread panicked mid-swap of a plain value.
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Client::Ready(d) => Ok(d.clone()),
            Client::Socket(path) => {
                let d = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| DockerError::Unreachable(e.to_string()))?;
                *guard = Client::Ready(d.clone());
                Ok(d)
            }
        }
    }

    /// Checks the daemon answers and lowers the client's API version to the daemon's when
    /// older (bollard speaks 1.53 by default; Debian's 20.10 daemon refuses above 1.41). The
    /// version is shared by every clone of the client.
    pub async fn negotiate(&self) -> Result<(), DockerError> {
        timed(
            "version",
            Duration::from_secs(10),
            self.client()?.negotiate_version(),
        )
        .await
        .map(|_| ())
    }

    fn our_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_AGENT}={}", self.agent_id),
            ],
        )])
    }

    /// Every container (any state) labelled managed by this agent, inspected.
    pub async fn list_managed(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(self.our_filters()),
            ..Default::default()
        };
        let list = timed(
            "list",
            CALL_TIMEOUT,
            self.client()?.list_containers(Some(opts)),
        )
        .await?;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let Some(id) = c.id else { continue };
            match self.inspect(&id).await {
                Ok(info) => out.push(info),
                // Removed between list and inspect: it is simply gone.
                Err(DockerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let r = timed(
            "inspect",
            CALL_TIMEOUT,
            self.client()?
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await?;
        ContainerInfo::from_inspect(r).ok_or_else(|| DockerError::Api {
            status: 0,
            message: format!("inspect {id}: answer without an id"),
        })
    }

    /// Creates (does not start) the container for `spec`; returns its id.
    pub async fn create(&self, spec: &McpServerSpec) -> Result<String, DockerError> {
        let opts = CreateContainerOptions {
            name: Some(container_name(&self.agent_id, &spec.name)),
            ..Default::default()
        };
        let body = create_body(&self.agent_id, spec);
        let r = timed(
            "create",
            CALL_TIMEOUT,
            self.client()?.create_container(Some(opts), body),
        )
        .await?;
        Ok(r.id)
    }

    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        timed(
            "start",
            CALL_TIMEOUT,
            self.client()?
                .start_container(id, None::<StartContainerOptions>),
        )
        .await
    }

    /// SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is not an error.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let opts = StopContainerOptions {
            t: Some(grace.as_secs().try_into().unwrap_or(i32::MAX)),
            ..Default::default()
        };
        timed(
            "stop",
            grace + CALL_TIMEOUT,
            self.client()?.stop_container(id, Some(opts)),
        )
        .await
    }

    pub async fn restart(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let opts = RestartContainerOptions {
            t: Some(grace.as_secs().try_into().unwrap_or(i32::MAX)),
            ..Default::default()
        };
        timed(
            "restart",
            grace + CALL_TIMEOUT,
            self.client()?.restart_container(id, Some(opts)),
        )
        .await
    }

    /// Force-removes (kills if running) the container and its anonymous volumes.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match timed(
            "remove",
            CALL_TIMEOUT,
            self.client()?.remove_container(id, Some(opts)),
        )
        .await
        {
            Err(DockerError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// The container event stream for this agent's managed containers. It ends (or yields an
    /// error) when the daemon goes away; the caller reconnects and lists.
    pub fn events(&self) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        let mut filters = self.our_filters();
        filters.insert("type".into(), vec!["container".into()]);
        let opts = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        match self.client() {
            Ok(docker) => docker
                .events(Some(opts))
                .filter_map(|r| {
                    std::future::ready(match r {
                        Ok(m) => ContainerEvent::from_message(m).map(Ok),
                        Err(e) => Some(Err(DockerError::from(e))),
                    })
                })
                .boxed(),
            Err(e) => futures::stream::once(std::future::ready(Err(e))).boxed(),
        }
    }

    /// One stats reading (`stream=false, one-shot=true`: no 1–2 s wait for a second
    /// sample): (CPU seconds total, memory working set bytes).
    pub async fn stats_once(&self, id: &str) -> Result<(Option<f64>, Option<u64>), DockerError> {
        let opts = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let docker = self.client()?;
        let mut stream = docker.stats(id, Some(opts));
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .map_err(|_| DockerError::Timeout {
                op: "stats",
                after: Duration::from_secs(5),
            })?;
        let s = match first {
            Some(r) => r?,
            None => return Err(DockerError::NotFound(format!("no stats for {id}"))),
        };
        let cpu = s
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .map(|ns| ns as f64 / 1e9);
        let mem = s.memory_stats.and_then(|m| {
            let usage = m.usage?;
            // Same working-set figure as `docker stats`: usage minus inactive page cache.
            let inactive = m
                .stats
                .as_ref()
                .and_then(|st| {
                    st.get("total_inactive_file")
                        .or_else(|| st.get("inactive_file"))
                })
                .copied()
                .unwrap_or(0);
            Some(usage.saturating_sub(inactive))
        });
        Ok((cpu, mem))
    }
}

/// Milliseconds since the epoch of an RFC 3339 timestamp as Docker writes them
/// (`2024-05-07T21:09:36.123456789Z`, or with a `±hh:mm` offset). `None` for anything else
/// and for instants before 1970 (Docker's "never" is year 1).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds from the first three digits, right-padded ("5" is 500 ms).
        let used = digits.min(3);
        let mut ms: i64 = frac.get(..used)?.parse().ok()?;
        for _ in used..3 {
            ms *= 10;
        }
        millis = ms;
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    if year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-05-07T21:09:36.123456789Z"),
            Some(1_715_116_176_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-07T23:09:36.5+02:00"),
            Some(1_715_116_176_500)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "2024-05-07",
            "2024-13-07T00:00:00Z",
            "2024-05-07T00:00:00",
            "x".repeat(30).as_str(),
            "2024-05-07T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
