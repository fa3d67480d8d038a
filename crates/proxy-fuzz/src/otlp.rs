//! `otlp`: the OTLP record writer against prost (differential). Arbitrary audit events (any
//! text in every string field, any timestamp, before 1970 too, every optional attribute) are
//! encoded by the writer the OTLP sink uses ([`proxy_audit::encode_logs`]) and by prost from
//! opentelemetry-proto's generated types ([`proxy_audit::encode_logs_reference`]): the bytes
//! must be identical.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use proxy_core::{
    AuditEvent, CredentialField, Decision, Failure, Mode, Protocol, Reason, RequestMeta, Rule,
    Scope, Source, Target, UpstreamFailure, Verdict,
};

use crate::input::Input;

const FAILURES: &[UpstreamFailure] = &[
    UpstreamFailure::DnsFailed,
    UpstreamFailure::ConnectFailed,
    UpstreamFailure::ConnectRefused,
    UpstreamFailure::UpstreamTlsFailed,
    UpstreamFailure::UpstreamTimeout,
    UpstreamFailure::UpstreamError,
];

fn event(input: &mut Input<'_>) -> AuditEvent {
    let target = Target::parse_authority("a.example", 443).unwrap_or_else(|e| panic!("{e}"));
    let meta = RequestMeta::new(input.pick(&Protocol::ALL), target);
    let mode = if input.bool() {
        Mode::Limited
    } else {
        Mode::Full
    };
    let mut ev = AuditEvent::new(&meta, &Decision::allow(), mode);
    ev.scope = if input.bool() {
        Scope::Domain
    } else {
        Scope::NonDomain
    };
    ev.decision = input.pick(&[Verdict::Allow, Verdict::Deny, Verdict::Ask]);
    ev.source = input.pick(&[
        Source::BaselinePolicy,
        Source::ModeGuard,
        Source::ProxyState,
        Source::Decider,
    ]);
    ev.reason = input.pick(&Reason::ALL).as_str();
    ev.policy_override = input.bool();
    ev.server_address = input.string(300);
    ev.server_port = input.u16();
    ev.method = input.bool().then(|| input.string(20));
    let secs = u64::from(input.u16()) << 16 | u64::from(input.u16());
    let nanos = u32::from(input.u16()) * 15_259;
    let offset = Duration::new(secs, nanos);
    ev.timestamp = if input.bool() {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    };
    ev.client = match input.below(3) {
        0 => None,
        _ => Some(SocketAddr::new(crate::policy::address(input), input.u16())),
    };
    if input.bool() {
        let pattern = input.string(60);
        let origin = input.bool().then(|| input.string(40).into());
        ev.rule = Some(Rule::new(pattern, origin));
    }
    ev.revoked = input.bool();
    if input.bool() {
        ev.credential = Some(CredentialField {
            grant: input.string(30),
            injected: input.bool(),
        });
    }
    ev.learn = input.bool();
    if input.bool() {
        ev.failure = Some(Failure::new(input.pick(FAILURES), input.string(40)));
    }
    ev
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let version = input.string(16);
    let observed = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(input.u16()) << 14);
    let events: Vec<AuditEvent> = (0..input.below(6)).map(|_| event(&mut input)).collect();
    let ours = proxy_audit::encode_logs(&version, &events, observed);
    let prost = proxy_audit::encode_logs_reference(&version, &events, observed);
    assert!(
        ours[..] == prost[..],
        "the writer and prost disagree on {} events ({} against {} bytes)",
        events.len(),
        ours.len(),
        prost.len()
    );
}
