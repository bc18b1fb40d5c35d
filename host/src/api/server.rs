//! The API server, on its own small runtime so that a busy pipeline never starves it.

use std::net::SocketAddr;

use anyhow::Context;

use super::ApiState;

/// A running API server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(listen: SocketAddr, state: ApiState) -> anyhow::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // Uploads compile components on blocking threads; two at a time is plenty.
            .max_blocking_threads(2)
            .thread_name("http")
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let app = super::router(state);
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("http".into()).spawn(move || {
            runtime.block_on(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = signal.await;
                });
                if let Err(err) = serve.await {
                    tracing::error!("HTTP server: {err}");
                }
            });
        })?;
        tracing::info!(%addr, "HTTP API listening");
        Ok(Server { addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
