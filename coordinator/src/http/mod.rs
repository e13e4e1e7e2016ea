//! `fog-coordinator serve --http ADDR`: the read-only JSON API (`/api/v1/...`, see
//! docs/api.md), Prometheus metrics (`/metrics`, docs/metrics.md) and the live web
//! console (`/`, docs/console.md).
//!
//! Every handler reads the latest [`View`](crate::view::View), which the main loop
//! replaces at most a second apart: a request never waits for the main loop, and a
//! scraper or a busy page costs the dispatcher nothing but the snapshot it already
//! makes.

mod api;
pub mod auth;
pub mod console;
mod error;
pub mod metrics;
mod query;
mod submit;
#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod host_tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_names() {
        for ok in [
            "127.0.0.1:9464",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9464",
            "[::1]",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:9464",
            "10.0.0.1",
            "",
            "[::2]:1",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use api::node_list;
pub use error::ApiError;

use crate::service::Snapshot;

/// Where the API listens unless told otherwise: loopback only, Prometheus' registry
/// port range (9464 is the default OpenTelemetry Prometheus exporter port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Largest request body taken: bounds what an unauthenticated client can make the
/// coordinator read, and what a signed submission carries (as an MQTT list: the
/// body's payloads are a few KiB each at most in practice; a bigger input belongs
/// in a file the task reads).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A view older than this means the main loop is stuck: health says so.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// The OpenAPI document served at `/api/v1/openapi.json` (tests check the routes
/// against it).
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler reads.
#[derive(Clone)]
pub struct Shared {
    view: watch::Receiver<Snapshot>,
    /// Live event streams left to open (see [`console::MAX_STREAMS`]).
    streams: Arc<tokio::sync::Semaphore>,
    /// Signed requests and the main loop they command; `None`: read-only.
    control: Option<Arc<Control>>,
    /// The listener is on loopback: requests must name a loopback host.
    loopback_only: bool,
}

/// What the API needs to change something: who may sign, and the main loop's ear.
pub struct Control {
    verifier: auth::Verifier,
    commands: tokio::sync::mpsc::Sender<crate::control::Command>,
}

impl Control {
    pub fn new(
        clients: crate::clients::Clients,
        max_skew: Duration,
        commands: tokio::sync::mpsc::Sender<crate::control::Command>,
    ) -> Self {
        Control {
            verifier: auth::Verifier::new(clients, max_skew),
            commands,
        }
    }
}

impl Shared {
    pub fn new(view: watch::Receiver<Snapshot>) -> Self {
        Shared {
            view,
            streams: Arc::new(tokio::sync::Semaphore::new(console::MAX_STREAMS)),
            control: None,
            loopback_only: false,
        }
    }

    /// Answer only requests that name a loopback host (for a loopback listener).
    pub fn loopback_only(mut self, on: bool) -> Self {
        self.loopback_only = on;
        self
    }

    pub fn with_control(mut self, control: Control) -> Self {
        self.control = Some(Arc::new(control));
        self
    }

    /// The latest snapshot (an `Arc` clone: the lock is held for no longer).
    fn view(&self) -> Snapshot {
        self.view.borrow().clone()
    }
}

/// Every path served (the OpenAPI document is tested against this list).
pub const ROUTES: [&str; 13] = [
    "/api/v1/health",
    "/api/v1/nodes",
    "/api/v1/nodes/:node",
    "/api/v1/nodes/:node/history",
    "/api/v1/fleet/history",
    "/api/v1/tasks",
    "/api/v1/tasks/:id",
    "/api/v1/scaling",
    "/api/v1/profiles",
    "/api/v1/events",
    "/api/v1/openapi.json",
    "/metrics",
    "/",
];

/// Every path served to signed POSTs (docs/api.md, "Changes").
pub const POST_ROUTES: [&str; 4] = [
    "/api/v1/nodes/:node/drain",
    "/api/v1/nodes/:node/undrain",
    "/api/v1/nodes/:node/forget",
    "/api/v1/tasks",
];

/// The routes, on `shared`.
pub fn router(shared: Shared) -> Router {
    let [health, nodes, node, node_history, fleet_history, tasks, task, scaling, profiles, events, openapi, prometheus, page] =
        ROUTES;
    Router::new()
        .route(health, get(api::health))
        .route(nodes, get(api::nodes))
        .route(node, get(api::node))
        .route(node_history, get(console::node_history))
        .route(fleet_history, get(console::fleet_history))
        .route(tasks, get(api::tasks).post(submit::submit))
        .route(task, get(api::task))
        .route(scaling, get(api::scaling))
        .route(profiles, get(api::profiles))
        .route(events, get(console::events))
        .route(openapi, get(api::openapi))
        .route(prometheus, get(metrics::handler))
        .route(page, get(console::page))
        .route(POST_ROUTES[0], axum::routing::post(api::drain))
        .route(POST_ROUTES[1], axum::routing::post(api::undrain))
        .route(POST_ROUTES[2], axum::routing::post(api::forget))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            shared.loopback_only,
            host_guard,
        ))
        .with_state(Arc::new(shared))
}

/// Errors made by axum itself (a body over the limit) in the API's JSON shape.
async fn json_errors(res: axum::response::Response) -> axum::response::Response {
    if res.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return axum::response::IntoResponse::into_response(ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            reason: format!("the body is over {MAX_BODY_BYTES} bytes"),
        });
    }
    res
}

/// On a loopback listener, a request must name a loopback host: a web page the
/// operator opens cannot rebind its own name to 127.0.0.1 and read the fleet
/// (DNS rebinding).
async fn host_guard(
    axum::extract::State(loopback_only): axum::extract::State<bool>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if loopback_only {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return axum::response::IntoResponse::into_response(ApiError {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "forbidden_host",
                reason: format!(
                    "this API listens on loopback and answers only requests to localhost, 127.0.0.1 or [::1], not {host:?}"
                ),
            });
        }
    }
    next.run(req).await
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the HTTP API cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound listener, so the caller learns the port (port 0 in tests) before serving.
pub struct HttpServer {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> Result<HttpServer, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(HttpServer { listener, addr })
    }

    /// Serve, read-only, until `shutdown`. Accept errors (out of file descriptors,
    /// say) are retried by axum; this returns only at shutdown.
    pub async fn serve(self, view: watch::Receiver<Snapshot>, shutdown: CancellationToken) {
        self.serve_shared(Shared::new(view), shutdown).await;
    }

    /// [`HttpServer::serve`], taking signed changes (drain) through `control`.
    pub async fn serve_with_control(
        self,
        view: watch::Receiver<Snapshot>,
        control: Control,
        shutdown: CancellationToken,
    ) {
        self.serve_shared(Shared::new(view).with_control(control), shutdown)
            .await;
    }

    async fn serve_shared(self, shared: Shared, shutdown: CancellationToken) {
        tracing::info!(addr = %self.addr, "HTTP API and /metrics serving");
        let app = router(shared.loopback_only(self.addr.ip().is_loopback()));
        let done = shutdown.clone();
        if let Err(error) = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { done.cancelled().await })
            .await
        {
            tracing::error!(%error, "HTTP API stopped");
        }
    }
}
