//! What the device sockets of this instance read from NATS, through one subscription per
//! instance. Every device's inbox and control subject (`deviceconnect.<tenant>.device.<id>`,
//! `deviceconnect.<tenant>.control.<id>`: the only four-token subjects, session subjects have
//! five) arrive on `deviceconnect.*.*.*`; [`Inboxes::deliver`] hands each message to the
//! sockets of that device held here (usually one; two while a reconnect replaces an older
//! connection) and drops the rest.
//!
//! Why not a NATS subscription per socket: async-nats gives each subscription a channel whose
//! first block of 32 messages is allocated up front (~6 KiB), resident for every idle device;
//! a registration here is a map entry and a small channel whose messages are allocated when
//! they arrive. The price: every instance receives the frames for all devices (the device
//! inboxes of other instances too) and drops those of devices it does not hold, so with several
//! instances user-to-device traffic crosses NATS once per instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::channel::mpsc;
use futures::StreamExt;

/// The subscription that carries every device's inbox and control subject.
pub const ALL_DEVICE_SUBJECTS: &str = "deviceconnect.*.*.*";
/// Messages queued for one socket before further ones are dropped (a socket that stopped
/// reading; NATS drops for a slow subscriber the same way).
const SOCKET_QUEUE: usize = 256;

type Sockets = HashMap<String, Vec<(u64, mpsc::Sender<async_nats::Message>)>>;

/// The device sockets of this instance by device (the key is the device's
/// `deviceconnect.<tenant>.*.<id>` subject pattern, see `crate::device_subjects`).
#[derive(Default)]
pub struct Inboxes {
    sockets: Mutex<Sockets>,
    next_id: AtomicU64,
}

/// A socket's registration: its messages, until dropped.
pub struct Inbox {
    inboxes: Arc<Inboxes>,
    key: String,
    id: u64,
    messages: mpsc::Receiver<async_nats::Message>,
}

impl Inboxes {
    /// Starts receiving the messages for the device whose subjects `device_subjects` names.
    pub fn register(self: &Arc<Self>, device_subjects: &str) -> Inbox {
        let (tx, messages) = mpsc::channel(SOCKET_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets
                .entry(device_subjects.to_owned())
                .or_default()
                .push((id, tx));
        }
        Inbox {
            inboxes: Arc::clone(self),
            key: device_subjects.to_owned(),
            id,
            messages,
        }
    }

    /// Hands `msg` to every socket of the device its subject names (none: dropped).
    pub fn deliver(&self, msg: async_nats::Message) {
        let Some(key) = key_of(msg.subject.as_str()) else {
            return;
        };
        let Ok(mut sockets) = self.sockets.lock() else {
            return;
        };
        let Some(targets) = sockets.get_mut(&key) else {
            return;
        };
        for (_, tx) in targets.iter_mut() {
            if let Err(e) = tx.try_send(msg.clone()) {
                if e.is_full() {
                    tracing::warn!(subject = %msg.subject, "device socket not reading: message dropped");
                }
            }
        }
    }

    fn unregister(&self, key: &str, id: u64) {
        if let Ok(mut sockets) = self.sockets.lock() {
            if let Some(targets) = sockets.get_mut(key) {
                targets.retain(|(other, _)| *other != id);
                if targets.is_empty() {
                    sockets.remove(key);
                }
            }
        }
    }

    /// The number of device sockets registered (for tests).
    pub fn len(&self) -> usize {
        self.sockets
            .lock()
            .map(|s| s.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inbox {
    /// The next message for this device; `None` once the instance's subscription ended.
    pub async fn next(&mut self) -> Option<async_nats::Message> {
        self.messages.next().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.inboxes.unregister(&self.key, self.id);
    }
}

/// `deviceconnect.<tenant>.<kind>.<id>` -> `deviceconnect.<tenant>.*.<id>`.
fn key_of(subject: &str) -> Option<String> {
    let mut tokens = subject.split('.');
    let (Some("deviceconnect"), Some(tenant), Some(_kind), Some(id), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return None;
    };
    Some(format!("deviceconnect.{tenant}.*.{id}"))
}

/// Reads the instance's subscription until it ends or the instance is gone.
pub async fn dispatch(mut subscription: async_nats::Subscriber, inboxes: Weak<Inboxes>) {
    while let Some(msg) = subscription.next().await {
        let Some(inboxes) = inboxes.upgrade() else {
            return;
        };
        inboxes.deliver(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, payload: &'static [u8]) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::from_static(payload),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn keys_are_the_device_subject_patterns() {
        assert_eq!(
            key_of("deviceconnect._.device.d1").as_deref(),
            Some("deviceconnect._.*.d1")
        );
        assert_eq!(
            key_of("deviceconnect.t1.control.d1").as_deref(),
            Some("deviceconnect.t1.*.d1")
        );
        assert_eq!(key_of("deviceconnect._.session.d1.s1"), None);
        assert_eq!(key_of("other._.device.d1"), None);
    }

    #[tokio::test]
    async fn messages_reach_the_sockets_of_their_device_only() {
        let inboxes = Arc::new(Inboxes::default());
        let mut old = inboxes.register("deviceconnect._.*.d1");
        let mut new = inboxes.register("deviceconnect._.*.d1");
        let mut other = inboxes.register("deviceconnect._.*.d2");
        inboxes.deliver(message("deviceconnect._.device.d1", b"frame"));
        inboxes.deliver(message("deviceconnect.t2.device.d1", b"another tenant"));
        inboxes.deliver(message("deviceconnect._.control.d2", b"connect 2"));
        assert_eq!(old.next().await.map(|m| m.payload), Some("frame".into()));
        assert_eq!(new.next().await.map(|m| m.payload), Some("frame".into()));
        assert_eq!(
            other.next().await.map(|m| m.payload),
            Some("connect 2".into())
        );
        assert_eq!(inboxes.len(), 3);
        drop(old);
        drop(other);
        assert_eq!(inboxes.len(), 1);
        inboxes.deliver(message("deviceconnect._.device.d1", b"second"));
        assert_eq!(new.next().await.map(|m| m.payload), Some("second".into()));
        drop(new);
        assert!(inboxes.is_empty());
    }

    #[tokio::test]
    async fn a_socket_that_stops_reading_loses_messages_not_the_others() {
        let inboxes = Arc::new(Inboxes::default());
        let _stuck = inboxes.register("deviceconnect._.*.d1");
        let mut reading = inboxes.register("deviceconnect._.*.d1");
        for _ in 0..SOCKET_QUEUE + 10 {
            inboxes.deliver(message("deviceconnect._.device.d1", b"x"));
            assert!(reading.next().await.is_some());
        }
    }
}
