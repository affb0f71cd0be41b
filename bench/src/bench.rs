//! What every scenario shares: [`Bench`] (flags, layout, the running
//! baseline and keyward, the seeded tokens, the report), the requests they
//! send, and the baseline-vs-keyward comparison of scenarios 1-4.

use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use keyward::pb::v1::{self as pb, AuthorizeRequest};

use crate::load::{load, Mode, Run, Workload};
use crate::procs::{Layout, Proc};
use crate::report::{verdict, Report};
use crate::Cli;

pub(crate) struct Bench {
    pub(crate) cli: Cli,
    pub(crate) layout: Layout,
    pub(crate) keyward_bin: PathBuf,
    pub(crate) baseline: Proc,
    pub(crate) keyward: Proc,
    pub(crate) valid: Vec<AuthorizeRequest>,
    pub(crate) project: String,
    /// The seeded account (scenario 13 makes a VIEWER token in it).
    pub(crate) account_id: u64,
    pub(crate) report: Report,
    /// Baseline peak req/s from scenario 1, for the fixed-rate scenario.
    pub(crate) peak: Option<f64>,
}

pub(crate) fn request(token: &str, project: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        cost: Default::default(),
        token: token.into(),
        resource: Some(pb::ResourceRef {
            r#type: pb::ResourceType::Project as i32,
            id: project.into(),
        }),
        level: pb::AccessLevel::Admin as i32,
        scope: String::new(),
    }
}

/// The ext_authz Check Envoy would send for `request(token, project)`.
pub(crate) fn check_request(token: &str, project: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: format!("/projects/{project}"),
                    host: "mail.example".into(),
                    headers: [("authorization".to_string(), format!("Bearer {token}"))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

impl Bench {
    /// Alternates baseline and keyward `rounds` times with the same load.
    pub(crate) async fn compare(&mut self, mode: Mode, w: &Workload, label: &str) -> (Run, Run) {
        let (mut base, mut kw) = (Run::new(), Run::new());
        for r in 0..self.cli.rounds {
            let b = load(
                self.baseline.addr,
                mode,
                w,
                self.cli.warmup,
                self.cli.duration,
                &format!("{label} baseline #{}", r + 1),
            )
            .await;
            base.add(&b);
            let k = load(
                self.keyward.addr,
                mode,
                w,
                self.cli.warmup,
                self.cli.duration,
                &format!("{label} keyward #{}", r + 1),
            )
            .await;
            kw.add(&k);
        }
        (base, kw)
    }

    pub(crate) fn workload(&self, batch: usize) -> Workload {
        Workload {
            requests: Arc::new(self.valid.clone()),
            batch,
            checks: None,
            introspect: false,
            raw: None,
        }
    }

    pub(crate) async fn closed_pair(
        &mut self,
        title: &str,
        w: Workload,
        mode: Mode,
        targets: (f64, f64),
    ) -> (Run, Run) {
        let (base, kw) = self.compare(mode, &w, title).await;
        self.report.header(title);
        self.report.row("baseline (no-op)", &base);
        self.report.row("keyward", &kw);
        let tput = kw.rps() / base.rps();
        let p99 = kw.us(0.99) / base.us(0.99);
        self.report.note(format!(
            "throughput ratio {tput:.3} (target ≥ {:.2}: {}), p99 ratio {p99:.3} (target ≤ {:.2}: {})",
            targets.0,
            verdict(tput >= targets.0),
            targets.1,
            verdict(p99 <= targets.1)
        ));
        self.report.print_last(9);
        (base, kw)
    }
}
