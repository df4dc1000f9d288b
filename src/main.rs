//! The `hookwire` command line: flags, subcommands and exit codes. The work
//! is done by the library; this file only parses and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use hookwire::cli;
use hookwire::config::{ByteSize, Duration};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A webhook daemon: receive, verify, match with rule files, store durably, fan out to actions.
#[derive(Parser, Debug)]
#[command(
    name = "hookwire",
    version = env!("HOOKWIRE_VERSION"),
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `hookwire` with no subcommand is `hookwire serve`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Validate rule files or directories (default ./rules); exit 0 valid, 1 invalid.
    Check {
        /// Rule files or directories.
        paths: Vec<PathBuf>,
        /// Also list every rule with its actions, and the step graph of rules with steps.
        #[arg(short, long)]
        verbose: bool,
        /// Compare these files with the rules a running daemon serves, over
        /// the events it stored: which rules would start or stop matching
        /// which events, and which rendered fields would change. Exit 0 when
        /// nothing changes, 3 when something does, 1 when the files do not
        /// load, 2 on bad input.
        #[arg(long)]
        backtest: bool,
        /// With --backtest: the newest N stored events (default 1000, at most 10000).
        #[arg(long, requires = "backtest")]
        last: Option<u32>,
        /// With --backtest: the events received within this long, e.g. 24h.
        #[arg(long, requires = "backtest")]
        since: Option<String>,
        /// With --backtest: only the events of this source.
        #[arg(long, requires = "backtest")]
        source: Option<String>,
        /// With --backtest: the daemon's address.
        #[arg(long, default_value = "http://127.0.0.1:8080", requires = "backtest")]
        server: String,
        /// With --backtest: the daemon's admin token.
        #[arg(long, env = "HOOKWIRE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// With --backtest: output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"], requires = "backtest")]
        format: String,
    },
    /// Dry-run: evaluate the rules of a source against a payload and show why each rule did or did not match.
    Test(TestArgs),
    /// Send a (signed) test webhook the way a provider would, and print the answer.
    Send {
        /// Where to send it, e.g. http://127.0.0.1:8080/hooks/github.
        url: String,
        /// File holding the body.
        #[arg(long)]
        payload: PathBuf,
        /// Sign as this provider: github, stripe, slack, standard, shopify or gitlab.
        #[arg(long)]
        sign: Option<String>,
        /// The secret to sign with (for standard: base64, `whsec_` and padding optional).
        #[arg(long, hide_env_values = true)]
        secret: Option<String>,
        /// The event (GitHub `X-GitHub-Event`, default ping; GitLab `X-Gitlab-Event`,
        /// default "Push Hook") or Shopify topic (`X-Shopify-Topic`, default orders/create).
        #[arg(long, visible_alias = "topic", value_name = "NAME")]
        event: Option<String>,
        /// An extra header, 'Name: value'; repeatable; replaces a header of the same name
        /// that hookwire would send.
        #[arg(long = "header", value_name = "'K: V'")]
        headers: Vec<String>,
    },
    /// List stored events of a running daemon, newest first.
    Events {
        #[arg(long)]
        source: Option<String>,
        /// Only events that matched (true) or did not (false).
        #[arg(long)]
        matched: Option<bool>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One stored event: why each rule did or did not match, and its deliveries with every attempt.
    Event {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Match a stored event again against the current rules; new deliveries.
    Replay {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List deliveries, newest first.
    Deliveries {
        /// pending, running, succeeded, retrying, dead or skipped.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put a dead or skipped delivery back in the queue with a fresh attempt budget.
    Retry {
        delivery_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the shell completion script for bash, zsh, fish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema (draft 2020-12) of rule files, for editors
    /// (`# yaml-language-server: $schema=…`).
    Schema,
    /// Write the man pages (hookwire.1 and one per subcommand) into a directory.
    Man {
        /// The directory; created if missing.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ApiArgs {
    /// The daemon's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The daemon's admin token.
    #[arg(long, env = "HOOKWIRE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

impl ApiArgs {
    fn api(self) -> cli::ops::Api {
        cli::ops::Api {
            server: self.server,
            token: self.admin_token.filter(|t| !t.is_empty()),
            json: self.format == "json",
        }
    }
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOOKWIRE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory of rule files, watched for changes.
    #[arg(long, env = "HOOKWIRE_RULES", default_value = "./rules")]
    rules: PathBuf,
    /// Where events are stored: sqlite://PATH (one process), or
    /// postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=prefer for several instances.
    #[arg(
        long,
        env = "HOOKWIRE_DATABASE",
        default_value = "sqlite://hookwire.db"
    )]
    database: String,
    /// Bearer token for the admin API; without it the API answers loopback clients only.
    #[arg(long, env = "HOOKWIRE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// SMTP server for email actions (smtp://user:pass@host:587, smtps://…).
    #[arg(long, env = "HOOKWIRE_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Default sender of email actions.
    #[arg(long, env = "HOOKWIRE_SMTP_FROM", default_value = "hookwire@localhost")]
    smtp_from: String,
    /// Largest accepted request body (a source's max_body overrides it).
    #[arg(long, env = "HOOKWIRE_MAX_BODY", default_value = "1MiB")]
    max_body: ByteSize,
    /// Concurrent deliveries.
    #[arg(long, env = "HOOKWIRE_WORKERS", default_value_t = 32)]
    workers: u32,
    /// Finished events older than this are pruned.
    #[arg(long, env = "HOOKWIRE_RETENTION", default_value = "7d")]
    retention: Duration,
    /// How long running attempts may finish after SIGTERM/SIGINT.
    #[arg(long, env = "HOOKWIRE_SHUTDOWN_GRACE", default_value = "10s")]
    shutdown_grace: Duration,
    /// Proxy addresses (CIDR) whose X-Forwarded-For is trusted; repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "HOOKWIRE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Allow a non-loopback --listen without --admin-token (the admin API then still answers loopback clients only).
    #[arg(long, env = "HOOKWIRE_INSECURE_ADMIN")]
    insecure_admin: bool,
    /// TLS certificate (PEM).
    #[arg(long, env = "HOOKWIRE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "HOOKWIRE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Connections to PostgreSQL this instance keeps at most (SQLite: unused).
    #[arg(long, env = "HOOKWIRE_DATABASE_POOL", default_value_t = 16)]
    database_pool: u32,
    /// How long a claimed delivery stays this instance's without a heartbeat
    /// (renewed every third of it while the attempt runs).
    #[arg(long, env = "HOOKWIRE_LEASE", default_value = "30s")]
    lease: Duration,
    /// Connections served at once (each buffers at most one body); more wait up to 5 s, then get 503.
    #[arg(long, env = "HOOKWIRE_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: u32,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "HOOKWIRE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Args, Debug)]
struct TestArgs {
    /// The source whose rules are evaluated.
    #[arg(long)]
    source: String,
    /// File holding the request body.
    #[arg(long, required_unless_present = "event", conflicts_with = "event")]
    payload: Option<PathBuf>,
    /// A stored event of a running daemon instead of a file (its body, headers and query).
    #[arg(long)]
    event: Option<String>,
    /// A request header, 'Name: value'; repeatable.
    #[arg(long = "header", value_name = "'K: V'")]
    headers: Vec<String>,
    /// A query parameter, k=v; repeatable.
    #[arg(long = "query", value_name = "k=v")]
    query: Vec<String>,
    /// Directory (or file) of rule files.
    #[arg(long, default_value = "./rules")]
    rules: PathBuf,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Run each rendered action once, for real (no retries), and show what happened.
    #[arg(long)]
    execute: bool,
    /// SMTP server for email actions run by --execute.
    #[arg(long, env = "HOOKWIRE_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Sender of email actions run by --execute.
    #[arg(long, env = "HOOKWIRE_SMTP_FROM", default_value = "hookwire@localhost")]
    smtp_from: String,
    /// The daemon to fetch --event from.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The daemon's admin token, for --event.
    #[arg(long, env = "HOOKWIRE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Check {
            paths,
            verbose,
            backtest,
            last,
            since,
            source,
            server,
            admin_token,
            format,
        }) => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("./rules")]
            } else {
                paths
            };
            if backtest {
                cli::backtest::run(&cli::backtest::BacktestOptions {
                    paths,
                    api: cli::ops::Api {
                        server,
                        token: admin_token.filter(|t| !t.is_empty()),
                        json: format == "json",
                    },
                    last,
                    since,
                    source,
                })
            } else {
                cli::check::run(&paths, verbose)
            }
        }
        Some(Command::Test(t)) => cli::test::run(&cli::test::TestOptions {
            source: t.source,
            payload: t.payload,
            event: t.event,
            api: cli::ops::Api {
                server: t.server,
                token: t.admin_token.filter(|x| !x.is_empty()),
                json: true,
            },
            headers: t.headers,
            query: t.query,
            rules: t.rules,
            json: t.format == "json",
            execute: t.execute,
            smtp_url: t.smtp_url,
            smtp_from: t.smtp_from,
        }),
        Some(Command::Send {
            url,
            payload,
            sign,
            secret,
            event,
            headers,
        }) => cli::send::run(&cli::send::SendOptions {
            url,
            payload,
            sign,
            secret,
            event,
            headers,
        }),
        Some(Command::Events {
            source,
            matched,
            limit,
            api,
        }) => cli::ops::run(
            &api.api(),
            cli::ops::Op::Events {
                source,
                matched,
                limit,
            },
        ),
        Some(Command::Event { id, api }) => cli::ops::run(&api.api(), cli::ops::Op::Event { id }),
        Some(Command::Replay { id, api }) => cli::ops::run(&api.api(), cli::ops::Op::Replay { id }),
        Some(Command::Deliveries { status, limit, api }) => {
            cli::ops::run(&api.api(), cli::ops::Op::Deliveries { status, limit })
        }
        Some(Command::Retry { delivery_id, api }) => {
            cli::ops::run(&api.api(), cli::ops::Op::Retry { id: delivery_id })
        }
        Some(Command::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hookwire", &mut script);
            print_out("the completion script", &script)
        }
        Some(Command::Schema) => {
            let schema = hookwire::syntax::raw::schema();
            let mut text = serde_json::to_vec_pretty(&schema).unwrap_or_default();
            text.push(b'\n');
            print_out("the schema", &text)
        }
        Some(Command::Man { dir }) => match write_man_pages(&dir) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: cannot write the man pages into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes `bytes` to stdout. A closed pipe (`| head`) is the reader's
/// choice, not an error.
fn print_out(what: &str, bytes: &[u8]) -> ExitCode {
    match std::io::Write::write_all(&mut std::io::stdout().lock(), bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `hookwire.1` and `hookwire-SUBCOMMAND.1` for every subcommand into
/// `dir`; answers the files written.
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let command = Cli::command();
    let mut pages = vec![("hookwire".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        // Named as git names its pages (`man hookwire-serve`), with the
        // synopsis as it is typed (`hookwire serve …`).
        let name = format!("hookwire-{}", sub.get_name());
        let typed = format!("hookwire {}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name).bin_name(typed)));
    }
    let mut written = Vec::new();
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(&path, out)?;
        written.push(path);
    }
    Ok(written)
}

fn serve(args: ServeArgs) -> ExitCode {
    let _log = hookwire::telemetry::init(args.log_format == "json");
    let opts = hookwire::server::ServeOptions {
        listen: args.listen,
        rules: args.rules,
        database: args.database,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        smtp_url: args.smtp_url,
        smtp_from: args.smtp_from,
        workers: args.workers as usize,
        retention: args.retention.get(),
        max_body: args.max_body.get(),
        trusted_proxies: args.trusted_proxies,
        insecure_admin: args.insecure_admin,
        shutdown_grace: args.shutdown_grace.get(),
        tls: args.tls_cert.zip(args.tls_key),
        max_connections: args.max_connections as usize,
        lease: args.lease.get(),
        database_pool: args.database_pool as usize,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookwire: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hookwire::server::serve(
        opts,
        tokio_util::sync::CancellationToken::new(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hookwire: {e:#}");
            ExitCode::FAILURE
        }
    }
}
