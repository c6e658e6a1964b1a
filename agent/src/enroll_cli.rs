//! The `enroll` command's arguments turned into [`crate::enroll::EnrollOptions`]: the token
//! from the command line or a file, the trust anchor, the identity (flag, config, host
//! name) and the file paths from the configuration's `[tls]`, read without requiring the
//! certificate to exist yet. Exit codes: 0 enrolled (or already), 64 usage/config, 1 refused.

use std::path::PathBuf;
use std::process::ExitCode;

use mcpwatch_common::config::{self as cfg, EXIT_CONFIG};

use crate::config::RawAgentConfig;
use crate::enroll::{self, EnrollOptions, Enrolled, Trust};

pub struct Args {
    pub config: PathBuf,
    pub collector: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_fingerprint: Option<String>,
    pub ca: Option<PathBuf>,
    pub name: Option<String>,
    pub force: bool,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("mcpwatch-agent enroll: {msg}");
    ExitCode::from(EXIT_CONFIG as u8)
}

pub fn run(a: Args) -> ExitCode {
    let raw: RawAgentConfig = match cfg::load(&a.config) {
        Ok(r) => r,
        Err(e) => return usage(format!("invalid configuration: {e}")),
    };
    let name = a
        .name
        .or(raw.agent_id.clone())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default();
    if let Err(e) = mcpwatch_common::certs::validate_name(&name) {
        return usage(e);
    }
    let token = match (a.token, a.token_file) {
        (Some(t), _) => t,
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(t) => t.trim().to_owned(),
            Err(e) => return usage(format!("{}: {e}", f.display())),
        },
        (None, None) => return usage("--token or --token-file is required"),
    };
    let trust = match (a.ca_fingerprint, a.ca) {
        (Some(fp), _) => match mcpwatch_common::cert_info::parse_fingerprint(&fp) {
            Some(pin) => Trust::Fingerprint(pin),
            None => return usage("--ca-fingerprint: SHA256: and 32 bytes of hex"),
        },
        (None, Some(ca)) => Trust::CaFile(ca),
        (None, None) => return usage("--ca-fingerprint or --ca is required"),
    };
    let options = EnrollOptions {
        collector: a.collector,
        token,
        trust,
        name: name.clone(),
        files: raw.tls.resolve(&a.config),
        force: a.force,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage(format!("no runtime: {e}")),
    };
    match runtime.block_on(enroll::enroll(options)) {
        Ok(Enrolled::Issued {
            serial,
            not_after_s,
        }) => {
            println!(
                "enrolled {name}: certificate serial {serial}, valid until {not_after_s} (Unix s)"
            );
            ExitCode::SUCCESS
        }
        Ok(Enrolled::Already {
            serial,
            not_after_s,
        }) => {
            println!("already enrolled: certificate serial {serial}, valid until {not_after_s} (Unix s); --force replaces it");
            ExitCode::SUCCESS
        }
        Err(e @ enroll::EnrollError::Usage(_)) => usage(e),
        Err(e) => {
            eprintln!("mcpwatch-agent enroll: {e}");
            ExitCode::FAILURE
        }
    }
}
