//! The operator commands the supervisor executes, and which wire commands they come from.

use mcpwatch_common::wire::CommandAction;

/// Operator commands the supervisor executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorCommand {
    Restart { server: String },
    Stop { server: String },
    Start { server: String },
}

impl SupervisorCommand {
    /// The supervisor's share of a wire command; `ApproveDrift` (probe state) and `Reload`
    /// (config) belong elsewhere and give `None`.
    pub fn from_wire(action: &CommandAction) -> Option<SupervisorCommand> {
        match action {
            CommandAction::RestartServer { server } => Some(SupervisorCommand::Restart {
                server: server.clone(),
            }),
            CommandAction::StopServer { server } => Some(SupervisorCommand::Stop {
                server: server.clone(),
            }),
            CommandAction::StartServer { server } => Some(SupervisorCommand::Start {
                server: server.clone(),
            }),
            CommandAction::ApproveDrift { .. } | CommandAction::Reload => None,
        }
    }

    pub fn server(&self) -> &str {
        match self {
            SupervisorCommand::Restart { server }
            | SupervisorCommand::Stop { server }
            | SupervisorCommand::Start { server } => server,
        }
    }
}
