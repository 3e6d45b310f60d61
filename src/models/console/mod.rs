//! The console under `--model` (`--listen console=ADDR`): the same page and the same JSON
//! stream as the reactor's (docs/console.md), served by a thread of its own beside the
//! model ([`server`]), so no model's clients wait on a watcher and none of the model's code
//! learns HTTP or WebSocket.
//!
//! What it shows depends on the model's shape:
//!
//! - `select` and `poll` are loops, as the reactor is: each turn that served a client is a
//!   `turn`, in the order served, and the loop writes a snapshot a second of its
//!   connections and figures ([`tap`], through the [`feed`]).
//! - `iterative`, `threads` and `fork` have no loop turns: each client is served by a
//!   blocking call of its own (inline, in a thread, in a process), and the kernel decides
//!   who runs. Their console sends snapshots only: the clients served now and their counts
//!   ([`clients`]); the page says why.

pub mod clients;
pub mod feed;
pub mod server;
pub mod tap;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{info, warn};

use super::{BlockingService, Model};
use crate::codec::ws;
use clients::Clients;
use feed::Feed;
use server::{ConsoleThread, Source};
use tap::LoopTap;

/// A running console thread, and what the model feeds it through.
#[derive(Debug)]
pub struct Console {
    source: Either,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// What the model holds of its console.
#[derive(Debug)]
enum Either {
    Loop(Arc<Feed>),
    Blocking(Arc<Clients>),
}

impl Console {
    /// Takes the console's services (the handler that watches the loop) out of `services`
    /// and, if there were any, starts the console thread on their listeners for `model`.
    pub fn start(
        model: Model,
        services: &mut Vec<BlockingService>,
        ws_options: ws::Options,
        max_output: usize,
    ) -> io::Result<Option<Console>> {
        let mut listeners = Vec::new();
        services.retain_mut(|service| {
            if !service.handler.watches_the_loop() {
                return true;
            }
            listeners
                .extend(std::mem::take(&mut service.listeners).into_iter().map(|(listener, _)| listener));
            false
        });
        if listeners.is_empty() {
            return Ok(None);
        }
        let (source, thread_source) = match model {
            Model::Select | Model::Poll => {
                let feed = Arc::new(Feed::default());
                (Either::Loop(Arc::clone(&feed)), Source::Loop(feed))
            }
            _ => {
                let clients = Arc::new(Clients::default());
                (
                    Either::Blocking(Arc::clone(&clients)),
                    Source::Blocking { model: model.to_string(), clients },
                )
            }
        };
        let console = ConsoleThread::new(listeners, thread_source, Arc::new(ws_options), max_output)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("console".to_string()).spawn(move || {
            if let Err(error) = console.run(&stop_thread) {
                warn!("console stopped; error={error}");
            }
        })?;
        info!("console started; model={model}");
        Ok(Some(Console { source, stop, thread }))
    }

    /// A loop model's tap into the console (`None` for a blocking model).
    pub fn tap(&self, model: Model) -> Option<LoopTap> {
        match &self.source {
            Either::Loop(feed) => Some(LoopTap::new(model, Arc::clone(feed), Instant::now())),
            Either::Blocking(_) => None,
        }
    }

    /// A blocking model's list of clients (`None` for a loop model).
    pub fn clients(&self) -> Option<Arc<Clients>> {
        match &self.source {
            Either::Blocking(clients) => Some(Arc::clone(clients)),
            Either::Loop(_) => None,
        }
    }

    /// Stops the console thread (its watchers are told the server is going away).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}
