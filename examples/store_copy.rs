//! Times a store copy, for BENCHMARKS.md ("Store moves"): seed a sled data
//! dir, then copy it (each in its own process, so the copy's peak memory
//! is its own), printing the time and this process's peak RSS (VmHWM).
//!
//! ```sh
//! cargo run --example store_copy -- seed /tmp/kw-src 100000
//! cargo run --example store_copy -- copy /tmp/kw-src postgres://keyward@127.0.0.1:55432/kw
//! cargo run --example store_copy -- backup /tmp/kw-src /tmp/kw.backup
//! cargo run --example store_copy -- restore /tmp/kw.backup postgres://...
//! ```
//!
//! The same library call `keyward store copy` makes (`keyward::storemove::copy`).

use std::path::PathBuf;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = std::time::Instant::now();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["seed", dir, n] => {
            keyward::seed::seed(&PathBuf::from(dir), n.parse()?, true).await?;
        }
        ["copy", from, to] => {
            let report = keyward::storemove::copy(
                &keyward::storemove::CopyOptions {
                    from: keyward::storemove::Location::parse(from),
                    to: keyward::storemove::Location::parse(to),
                    digest_key_file: None,
                    force: false,
                    pg_ca_file: None,
                },
                &mut std::io::stderr(),
            )
            .await?;
            println!("{}", report.tally.describe());
            println!("checksum {}", report.tally.checksum());
            println!("{}", report.key_advice);
        }
        ["backup", from, file] => {
            let report = keyward::storemove::backup(
                &keyward::storemove::BackupOptions {
                    from: keyward::storemove::BackupSource::Store(
                        keyward::storemove::Location::parse(from),
                    ),
                    to: PathBuf::from(file),
                    digest_key_file: None,
                    pg_ca_file: None,
                },
                &mut std::io::stderr(),
            )
            .await?;
            println!("{}", report.tally.describe());
        }
        ["restore", file, to] => {
            let report = keyward::storemove::restore(
                &keyward::storemove::RestoreOptions {
                    from: PathBuf::from(file),
                    to: keyward::storemove::Location::parse(to),
                    digest_key_file: None,
                    force: false,
                    pg_ca_file: None,
                },
                &mut std::io::stderr(),
            )
            .await?;
            println!("{}", report.tally.describe());
        }
        _ => {
            return Err(
                "usage: store_copy seed DIR N | copy FROM TO | backup FROM FILE | restore FILE TO"
                    .into(),
            )
        }
    }
    println!(
        "{}: {:.2} s, peak RSS {} MiB",
        args[0],
        started.elapsed().as_secs_f64(),
        peak_rss_kib() / 1024
    );
    Ok(())
}
