//! Where the importer runs what blocks: parsing a chunk (its reader streams
//! from S3 or disk) and reading the occurrence counts. In production, on
//! tokio's blocking pool, while the importer's task queues what was parsed
//! so far; in the deterministic simulation, inline, on the task that polls
//! the importer, which has no runtime to hand work to and must run one way
//! for one seed.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::services::import::parse::Window;

/// How the importer runs its blocking reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BlockingReads {
    /// On tokio's blocking pool (needs a runtime): memory holds a couple of
    /// windows, whatever the chunk's size. Production.
    #[default]
    Thread,
    /// On the calling task, to the end, before anything is queued: a
    /// chunk's windows are held at once. For a caller that polls without a
    /// runtime (the simulation), on small chunks.
    Inline,
}

impl BlockingReads {
    /// Runs `f` as this mode says; `Err` if its thread stopped (panicked).
    pub(crate) async fn run<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        match self {
            BlockingReads::Thread => tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string()),
            BlockingReads::Inline => Ok(f()),
        }
    }
}

/// The windows a chunk's parse hands over, in order, then what it returned.
pub(crate) enum Windows<T> {
    Streaming {
        windows: mpsc::Receiver<Window>,
        parse: JoinHandle<T>,
    },
    Parsed {
        windows: VecDeque<Window>,
        parse: T,
    },
}

impl<T: Send + 'static> Windows<T> {
    /// Starts `parse`, which hands each window to its argument (false: the
    /// queueing side gave up, stop).
    pub(crate) fn start(
        reads: BlockingReads,
        parse: impl FnOnce(&mut dyn FnMut(Window) -> bool) -> T + Send + 'static,
    ) -> Self {
        match reads {
            BlockingReads::Thread => {
                // Dropping the receiver (an error while queueing) makes the
                // next send fail, which stops the parsing thread.
                let (sender, windows) = mpsc::channel::<Window>(2);
                let parse = tokio::task::spawn_blocking(move || {
                    let mut send = |window: Window| sender.blocking_send(window).is_ok();
                    parse(&mut send)
                });
                Windows::Streaming { windows, parse }
            }
            BlockingReads::Inline => {
                let mut windows = VecDeque::new();
                let done = parse(&mut |window: Window| {
                    windows.push_back(window);
                    true
                });
                Windows::Parsed { windows, parse: done }
            }
        }
    }

    /// The next window, `None` once the parse has handed over all of them.
    pub(crate) async fn next(&mut self) -> Option<Window> {
        match self {
            Windows::Streaming { windows, .. } => windows.recv().await,
            Windows::Parsed { windows, .. } => windows.pop_front(),
        }
    }

    /// What the parse returned; `Err` if its thread stopped (panicked).
    pub(crate) async fn finish(self) -> Result<T, String> {
        match self {
            Windows::Streaming { parse, .. } => parse.await.map_err(|e| e.to_string()),
            Windows::Parsed { parse, .. } => Ok(parse),
        }
    }
}
