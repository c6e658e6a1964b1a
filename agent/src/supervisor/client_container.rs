//! Gateway client containers (`[mcp_server.gateway] sessions = "per_client"`): one container
//! of a stdio server's image per MCP client session, with the same template (hardening,
//! limits, labels) as the supervised one, but labelled `mcpwatch.managed=client-session` and
//! named `mcpwatch-<agent>-<server>-c<random>`, so the supervisor's reconcile never sees
//! them. They live as long as their session; whatever outlives an agent (kill -9) is removed
//! by [`DockerApi::remove_client_containers`] at the next start.

use std::collections::HashMap;

use bollard::query_parameters::{CreateContainerOptions, ListContainersOptions};

use super::container_template::{
    container_name, create_body, LABEL_AGENT, LABEL_MANAGED, MANAGED_CLIENT,
};

/// The agent run that started a client container.
pub const LABEL_RUN: &str = "mcpwatch.run";
use super::docker::{timed, DockerApi, DockerError, CALL_TIMEOUT};
use super::spec::McpServerSpec;

impl DockerApi {
    /// Creates and starts a client container for `spec`, labelled with this agent `run`;
    /// returns its id. A container that was created but did not start is removed again (by
    /// name when the create call itself failed or timed out).
    pub async fn start_client_container(
        &self,
        spec: &McpServerSpec,
        run: &str,
    ) -> Result<String, DockerError> {
        let name = format!(
            "{}-c{:08x}",
            container_name(self.agent_id(), &spec.name),
            fastrand::u32(..)
        );
        let mut body = create_body(self.agent_id(), spec);
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(LABEL_MANAGED.into(), MANAGED_CLIENT.into());
            labels.insert(LABEL_RUN.into(), run.into());
        }
        let opts = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = timed(
            "create",
            CALL_TIMEOUT,
            self.client()?.create_container(Some(opts), body),
        )
        .await;
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                // A create that timed out may still have happened.
                let _ = self.remove(&name).await;
                return Err(e);
            }
        };
        if let Err(e) = self.start(&created.id).await {
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        Ok(created.id)
    }

    /// Removes this agent's client containers, except those of run `keep` (the orphans of
    /// earlier runs at start, or all of them at shutdown); returns how many.
    pub async fn remove_client_containers(&self, keep: Option<&str>) -> Result<usize, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}={MANAGED_CLIENT}"),
                format!("{LABEL_AGENT}={}", self.agent_id()),
            ],
        )]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = timed(
            "list",
            CALL_TIMEOUT,
            self.client()?.list_containers(Some(opts)),
        )
        .await?;
        let mut removed = 0;
        let of_kept_run = |c: &bollard::models::ContainerSummary| {
            keep.is_some_and(|run| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_RUN))
                    .map(String::as_str)
                    == Some(run)
            })
        };
        for id in list
            .into_iter()
            .filter(|c| !of_kept_run(c))
            .filter_map(|c| c.id)
        {
            self.remove(&id).await?;
            removed += 1;
        }
        Ok(removed)
    }
}
