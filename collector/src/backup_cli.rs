//! `backup` and `restore`: the database's safety commands. `backup` works beside a running
//! collector (a consistent snapshot on its own read-only connection); `restore` refuses to
//! run while a collector holds the database, and prints each agent's resume point so the
//! operator knows from which batch the agents' spools replay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::{backup, restore};

use crate::admin_cli::{finish, DbArgs, Failure};

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The backup file to write (must not exist; written 0600, atomically).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The backup file to restore.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
}

pub fn backup(args: BackupArgs) -> ExitCode {
    finish((|| {
        let db = args.db.path()?;
        let snap = backup::snapshot(&db, &args.to)?;
        println!(
            "{}: {} bytes, schema version {}, verified, {} ms",
            snap.path.display(),
            snap.bytes,
            snap.schema_version,
            snap.duration.as_millis()
        );
        Ok::<(), Failure>(())
    })())
}

pub fn restore(args: RestoreArgs) -> ExitCode {
    finish((|| {
        let db = args.db.path()?;
        let done = restore::restore(&args.from, &db, "cli", now_ms())?;
        println!(
            "{} restored from {} (schema {} -> {})",
            db.display(),
            args.from.display(),
            done.schema_from,
            done.schema_to
        );
        match &done.previous {
            Some(p) => println!("the database it replaced is kept as {}", p.display()),
            None => println!("there was no database in place"),
        }
        println!(
            "{} browser sessions ended; users sign in again",
            done.sessions_ended
        );
        println!("agents resume after these batches (their spools replay the rest):");
        for (agent, seq) in &done.agents {
            println!("  {agent}\t{seq}");
        }
        println!(
            "revocations and deletions made after the backup are undone: check API tokens, \
             enrollment tokens and certificates revoked since then"
        );
        Ok::<(), Failure>(())
    })())
}
