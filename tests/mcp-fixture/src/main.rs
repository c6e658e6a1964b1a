//! `mcp-fixture`: the test MCP server as a process (see `--help`). Adds what only a process
//! can do to the library: crash with exit code 3, and stop on SIGTERM/SIGINT, which matters
//! because as PID 1 of a container an unhandled SIGTERM would be ignored.

use std::process::ExitCode;

use mcpwatch_mcp_fixture::{options::USAGE, serve_io, HttpServer, Options, ParseError, Transport};

/// Exit code of `--crash-after`, distinct from success (0) and usage errors (2).
const CRASH_EXIT_CODE: i32 = 3;

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(opts) => opts,
        Err(ParseError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Invalid(msg)) => {
            eprintln!("mcp-fixture: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-fixture: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(opts));
    // Exit without dropping the runtime: a blocking stdin read would otherwise hold it open.
    std::process::exit(code)
}

async fn run(opts: Options) -> i32 {
    if let Some(after) = opts.switches.crash_after {
        if after.is_zero() {
            // Crash on start means before serving anything: racing a zero-delay timer against
            // the first request made `initialize` succeed now and then.
            eprintln!("mcp-fixture: crashing as asked (--crash-after 0)");
            std::process::exit(CRASH_EXIT_CODE);
        }
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!("mcp-fixture: crashing as asked (--crash-after)");
            std::process::exit(CRASH_EXIT_CODE);
        });
    }
    let serve = async {
        match opts.transport {
            Transport::Stdio => {
                let (stdin, stdout) = rmcp::transport::stdio();
                let result = serve_io(stdin, stdout, opts.switches.clone()).await;
                if result.is_ok() && !opts.exit_on_stdin_eof {
                    eprintln!("mcp-fixture: stdin closed; idling until a signal");
                    std::future::pending::<()>().await;
                }
                result
            }
            Transport::Http => match HttpServer::bind(opts.listen, opts.switches.clone()).await {
                Ok(server) => {
                    eprintln!("mcp-fixture: listening on {}", server.url());
                    server.wait().await
                }
                Err(e) => Err(e.into()),
            },
        }
    };
    tokio::select! {
        result = serve => match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mcp-fixture: {e}");
                1
            }
        },
        () = terminate() => 0,
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, still stop on SIGINT.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
