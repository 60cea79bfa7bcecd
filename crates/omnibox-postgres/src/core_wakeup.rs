//! [`Wakeup`](crate::Wakeup) as the core [`omnibox_core::wake::Wakeup`], so a
//! [`RelayWorker`](omnibox_core::worker::RelayWorker) wakes on LISTEN/NOTIFY.
//!
//! The core trait passes the poll interval on every wait; the wait ends at the earlier of
//! that timeout and this listener's own poll interval (set both to the same value). A lost
//! LISTEN connection (database restart) degrades to polling and sqlx reconnects it on a
//! later wait; a notification that arrives while no wait is running stays buffered.

use std::time::Duration;

use omnibox_core::wake::{Wakeup as CoreWakeup, Woken as CoreWoken};

use crate::wakeup::{Wakeup, Woken};

impl CoreWakeup for Wakeup {
    async fn wait(&mut self, timeout: Duration) -> CoreWoken {
        match tokio::time::timeout(timeout, Wakeup::wait(self)).await {
            Ok(Woken::Notified) => CoreWoken::Notified,
            _ => CoreWoken::Timeout,
        }
    }
}
