//! The operator CLI in the `keyward` binary: the command line (clap), and
//! the client subcommands that talk gRPC to a running keyward
//! (`accounts`, `resources`, `tokens`, `authorize`, `introspect`, `audit`),
//! `store` (copy, backup, restore: `storemove`'s), plus `completions`. `keyward serve` (and no subcommand at all) serves.
//!
//! Layer L7 (wiring, beside `config`): it builds requests from `pb` and
//! renders answers with `wire`; it never reaches into the engine.
//!
//! - `cli/parse.rs`: the argument syntaxes (`TYPE:ID=LEVEL`, `NAME=LEVEL`,
//!   durations, times), pure.
//! - `cli/exit.rs`: the error type and the exit code of each gRPC status.
//! - `cli/connect.rs`: the channel (plaintext or TLS), the credential.
//! - `cli/render.rs`: tables for people, one JSON document for scripts.
//! - `cli/admin.rs`, `cli/tokens.rs`: one function per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::model::Level;
use crate::pb::v1 as pb;

mod admin;
mod connect;
pub mod exit;
pub mod parse;
mod render;
mod tokens;

#[cfg(test)]
mod tests;

pub use exit::CliError;
use parse::{Expiry, GrantArg, RateLimitArg, ResourceArg, ScopeArg};

/// keyward: issues and manages API tokens, and answers "may this token do
/// this, on this resource, at this level?" over gRPC. Without a subcommand
/// it serves (as `keyward serve`).
#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Exit codes of the client subcommands: 0 ok, 1 other error, 2 usage, \
                  3 invalid argument, 4 unauthenticated, 5 permission denied (and a denied \
                  authorize), 6 not found, 7 failed precondition or already exists, \
                  8 unavailable (or the server cannot be reached)."
)]
pub struct Cli {
    /// The server's settings, when no subcommand is given.
    #[command(flatten)]
    pub serve: Config,

    /// What to do; none: serve.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: the gRPC and HTTP ports (the default with no subcommand).
    Serve(Box<Config>),
    /// Accounts: create (root token), list, get, update (name, policy).
    Accounts {
        /// Where and as whom.
        #[command(flatten)]
        client: ClientArgs,
        /// What.
        #[command(subcommand)]
        action: AccountsCmd,
    },
    /// Resources: register a project, sandbox or domain; list; delete.
    Resources {
        /// Where and as whom.
        #[command(flatten)]
        client: ClientArgs,
        /// What.
        #[command(subcommand)]
        action: ResourcesCmd,
    },
    /// Tokens: create, list, get, update, reset, pause, resume, delete,
    /// report-leak.
    Tokens {
        /// Where and as whom.
        #[command(flatten)]
        client: ClientArgs,
        /// What.
        #[command(subcommand)]
        action: TokensCmd,
    },
    /// May TOKEN act on TYPE:ID at LEVEL? (Authorizer/Authorize; no
    /// credential needed). Exit 0 when allowed, 5 when denied.
    Authorize {
        /// The token to check; `-` reads it from stdin (keeps it out of
        /// `ps` and the shell history).
        token: String,
        /// The question: TYPE:ID=LEVEL, e.g. domain:example.com=admin.
        #[arg(value_name = "TYPE:ID=LEVEL")]
        check: GrantArg,
        /// The feature scope of the request (for scope-restricted tokens).
        #[arg(long)]
        scope: Option<String>,
        /// Units taken from the token's sending limits (default 1; 0 checks
        /// without spending).
        #[arg(long)]
        cost: Option<u64>,
        /// Where (no credential is sent). Last: its help heading would
        /// otherwise cover the fields after it.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What a token is (Authorizer/Introspect): the credential's own token
    /// (KEYWARD_TOKEN or --token-file), or `-`: a token read from stdin.
    Introspect {
        /// `-`: read the token to describe from stdin.
        #[arg(value_parser = ["-"], value_name = "-")]
        stdin: Option<String>,
        /// Where, and the token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// An account's audit log (account admins and root): the newest events,
    /// oldest first.
    Audit {
        /// At most this many events: the newest.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where and as whom.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a store between sled and PostgreSQL, back it up, restore it:
    /// `store copy --from --to`, `store backup --to FILE` (a running node,
    /// through --server with the root token; or --from an offline store),
    /// `store restore --from FILE --to`. Exit codes: 0, 64 bad flags, 65 a
    /// damaged file or a failed check, 69 the server failed the backup, 73
    /// the destination is not empty or the source is in use, 74 I/O.
    Store {
        /// What.
        #[command(subcommand)]
        action: crate::storemove::cli::StoreCommand,
        /// Where and as whom (a backup through a server only).
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Shell completions on stdout: `keyward completions bash > ...`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Where the server is, how to reach it, as whom, how to print. Every
/// client subcommand takes these (before or after its action).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// The server's gRPC address: http://host:port, or https://host:port
    /// (TLS; verified against --ca or the system roots).
    #[arg(
        long,
        env = "KEYWARD_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,

    /// https: PEM CA certificate(s) the server's certificate must chain to
    /// (default: the system roots).
    #[arg(long, env = "KEYWARD_TLS_CA", global = true)]
    pub ca: Option<PathBuf>,

    /// https with client certificates (mTLS): this client's PEM certificate
    /// chain (with --key).
    #[arg(long, env = "KEYWARD_TLS_CERT", global = true)]
    pub cert: Option<PathBuf>,

    /// https with client certificates: the private key of --cert.
    #[arg(long, env = "KEYWARD_TLS_KEY", global = true)]
    pub key: Option<PathBuf>,

    /// File whose first line is the caller's token. Without it, the token
    /// in KEYWARD_TOKEN. Never a flag of its own: a token on the command
    /// line shows in `ps`.
    #[arg(long, env = "KEYWARD_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// The account to act on (default: the credential's own account, asked
    /// with Introspect; the root token must name one).
    #[arg(long, env = "KEYWARD_ACCOUNT", global = true)]
    pub account: Option<u64>,

    /// One JSON document on stdout instead of a table (stable snake_case
    /// field names; see the README).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `keyward accounts ...`
#[derive(Debug, Subcommand)]
pub enum AccountsCmd {
    /// Create an account (root token only); its first ADMIN token is
    /// printed once, on the last line.
    Create {
        /// Display name.
        name: String,
    },
    /// The accounts the credential can see.
    List,
    /// One account.
    Get {
        /// The account id.
        id: u64,
    },
    /// Rename an account or change its token policy.
    Update {
        /// The account id.
        id: u64,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// Longest expiry a token may be given ("30d", "720h"); "0s": no limit.
        #[arg(long, value_parser = parse::duration, value_name = "DURATION")]
        max_token_lifetime: Option<std::time::Duration>,
        /// Every token needs an expiry.
        #[arg(long)]
        require_expiry: Option<bool>,
    },
}

/// `keyward resources ...`
#[derive(Debug, Subcommand)]
pub enum ResourcesCmd {
    /// Register a project, sandbox (with --parent project:ID) or domain; a
    /// domain's own token is printed once, on the last line.
    Register {
        /// project, sandbox or domain.
        #[arg(value_parser = parse::kind, value_name = "TYPE")]
        kind: crate::model::Kind,
        /// The resource's id.
        id: String,
        /// The parent, TYPE:ID: the project of a sandbox.
        #[arg(long, value_name = "TYPE:ID")]
        parent: Option<ResourceArg>,
    },
    /// The account's resources the credential can see.
    List,
    /// Delete a resource, its descendants and every grant on them.
    Delete {
        /// project, sandbox or domain.
        #[arg(value_parser = parse::kind, value_name = "TYPE")]
        kind: crate::model::Kind,
        /// The resource's id.
        id: String,
    },
}

/// `keyward tokens ...`
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create a token; the secret is printed once, on the last line (with
    /// --json: in the document).
    Create {
        /// Display name.
        name: String,
        /// A grant, TYPE:ID=LEVEL (e.g. domain:example.com=admin); repeat.
        #[arg(long = "grant", required = true, value_name = "TYPE:ID=LEVEL")]
        grants: Vec<GrantArg>,
        /// A feature scope, NAME=LEVEL (e.g. email=admin); repeat. None:
        /// every feature.
        #[arg(long = "scope", value_name = "NAME=LEVEL")]
        scopes: Vec<ScopeArg>,
        /// When it stops working.
        #[command(flatten)]
        expiry: ExpiryArgs,
        /// A sending limit, NAME=LIMIT/PERIOD (e.g. send=1000/1d: 1,000
        /// per day, as a bucket refilled continuously); repeat, up to 8.
        #[arg(long = "rate-limit", value_name = "NAME=LIMIT/PERIOD")]
        rate_limits: Vec<RateLimitArg>,
    },
    /// The account's tokens the credential may manage.
    List {
        /// Only tokens expiring before this time: RFC 3339, or a duration
        /// from now ("13h").
        #[arg(long, value_parser = parse::time_or_in, value_name = "RFC3339|DURATION")]
        expiring_before: Option<std::time::SystemTime>,
    },
    /// One token.
    Get {
        /// The token id.
        id: u64,
    },
    /// Rename a token, replace its grants or scopes, set or clear its expiry.
    Update {
        /// The token id.
        id: u64,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New grants (replace all), TYPE:ID=LEVEL; repeat.
        #[arg(long = "grant", value_name = "TYPE:ID=LEVEL")]
        grants: Vec<GrantArg>,
        /// New scopes (replace all), NAME=LEVEL; repeat.
        #[arg(
            long = "scope",
            conflicts_with = "all_scopes",
            value_name = "NAME=LEVEL"
        )]
        scopes: Vec<ScopeArg>,
        /// Drop every scope: unrestricted by feature.
        #[arg(long)]
        all_scopes: bool,
        /// New expiry.
        #[command(flatten)]
        expiry: ExpiryArgs,
        /// Clear the expiry: the token never expires.
        #[arg(long, conflicts_with_all = ["expires_in", "expires_at"])]
        no_expiry: bool,
        /// New sending limits (replace all), NAME=LIMIT/PERIOD; repeat.
        /// Unchanged limits keep what they have spent.
        #[arg(long = "rate-limit", value_name = "NAME=LIMIT/PERIOD")]
        rate_limits: Vec<RateLimitArg>,
        /// Drop every sending limit.
        #[arg(long, conflicts_with = "rate_limits")]
        no_rate_limits: bool,
    },
    /// Replace a token by a new one with the same grants (printed once, on
    /// the last line); the old one works for the grace period.
    Reset {
        /// The token id.
        id: u64,
        /// How long the old token keeps working (at most the server's
        /// --reset-grace, 12h by default); "0s" for a leak.
        #[arg(long, value_parser = parse::duration, value_name = "DURATION")]
        grace: Option<std::time::Duration>,
        /// The new token's expiry.
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Pause a token: denied from the next Authorize.
    Pause {
        /// The token id.
        id: u64,
    },
    /// Resume a paused token.
    Resume {
        /// The token id.
        id: u64,
    },
    /// Delete a token at once.
    Delete {
        /// The token id.
        id: u64,
    },
    /// Report a leaked secret, read from stdin: a live keyward token is
    /// paused at once.
    ReportLeak {
        /// Where it was found.
        #[arg(long)]
        url: Option<String>,
    },
}

/// `--expires-in DUR | --expires-at RFC3339`
#[derive(Debug, Clone, Args)]
pub struct ExpiryArgs {
    /// Expires this long from now ("30d", "12h").
    #[arg(long, value_parser = parse::duration, conflicts_with = "expires_at", value_name = "DURATION")]
    pub expires_in: Option<std::time::Duration>,
    /// Expires at this time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_parser = parse::time, value_name = "RFC3339")]
    pub expires_at: Option<std::time::SystemTime>,
}

impl ExpiryArgs {
    /// The expiry asked for, if any.
    fn get(&self) -> Option<Expiry> {
        match (self.expires_in, self.expires_at) {
            (Some(d), _) => Some(Expiry::In(d)),
            (None, Some(t)) => Some(Expiry::At(t)),
            (None, None) => None,
        }
    }
}

/// Runs one client subcommand (not `serve`) to its exit code: the answer
/// on stdout, an error on stderr.
pub fn run(command: Command) -> ExitCode {
    if let Command::Completions { shell } = command {
        // Into a buffer first: clap_complete panics when its writer fails
        // (stdout closed early).
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "keyward", &mut script);
        return match render::emit_bytes(&script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => exit::report(&e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::report(&CliError::Other(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}

async fn dispatch(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Accounts { client, action } => admin::accounts(&client, action).await,
        Command::Resources { client, action } => admin::resources(&client, action).await,
        Command::Tokens { client, action } => tokens::run(&client, action).await,
        Command::Authorize {
            client,
            token,
            check,
            scope,
            cost,
        } => tokens::authorize(&client, &token, &check, scope, cost).await,
        Command::Introspect { client, stdin } => tokens::introspect(&client, stdin.is_some()).await,
        Command::Audit { client, limit } => admin::audit(&client, limit).await,
        Command::Store { action, client } => {
            let server = if action.needs_server() {
                let token = connect::Token::credential(&client)?;
                let channel = connect::channel(&client).await?;
                Some((channel, token.expose().to_string()))
            } else {
                None
            };
            let code = crate::storemove::cli::run(
                &action,
                server,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )
            .await;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Serve(_) | Command::Completions { .. } => {
            Err(CliError::Other("not a client subcommand".into()))
        }
    }
}

/// The wire form of a level.
fn level_to_wire(level: Level) -> i32 {
    level.to_wire()
}

/// The wire form of a parsed grant.
fn grant_to_wire(g: &GrantArg) -> pb::Grant {
    pb::Grant {
        resource: Some(g.resource.to_wire()),
        level: level_to_wire(g.level),
    }
}
