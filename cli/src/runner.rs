//! The in-process stack: the HTTP API, the worker's pollers and the CSV
//! import's pollers over one backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pointflow::adapters::sqlite::RunnerLock;
use pointflow::services::api::ApiService;
use pointflow::services::import::Importer;
use pointflow::services::worker::Worker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::LocalBackend;
use crate::exposure::{check_bind, Exposure};
use crate::poller::{run_pollers, PollerSettings, PollerStats};
use crate::server::serve;
use crate::settings::{StackSettings, IMPORT_QUEUE_NAME, QUEUE_NAME};

/// A running local stack.
pub struct Runner {
    /// Where the API listens.
    pub addr: SocketAddr,
    pub stats: Arc<PollerStats>,
    /// What the import pollers did.
    pub import_stats: Arc<PollerStats>,
    /// Whether this runner owns the embedded database's queues.
    pub takeover: Takeover,
    /// Held while the runner lives (dropped with it).
    _owner: Option<RunnerLock>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    pollers: JoinHandle<()>,
    import_pollers: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts the API on the loopback `addr` (port 0 picks a free one) and
    /// the pollers; a non-loopback `addr` is refused.
    pub async fn start(
        backend: &LocalBackend,
        settings: &StackSettings,
        addr: SocketAddr,
        pollers: PollerSettings,
    ) -> anyhow::Result<Runner> {
        Self::start_exposed(backend, settings, addr, pollers, Exposure::LoopbackOnly).await
    }

    /// [`Runner::start`], with the API reachable as `exposure` allows.
    pub async fn start_exposed(
        backend: &LocalBackend,
        settings: &StackSettings,
        addr: SocketAddr,
        pollers: PollerSettings,
        exposure: Exposure,
    ) -> anyhow::Result<Runner> {
        Self::start_serving(backend, settings, addr, pollers, exposure, false).await
    }

    /// [`Runner::start_exposed`], serving also the operator console
    /// (`/console/`) over the same backend when `console` is set.
    pub async fn start_serving(
        backend: &LocalBackend,
        settings: &StackSettings,
        addr: SocketAddr,
        pollers: PollerSettings,
        exposure: Exposure,
        console: bool,
    ) -> anyhow::Result<Runner> {
        check_bind(addr, exposure)?;
        let console = console.then(|| crate::console::routes(crate::console::Console::local(backend, settings)));
        let (takeover, owner) = take_over(backend)?;
        let service = ApiService::new(
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
        let server = tokio::spawn(serve(listener, service, exposure, console, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        }));
        let stats = Arc::new(PollerStats::default());
        let import_stats = Arc::new(PollerStats::default());
        // The template's import event source: one message per invocation.
        let import_pollers = backend.import.as_ref().map(|import| {
            let importer = Importer::new(
                import.objects.clone(),
                backend.jobs.clone(),
                backend.queue.clone(),
                import.queue.clone(),
                settings.import.clone(),
            );
            let import_settings = PollerSettings {
                batch_size: 1,
                batching_window: std::time::Duration::ZERO,
                maximum_concurrency: settings.import_maximum_concurrency,
                wait: pollers.wait,
            };
            tokio::spawn(run_pollers(
                import.queue.clone(),
                Arc::new(importer),
                import_settings,
                import_stats.clone(),
                stop.clone(),
            ))
        });
        let pollers = tokio::spawn(run_pollers(
            backend.queue.clone(),
            Arc::new(worker),
            pollers,
            stats.clone(),
            stop,
        ));
        Ok(Runner {
            addr,
            stats,
            import_stats,
            takeover,
            _owner: owner,
            shutdown,
            server,
            pollers,
            import_pollers,
        })
    }

    /// The API's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and polling, and waits for in-flight work.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(import_pollers) = self.import_pollers {
            import_pollers.await.context("import pollers")?;
        }
        self.pollers.await.context("pollers")?;
        self.server.await.context("server")?.context("server")?;
        Ok(())
    }
}

/// What a starting runner found about the embedded database's queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// In memory or on AWS: no earlier runner's leases to release.
    NotApplicable,
    /// This runner is the database's only runner (it holds `lock`) and made
    /// `released` messages visible that a stopped runner had left in flight.
    Owner { released: u64, lock: PathBuf },
    /// Another live process holds `lock`: its in-flight messages stay its own.
    Shared { lock: PathBuf },
}

impl Takeover {
    /// What to tell the user at start, if anything: what was released, or
    /// what the runner waits on.
    pub fn notice(&self, visibility_timeout: Duration) -> Option<String> {
        match self {
            Takeover::NotApplicable | Takeover::Owner { released: 0, .. } => None,
            Takeover::Owner { released, .. } => Some(format!(
                "resuming: {released} message(s) a stopped run left in flight are delivered again now"
            )),
            Takeover::Shared { lock } => Some(format!(
                "another pointflow process runs on this database (it holds {}): messages it has in flight \
                 stay with it, or come back {} s after it received them if it dies",
                lock.display(),
                visibility_timeout.as_secs()
            )),
        }
    }
}

/// Takes the embedded database's runner lock and, holding it, releases the
/// leases of runners that are gone (`kill -9`, a crash): without this they
/// sit out the whole visibility timeout. The dead-letter queues are left
/// alone: `pointflow dlq` commands lease from them without the lock.
fn take_over(backend: &LocalBackend) -> anyhow::Result<(Takeover, Option<RunnerLock>)> {
    let (Some(store), Some(db)) = (&backend.embedded, &backend.db_file) else {
        return Ok((Takeover::NotApplicable, None));
    };
    let Some(owner) = RunnerLock::try_acquire(db).with_context(|| format!("locking {}", db.display()))? else {
        return Ok((
            Takeover::Shared {
                lock: RunnerLock::path_for(db),
            },
            None,
        ));
    };
    let released = store
        .release_leases(&owner, &[QUEUE_NAME, IMPORT_QUEUE_NAME])
        .with_context(|| format!("releasing the leases of a stopped run in {}", db.display()))?;
    let lock = owner.path().to_owned();
    Ok((Takeover::Owner { released, lock }, Some(owner)))
}
