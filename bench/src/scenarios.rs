//! The scenarios, one file each, and the one table from a scenario's number
//! (what `--scenarios` takes, what the report headings start with, what
//! BENCHMARKS.md cites) to its name (its file under `scenarios/` and the
//! `Bench` method that runs it). `--scenarios` takes either.
//!
//! Each scenario file adds one `impl Bench` method (plus its own helpers);
//! they use the shared pieces in `bench`, `load`, `procs` and `report`.

use std::future::Future;
use std::pin::Pin;

use crate::bench::Bench;

mod admin_under_load;
mod batch;
mod cold_start;
mod envoy;
mod ext_authz_check;
mod fixed_rate;
mod follower_restart;
mod followers;
mod introspect;
mod malformed_tokens;
mod postgres;
mod rate_limits;
mod revocations;
mod sequential;
mod tls;
mod under_attack;
mod versus_authorize;
mod warm_closed_loop;
mod wrong_secret_flood;

/// A scenario's run: a `Bench` method, boxed so the table can hold it.
type RunFn = for<'a> fn(&'a mut Bench) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One row of the table.
pub(crate) struct Scenario {
    /// What `--scenarios` takes and the report headings start with.
    pub(crate) number: u32,
    /// Its file under `scenarios/` (and method of `Bench`); `--scenarios`
    /// takes it too.
    pub(crate) name: &'static str,
    /// How it runs: `None` for scenario 8, a criterion benchmark of the
    /// library (`cargo bench --bench decision`), not part of this harness.
    run: Option<RunFn>,
}

/// Every scenario, by number.
pub(crate) const SCENARIOS: [Scenario; 18] = [
    Scenario {
        number: 1,
        name: "warm_closed_loop",
        run: Some(|b| Box::pin(b.warm_closed_loop())),
    },
    Scenario {
        number: 2,
        name: "sequential",
        run: Some(|b| Box::pin(b.sequential())),
    },
    Scenario {
        number: 3,
        name: "fixed_rate",
        run: Some(|b| Box::pin(b.fixed_rate())),
    },
    Scenario {
        number: 4,
        name: "malformed_tokens",
        run: Some(|b| Box::pin(b.malformed_tokens())),
    },
    Scenario {
        number: 5,
        name: "wrong_secret_flood",
        run: Some(|b| Box::pin(b.wrong_secret_flood())),
    },
    Scenario {
        number: 6,
        name: "cold_start",
        run: Some(|b| Box::pin(b.cold_start())),
    },
    Scenario {
        number: 7,
        name: "batch",
        run: Some(|b| Box::pin(b.batch())),
    },
    Scenario {
        number: 8,
        name: "decision",
        run: None,
    },
    Scenario {
        number: 9,
        name: "ext_authz_check",
        run: Some(|b| Box::pin(b.ext_authz_check())),
    },
    Scenario {
        number: 10,
        name: "envoy",
        run: Some(|b| Box::pin(b.envoy())),
    },
    Scenario {
        number: 11,
        name: "followers",
        run: Some(|b| Box::pin(b.followers())),
    },
    Scenario {
        number: 12,
        name: "postgres",
        run: Some(|b| Box::pin(b.postgres())),
    },
    Scenario {
        number: 13,
        name: "under_attack",
        run: Some(|b| Box::pin(b.under_attack())),
    },
    Scenario {
        number: 14,
        name: "tls",
        run: Some(|b| Box::pin(b.tls())),
    },
    Scenario {
        number: 15,
        name: "introspect",
        run: Some(|b| Box::pin(b.introspect())),
    },
    Scenario {
        number: 16,
        name: "rate_limits",
        run: Some(|b| Box::pin(b.rate_limits())),
    },
    Scenario {
        number: 17,
        name: "follower_restart",
        run: Some(|b| Box::pin(b.follower_restart())),
    },
    Scenario {
        number: 18,
        name: "admin_under_load",
        run: Some(|b| Box::pin(b.admin_under_load())),
    },
];

/// `--scenarios`' parser: a number (any, as before: an unknown one is
/// reported when its turn comes) or a name from the table.
pub(crate) fn parse(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    SCENARIOS
        .iter()
        .find(|sc| sc.name == s)
        .map(|sc| sc.number)
        .ok_or_else(|| {
            let names: Vec<&str> = SCENARIOS.iter().map(|sc| sc.name).collect();
            format!("no scenario {s:?} (numbers 1-17, or {})", names.join(", "))
        })
}

/// Runs scenario `number` on `bench`.
pub(crate) async fn run(bench: &mut Bench, number: u32) {
    match SCENARIOS.iter().find(|sc| sc.number == number) {
        Some(Scenario { run: Some(run), .. }) => run(bench).await,
        Some(Scenario { run: None, .. }) => {
            println!("\nscenario 8 is a criterion benchmark: cargo bench --bench decision")
        }
        None => eprintln!("no scenario {number}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, SCENARIOS};

    /// Numbers 1-18 in order, names unique, each name parses to its number.
    #[test]
    fn the_table_is_complete_and_names_parse() {
        for (i, sc) in SCENARIOS.iter().enumerate() {
            assert_eq!(sc.number as usize, i + 1);
            assert_eq!(parse(sc.name), Ok(sc.number));
            assert_eq!(parse(&sc.number.to_string()), Ok(sc.number));
        }
        assert_eq!(parse("99"), Ok(99));
        assert!(parse("nope").is_err());
    }
}
