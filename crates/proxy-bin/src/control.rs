//! core's [`Control`] for the assembled [`Service`]: what the admin API reaches the proxy
//! through. Changes go through the service's validated, atomic path (the same as a file
//! reload) and are in force when the call returns.

use std::sync::Arc;

use proxy_core::{
    Answered, Approval, BlockedView, CheckQuery, Control, ControlError, DomainChange, Mode,
    PatternLists, PendingView,
};

use crate::approvals::AnswerError;

use crate::check::{CheckRequest, explain};
use crate::service::{ReloadError, Service};

/// The admin API's view of a running [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceControl {
    service: Arc<Service>,
}

impl ServiceControl {
    /// Control over `service`.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// Runs a config change off the async workers (it reads files), logging its outcome.
    async fn change(
        &self,
        what: String,
        f: impl FnOnce(&Service) -> Result<Vec<String>, ReloadError> + Send + 'static,
    ) -> Result<(), ControlError> {
        let service = self.service.clone();
        let result = tokio::task::spawn_blocking(move || f(&service))
            .await
            .map_err(|e| ControlError::Invalid(format!("the change did not complete: {e}")))?;
        match result {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!("admin API: {what}");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    "admin API: {what} refused, the previous config stays in force: {e}"
                );
                Err(control_error(e))
            }
        }
    }
}

/// How a refused change is reported: managed constraints and restart keys are 409, a bad
/// pattern is 400, bad files on a reload are 409, a reload under `run` (files read once) is 409.
fn control_error(e: ReloadError) -> ControlError {
    match e {
        ReloadError::Config(e) => {
            let constraint = e
                .diagnostics
                .iter()
                .any(|d| d.kind == proxy_config::DiagnosticKind::Constraint);
            let from_runtime = e.diagnostics.iter().all(|d| d.origin == "runtime");
            if constraint {
                ControlError::Constraint(e.to_string())
            } else if from_runtime {
                ControlError::Invalid(e.to_string())
            } else {
                ControlError::InvalidConfig(e.to_string())
            }
        }
        ReloadError::Invalid(m) => ControlError::Invalid(m),
        ReloadError::NeedsRestart(_) => ControlError::NeedsRestart(e.to_string()),
        ReloadError::ReadOnce => ControlError::ReadOnce(e.to_string()),
    }
}

impl Control for ServiceControl {
    fn config_json(&self) -> String {
        crate::show::config_json(&self.service.config()).to_string()
    }

    fn credentials_json(&self) -> String {
        crate::broker::grants_json(self.service.vault().map(|v| &**v)).to_string()
    }

    fn patterns(&self) -> PatternLists {
        let snap = self.service.snapshot();
        PatternLists {
            allowed: snap.policy.allowed_patterns().map(str::to_owned).collect(),
            denied: snap.policy.denied_patterns().map(str::to_owned).collect(),
        }
    }

    fn blocked(&self, drain: bool) -> BlockedView {
        let b = self.service.audit().blocked();
        if drain { b.drain() } else { b.snapshot() }
    }

    async fn set_mode(&self, mode: Mode) -> Result<(), ControlError> {
        self.change(format!("mode set to {}", mode.as_str()), move |s| {
            s.set_mode(mode)
        })
        .await
    }

    async fn update_domains(&self, change: DomainChange) -> Result<(), ControlError> {
        let what = format!(
            "domains updated (allow: {}; deny: {})",
            change.allow.join(", "),
            change.deny.join(", ")
        );
        self.change(what, move |s| s.update_domains(&change)).await
    }

    async fn reload(&self) -> Result<(), ControlError> {
        self.change("config reloaded".into(), Service::reload).await
    }

    async fn check(&self, query: CheckQuery) -> Result<String, ControlError> {
        let req = CheckRequest::parse(&query.target, query.protocol, query.method.as_deref())
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let report = explain(self.service.gate(), &req, proxy_gate::Lookup::Resolve).await;
        Ok(report.to_json().to_string())
    }

    fn metrics_text(&self) -> String {
        self.service.metrics().render()
    }

    fn pending(&self) -> Result<PendingView, ControlError> {
        match self.service.approvals() {
            Some(a) => Ok(a.view()),
            None => Err(not_asking()),
        }
    }

    async fn answer_pending(&self, id: u64, choice: Approval) -> Result<Answered, ControlError> {
        let approvals = self.service.approvals().cloned().ok_or_else(not_asking)?;
        // A `save` writes a file: off the async workers.
        let answered = tokio::task::spawn_blocking(move || approvals.answer(id, choice, None))
            .await
            .map_err(|e| ControlError::Invalid(format!("the answer did not complete: {e}")))?;
        match answered {
            Ok(a) => {
                tracing::info!(
                    "admin API: pending decision {id} ({}:{}) answered {choice}",
                    a.host,
                    a.port
                );
                Ok(a)
            }
            Err(e @ AnswerError::NotFound(_)) => Err(ControlError::NotFound(e.to_string())),
            Err(e) => {
                tracing::warn!("admin API: pending decision {id}: {e}");
                Err(ControlError::SaveFailed(format!(
                    "{e}; the decision is still pending"
                )))
            }
        }
    }
}

/// A service whose gate does not hold requests for answers.
fn not_asking() -> ControlError {
    ControlError::NotAvailable(
        "no request is held for approval: pending decisions exist only under `netproxy run --ask`"
            .to_owned(),
    )
}
