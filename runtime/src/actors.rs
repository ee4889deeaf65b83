//! The process-wide actix system that hosts endpoint actors.
//!
//! actix actors must live on an [`actix_rt::Arbiter`] (a thread with a single-threaded
//! runtime): `Actor::start()` inside a plain tokio multi-thread task panics. rill starts
//! one actix [`System`] per process, on a thread of its own, the first time an endpoint is
//! spawned, and gives every endpoint its own arbiter. I/O (quinn) stays on the caller's
//! tokio runtime; actix `Addr`s bridge the two.

use std::sync::OnceLock;

use actix_rt::{Arbiter, ArbiterHandle, System};

static SYSTEM: OnceLock<System> = OnceLock::new();

fn system() -> &'static System {
    SYSTEM.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("rill-actor-system".into())
            .spawn(move || {
                let system = System::new();
                // The receiver waits right below; if it is gone, so is the caller.
                let _ = tx.send(System::current());
                system.run()
            })
            .expect("the OS refused to start the actor-system thread");
        rx.recv()
            .expect("the actor-system thread died while starting")
    })
}

/// Starts a new arbiter (one OS thread) on the process's actor system.
pub(crate) fn new_arbiter() -> ArbiterHandle {
    let system = system();
    // Arbiter::new registers with the thread's current system; borrow ours for the call
    // and restore whatever the calling thread had (it may be an arbiter itself).
    let previous = System::try_current();
    System::set_current(system.clone());
    let arbiter = Arbiter::new();
    if let Some(previous) = previous {
        System::set_current(previous);
    }
    arbiter.handle()
}
