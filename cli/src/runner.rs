//! The in-process stack: the HTTP API and the pollers over one backend.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use pointflow::ingest::IngestService;
use pointflow::worker::Worker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::LocalBackend;
use crate::poller::{run_pollers, PollerSettings, PollerStats};
use crate::server::serve;
use crate::settings::StackSettings;

/// A running local stack.
pub struct Runner {
    /// Where the API listens.
    pub addr: SocketAddr,
    pub stats: Arc<PollerStats>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    pollers: JoinHandle<()>,
}

impl Runner {
    /// Starts the API on `addr` (port 0 picks a free one) and the pollers.
    pub async fn start(
        backend: &LocalBackend,
        settings: &StackSettings,
        addr: SocketAddr,
        pollers: PollerSettings,
    ) -> anyhow::Result<Runner> {
        let service = IngestService::new(
            backend.jobs.clone(),
            backend.ledger.clone(),
            backend.queue.clone(),
            settings.ingest,
        );
        let worker = Worker::new(backend.ledger.clone(), backend.jobs.clone(), settings.worker);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = watch::channel(false);
        let mut server_stop = stop.clone();
        let server = tokio::spawn(serve(listener, service, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        }));
        let stats = Arc::new(PollerStats::default());
        let pollers = tokio::spawn(run_pollers(backend.queue.clone(), worker, pollers, stats.clone(), stop));
        Ok(Runner {
            addr,
            stats,
            shutdown,
            server,
            pollers,
        })
    }

    /// The API's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and polling, and waits for in-flight work.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.pollers.await.context("pollers")?;
        self.server.await.context("server")?.context("server")?;
        Ok(())
    }
}
