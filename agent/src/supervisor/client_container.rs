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
use super::docker::{timed, DockerApi, DockerError, CALL_TIMEOUT};
use super::spec::McpServerSpec;

impl DockerApi {
    /// Creates and starts a client container for `spec`; returns its id. A container that
    /// was created but did not start is removed again.
    pub async fn start_client_container(
        &self,
        spec: &McpServerSpec,
    ) -> Result<String, DockerError> {
        let name = format!(
            "{}-c{:08x}",
            container_name(self.agent_id(), &spec.name),
            fastrand::u32(..)
        );
        let mut body = create_body(self.agent_id(), spec);
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(LABEL_MANAGED.into(), MANAGED_CLIENT.into());
        }
        let opts = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let created = timed(
            "create",
            CALL_TIMEOUT,
            self.client()?.create_container(Some(opts), body),
        )
        .await?;
        if let Err(e) = self.start(&created.id).await {
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        Ok(created.id)
    }

    /// Removes every client container of this agent (orphans of an earlier run); returns how
    /// many.
    pub async fn remove_client_containers(&self) -> Result<usize, DockerError> {
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
        for id in list.into_iter().filter_map(|c| c.id) {
            self.remove(&id).await?;
            removed += 1;
        }
        Ok(removed)
    }
}
