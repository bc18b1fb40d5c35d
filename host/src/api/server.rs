//! The API server, on its own small runtime so that a busy pipeline never starves it.
//!
//! It serves HTTP/1.1 with limits that a client cannot talk its way around:
//! * at most [`MAX_CONNECTIONS`] open connections; one more is closed at once;
//! * a request's headers must arrive within [`HEADER_TIMEOUT`] (also while a kept-alive
//!   connection waits for its next request);
//! * a whole request, its body included, gets [`REQUEST_TIMEOUT`] (408 past it);
//! * no connection lives longer than [`CONNECTION_LIFETIME`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use super::ApiState;

/// Open connections the server holds at most.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest wait for a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request may take, body and answer included (a 64 MiB upload at 1 MiB/s fits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest any one connection stays open.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

/// A running API server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(listen: SocketAddr, state: ApiState) -> anyhow::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // Plugin checks run on blocking threads; the API's own pool admits two at a time.
            .max_blocking_threads(super::CHECK_WORKERS + 2)
            .thread_name("http")
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let app = super::router(state);
        let (shutdown, signal) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || runtime.block_on(serve(listener, app, signal)))?;
        tracing::info!(%addr, "HTTP API listening");
        Ok(Server { addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve(listener: tokio::net::TcpListener, app: Router, mut stop: tokio::sync::watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, typically: wait a little rather than spin.
                tracing::warn!("HTTP accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(max = MAX_CONNECTIONS, "HTTP connection refused: too many open connections");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = &mut connection => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = stop.changed() => {
                    // Let the request in flight finish, briefly.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
