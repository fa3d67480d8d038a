//! The admin API, called with real curl.

use proxy_test_support::Curl;

/// The admin API at an address, called with a token (or none).
#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    addr: String,
    token: Option<String>,
}

impl AdminApi {
    pub(crate) fn new(addr: &str, token: Option<&str>) -> Self {
        Self {
            addr: addr.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    /// The curl command for `METHOD PATH` with `body` (JSON), started through `prefix` (empty:
    /// directly).
    pub(crate) fn curl_inside(
        &self,
        prefix: &[String],
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Curl {
        let mut curl = Curl::inside(prefix).args(["-X", method]);
        if let Some(t) = &self.token {
            curl = curl.bearer(t);
        }
        if let Some(b) = body {
            curl = curl.json(b);
        }
        curl.arg(format!("http://{}{path}", self.addr))
    }

    /// `METHOD PATH` with `body` (JSON): the status and the body.
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let out = self.curl_inside(&[], method, path, body).run();
        (out.status, out.body)
    }

    /// `GET PATH`.
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        self.call("GET", path, None)
    }

    /// `POST PATH` with a JSON body.
    pub(crate) fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.call("POST", path, Some(body))
    }
}
