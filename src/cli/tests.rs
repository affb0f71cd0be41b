//! The CLI's pure parts: argument syntaxes, exit codes, and the command
//! line itself (serve stays the default; a token is never a flag).

use std::time::Duration;

use clap::Parser;
use tonic::Code;

use super::exit::{self, code_of, CliError};
use super::parse::{self, GrantArg, ResourceArg, ScopeArg};
use super::{Cli, Command, TokensCmd};
use crate::model::{Kind, Level};

fn grant(s: &str) -> Result<GrantArg, String> {
    s.parse()
}

/// `TYPE:ID=LEVEL`: any case for type and level, numbers for levels, ids
/// holding `:` (the type ends at the first one).
#[test]
fn grants_parse() {
    assert_eq!(
        grant("domain:example.com=admin").unwrap(),
        GrantArg {
            resource: ResourceArg {
                kind: Kind::Domain,
                id: "example.com".into()
            },
            level: Level::Admin
        }
    );
    let g = grant("PROJECT:p1=Viewer").unwrap();
    assert_eq!((g.resource.kind, g.level), (Kind::Project, Level::Viewer));
    let g = grant("sandbox:a:b@c=10").unwrap();
    assert_eq!(
        (g.resource.kind, g.resource.id.as_str(), g.level),
        (Kind::Sandbox, "a:b@c", Level::Viewer)
    );
    assert_eq!(grant("account:7=100").unwrap().level, Level::Admin);
}

/// Each malformed grant is refused with a message saying what was wrong.
#[test]
fn bad_grants_say_why() {
    for (input, says) in [
        ("domain:example.com", "expected TYPE:ID=LEVEL"),
        ("example.com=admin", "expected TYPE:ID"),
        ("planet:x=admin", "`planet` is not a resource type"),
        ("domain:=admin", "the id after `domain:` is empty"),
        ("domain:example.com=owner", "`owner` is not a level"),
        ("domain:example.com=", "`` is not a level"),
        ("", "expected TYPE:ID=LEVEL"),
    ] {
        let err = grant(input).unwrap_err();
        assert!(err.contains(says), "{input:?}: {err}");
    }
}

#[test]
fn scopes_parse() {
    assert_eq!(
        "email=admin".parse::<ScopeArg>().unwrap(),
        ScopeArg {
            name: "email".into(),
            level: Level::Admin
        }
    );
    assert!("email"
        .parse::<ScopeArg>()
        .unwrap_err()
        .contains("NAME=LEVEL"));
    assert!("=admin".parse::<ScopeArg>().unwrap_err().contains("empty"));
    assert!("email=full"
        .parse::<ScopeArg>()
        .unwrap_err()
        .contains("not a level"));
}

#[test]
fn durations_parse() {
    assert_eq!(parse::duration("0s").unwrap(), Duration::ZERO);
    assert_eq!(parse::duration("0").unwrap(), Duration::ZERO);
    assert_eq!(
        parse::duration("12h").unwrap(),
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(
        parse::duration("30d").unwrap(),
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(
        parse::duration("1h 30m").unwrap(),
        Duration::from_secs(5400)
    );
    for bad in ["", "12", "soon", "-1h", "1 fortnight"] {
        assert!(parse::duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn times_parse() {
    let t = parse::time("2030-01-01T00:00:00Z").unwrap();
    assert_eq!(parse::timestamp(t).seconds, 1_893_456_000);
    assert!(parse::time("2030-01-01").is_err());
    assert!(parse::time("tomorrow").is_err());
    // A duration from now, or a time.
    let soon = parse::time_or_in("13h").unwrap();
    let left = soon.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(12 * 3600) && left <= Duration::from_secs(13 * 3600));
    assert_eq!(parse::time_or_in("2030-01-01T00:00:00Z").unwrap(), t);
    assert!(parse::time_or_in("later").is_err());
}

/// Every status code has its class, and each class a distinct code.
#[test]
fn exit_codes_per_status_class() {
    let table = [
        (Code::Ok, 0),
        (Code::InvalidArgument, 3),
        (Code::OutOfRange, 3),
        (Code::Unauthenticated, 4),
        (Code::PermissionDenied, 5),
        (Code::NotFound, 6),
        (Code::FailedPrecondition, 7),
        (Code::AlreadyExists, 7),
        (Code::Aborted, 7),
        (Code::Unavailable, 8),
        (Code::DeadlineExceeded, 8),
        (Code::ResourceExhausted, 8),
        (Code::Internal, 1),
        (Code::Unknown, 1),
        (Code::Unimplemented, 1),
        (Code::Cancelled, 8),
        (Code::DataLoss, 1),
    ];
    for (code, exit) in table {
        assert_eq!(code_of(code), exit, "{code:?}");
    }
    assert_eq!(CliError::Usage("x".into()).exit_code(), exit::USAGE);
    assert_eq!(
        CliError::Unreachable("x".into()).exit_code(),
        exit::UNAVAILABLE
    );
    assert_eq!(CliError::Other("x".into()).exit_code(), exit::OTHER);
}

/// A bad request is said field by field, from its BadRequest details, as
/// the server sends them (`error::Error` → `Status`).
#[test]
fn bad_request_names_each_field() {
    let status: tonic::Status = crate::error::Error::InvalidArgument(vec![
        ("grants[0].resource".into(), "not registered".into()),
        ("name".into(), "must not be empty".into()),
    ])
    .into();
    let err = CliError::from(status);
    assert_eq!(err.exit_code(), exit::INVALID_ARGUMENT);
    assert_eq!(
        err.lines(),
        vec![
            "invalid argument: grants[0].resource: not registered",
            "invalid argument: name: must not be empty",
        ]
    );
    let err = CliError::from(tonic::Status::permission_denied("no"));
    assert_eq!(err.lines(), vec!["permission denied: no"]);
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("keyward").chain(args.iter().copied()))
}

/// No subcommand serves, with the server's flags as before; `serve` takes
/// the same flags.
#[test]
fn serve_is_the_default() {
    let cli = parse(&["--grpc-addr", "127.0.0.1:7"]).unwrap();
    assert!(cli.command.is_none());
    assert_eq!(cli.serve.grpc_addr.port(), 7);
    match parse(&["serve", "--grpc-addr", "127.0.0.1:8"])
        .unwrap()
        .command
    {
        Some(Command::Serve(config)) => assert_eq!(config.grpc_addr.port(), 8),
        other => panic!("{other:?}"),
    }
    // A server flag before a client subcommand is a usage error.
    let err = parse(&["--grpc-addr", "127.0.0.1:7", "tokens", "list"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

/// Client options go before or after the action; a bad grant is clap's
/// usage error (exit 2); there is no flag that takes a token.
#[test]
fn client_command_line() {
    let cli = parse(&[
        "tokens",
        "create",
        "ci",
        "--grant",
        "domain:example.com=admin",
        "--json",
        "--server",
        "http://127.0.0.1:9",
    ])
    .unwrap();
    match cli.command {
        Some(Command::Tokens {
            client,
            action: TokensCmd::Create { grants, .. },
        }) => {
            assert!(client.json);
            assert_eq!(client.server, "http://127.0.0.1:9");
            assert_eq!(grants.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    let err = parse(&["tokens", "create", "ci", "--grant", "domain:example.com"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("expected TYPE:ID=LEVEL"), "{err}");
    for flag in ["--token", "--secret"] {
        let err = parse(&["tokens", "list", flag, "kw_x"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::UnknownArgument,
            "{flag}"
        );
    }
    let err = parse(&[
        "tokens",
        "create",
        "ci",
        "--grant",
        "project:p=admin",
        "--expires-in",
        "1h",
        "--expires-at",
        "2030-01-01T00:00:00Z",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
}

/// The clap definition is consistent (debug_assert walks every subcommand).
#[test]
fn command_line_is_well_formed() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}

/// Tables: columns aligned two spaces apart, no trailing blanks.
#[test]
fn tables_align() {
    let t = super::render::table(
        &["ID", "NAME", "X"],
        vec![
            vec!["1".into(), "ci sender".into(), String::new()],
            vec!["12".into(), "a".into(), "b".into()],
        ],
    );
    assert_eq!(t, "ID  NAME       X\n1   ci sender\n12  a          b");
}

/// The JSON names the README documents, and only those: scripts rely on
/// them. No secret field in a token.
#[test]
fn json_names_are_the_documented_ones() {
    use crate::pb::v1 as pb;
    let token = pb::Token {
        id: 5,
        account_id: 1,
        name: "ci".into(),
        grants: vec![pb::Grant {
            resource: Some(pb::ResourceRef {
                r#type: Kind::Domain.to_wire(),
                id: "example.com".into(),
            }),
            level: Level::Admin.to_wire(),
        }],
        ..pb::Token::default()
    };
    let v = super::render::token_json(&token);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "id",
        "account_id",
        "name",
        "last_4_digits",
        "created_by",
        "created_at",
        "expires_at",
        "paused",
        "grants",
        "scopes",
        "replaced_by",
        "replaces",
        "last_used_at",
        "last_used_by",
        "root",
        "rate_limits",
    ];
    want.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(
        v["grants"][0],
        serde_json::json!({"type": "domain", "id": "example.com", "level": "admin"})
    );
    assert_eq!(v["expires_at"], serde_json::Value::Null);
    assert_eq!(v["replaced_by"], serde_json::Value::Null);

    let decision = super::render::decision_json(&pb::AuthorizeResponse {
        allowed: false,
        reason: pb::DenyReason::NoGrant as i32,
        ..Default::default()
    });
    assert_eq!(decision["reason"], "NO_GRANT");
    assert_eq!(decision["token_id"], serde_json::Value::Null);
    assert_eq!(decision["remaining"], serde_json::Value::Null);
    let limited = super::render::decision_json(&pb::AuthorizeResponse {
        allowed: false,
        reason: pb::DenyReason::RateLimited as i32,
        remaining: Some(0),
        retry_after: Some(prost_types::Duration {
            seconds: 5,
            nanos: 1,
        }),
        ..Default::default()
    });
    assert_eq!(limited["reason"], "RATE_LIMITED");
    assert_eq!(limited["remaining"], 0);
    assert_eq!(limited["retry_after_seconds"], 6, "rounded up");
}

#[test]
fn rate_limits_parse() {
    use super::parse::RateLimitArg;
    let r: RateLimitArg = "send=1000/1d".parse().unwrap();
    assert_eq!(
        (r.name.as_str(), r.limit, r.period.as_secs()),
        ("send", 1000, 86_400)
    );
    let w = r.to_wire();
    assert_eq!(w.period.map(|p| p.seconds), Some(86_400));
    for bad in [
        "send",
        "send=1000",
        "=5/1s",
        "send=x/1s",
        "send=5/soon",
        "send=-1/1s",
    ] {
        let e = bad.parse::<RateLimitArg>().unwrap_err();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}
