//! The PostgreSQL test harness itself (tests/common/pg.rs): a real server
//! starts, takes connections, keeps committed data across fast and
//! immediate restarts on the same port, stops, and goes away on drop.
//! Needs the PostgreSQL server binaries (scripts/test.sh installs them).

#[path = "common/pg.rs"]
mod pg;

use pg::PgCluster;

#[test]
fn start_connect_create_restart_stop() {
    let mut pg = PgCluster::start();
    let port = pg.port();
    assert_ne!(port, 0);
    assert_eq!(
        pg.url("kw"),
        format!("postgres://keyward@127.0.0.1:{port}/kw")
    );
    assert!(pg::tcp_accepts(port), "nothing listens on 127.0.0.1:{port}");

    // psql over TCP as the superuser "keyward", trust auth, no TLS.
    assert_eq!(pg.psql("postgres", "select 1"), "1");
    assert_eq!(pg.psql("postgres", "select current_user"), "keyward");
    assert_eq!(pg.psql("postgres", "show fsync"), "on");
    assert_eq!(pg.psql("postgres", "show synchronous_commit"), "on");
    assert_eq!(pg.psql("postgres", "show max_connections"), "200");
    assert_eq!(pg.psql("postgres", "show shared_buffers"), "32MB");
    assert_eq!(pg.psql("postgres", "show ssl"), "off");
    assert_eq!(pg.psql("postgres", "show server_encoding"), "UTF8");

    // create_database is idempotent.
    pg.create_database("kw_test");
    pg.create_database("kw_test");
    pg.create_database("Odd \"name\" o'k");
    assert_eq!(
        pg.psql(
            "postgres",
            "select count(*) from pg_database where datname like 'kw_test' or datname like 'Odd%'"
        ),
        "2"
    );
    pg.psql(
        "kw_test",
        "create table t (v int primary key); insert into t values (1)",
    );

    // Fast restart: same port, data kept.
    pg.restart_fast();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("kw_test", "select v from t"), "1");

    // Immediate stop (a crash: no checkpoint) and start: WAL recovery keeps
    // the committed row.
    pg.psql("kw_test", "insert into t values (2)");
    pg.stop_immediate();
    assert!(!pg.is_running());
    assert!(
        !pg::tcp_accepts(port),
        "still accepting after stop -m immediate"
    );
    pg.start_again();
    assert_eq!(
        pg.psql(
            "kw_test",
            "select string_agg(v::text, ',' order by v) from t"
        ),
        "1,2"
    );
    pg.restart_immediate();
    assert_eq!(pg.psql("kw_test", "select count(*) from t"), "2");

    // Fast stop: no longer reachable.
    pg.stop_fast();
    assert!(!pg::tcp_accepts(port), "still accepting after stop -m fast");
    assert!(pg::psql_at(&pg.url("kw_test"), "select 1").is_err());
    pg.start_again();
    assert_eq!(pg.psql("kw_test", "select count(*) from t"), "2");

    // Drop stops the server and removes the temp dir.
    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!pg::tcp_accepts(port), "still accepting after drop");
}

#[test]
fn create_database_at_a_base_url() {
    // The shared-server path (KEYWARD_TEST_PG), against a cluster of our own.
    let pg = PgCluster::start();
    let base = pg.base_url();
    pg::create_database_at(&base, "shared_one");
    pg::create_database_at(&format!("{base}/"), "shared_one");
    assert_eq!(
        pg::psql_at(
            &pg::url_at(&base, "shared_one"),
            "select current_database()"
        )
        .unwrap(),
        "shared_one"
    );
    assert_eq!(
        pg::url_at("postgres://u@h:5432/?sslmode=disable", "db"),
        "postgres://u@h:5432/db?sslmode=disable"
    );
}

#[test]
fn two_clusters_side_by_side() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    assert_ne!(a.port(), b.port());
    a.create_database("only_in_a");
    assert_eq!(
        b.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'only_in_a'"
        ),
        "0"
    );
}

#[test]
fn bin_dir_has_the_server_binaries() {
    let bin = pg::bin_dir();
    for tool in ["initdb", "pg_ctl", "postgres", "pg_isready", "psql"] {
        assert!(bin.join(tool).is_file(), "{} has no {tool}", bin.display());
    }
}
