//! An [`Interceptor`] for the front-ends' tests: it proves that it got the client's stream
//! after the front-end's answer and the upstream connection, and that it can ask the gate to
//! judge a request inside the tunnel.

use std::sync::{Arc, Mutex, PoisonError};

use proxy_core::{
    Decision, Gate, Intercepted, Interceptor, Protocol, RequestHead, RequestMeta, Route, Target,
};
use proxy_io::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Takes every tunnel. It reads the client's first line, `METHOD AUTHORITY`, and asks the gate
/// to judge it as a request inside the tunnel ([`Gate::admit_inner`]: protocol `https`, the
/// authority as its target, the tunnel's port when it names none). Refused, it answers the
/// client `refused REASON`; allowed, it sends the line to the upstream, reads as many bytes
/// back, and answers the client `GREETING` and what came back (the line itself, from an echo
/// server). Then it closes both ends. It records each tunnel it was given.
#[derive(Debug)]
pub struct GreetingInterceptor<G> {
    gate: Arc<G>,
    greeting: String,
    tunnels: Mutex<Vec<(RequestMeta, Route)>>,
}

impl<G> GreetingInterceptor<G> {
    /// An interceptor judging inner requests with `gate` and answering with `greeting`.
    pub fn new(gate: Arc<G>, greeting: impl Into<String>) -> Self {
        Self {
            gate,
            greeting: greeting.into(),
            tunnels: Mutex::default(),
        }
    }

    /// Each tunnel handed over (its request and route), in order.
    pub fn tunnels(&self) -> Vec<(RequestMeta, Route)> {
        self.tunnels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<G: Gate, C: Stream, U: Stream> Interceptor<C, U> for GreetingInterceptor<G> {
    fn accepts(&self, _meta: &RequestMeta, _route: &Route) -> Result<(), Decision> {
        Ok(())
    }

    async fn intercept(&self, tunnel: Intercepted<C, U>) -> (u64, u64) {
        let Intercepted {
            client,
            mut upstream,
            meta,
            route,
            lease: _,
        } = tunnel;
        self.tunnels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((meta.clone(), route.clone()));
        let mut client = BufReader::new(client);
        let mut line = String::new();
        if client.read_line(&mut line).await.unwrap_or(0) == 0 {
            return (0, 0);
        }
        let up = line.len() as u64;
        let (method, authority) = line.trim_end().split_once(' ').unwrap_or(("", ""));
        let answer = match Target::parse_authority(authority, meta.target.port()) {
            Err(_) => "refused invalid_host\n".to_owned(),
            Ok(target) => {
                let mut inner = RequestMeta::new(Protocol::Https, target).with_method(method);
                inner.client = meta.client;
                let head = RequestHead {
                    method,
                    path: "/",
                    query: None,
                    headers: &[],
                };
                let decision = self
                    .gate
                    .admit_inner(&meta, &route, &inner, &head)
                    .await
                    .decision;
                if decision.is_allowed() {
                    let mut echoed = vec![0u8; line.len()];
                    if upstream.write_all(line.as_bytes()).await.is_err()
                        || upstream.read_exact(&mut echoed).await.is_err()
                    {
                        return (up, 0);
                    }
                    format!("{} {}", self.greeting, String::from_utf8_lossy(&echoed))
                } else {
                    format!("refused {}\n", decision.reason_str())
                }
            }
        };
        let mut client = client.into_inner();
        let _ = client.write_all(answer.as_bytes()).await;
        let _ = client.shutdown().await;
        (up, answer.len() as u64)
    }
}
