//! Per-connection defences of the HTTP endpoint: a cap on connections per client address, and
//! an I/O wrapper that records when a connection last moved bytes, so connections that say
//! nothing (before their first request, or after a response) can be closed. Without these,
//! a few hundred idle sockets from one address held every slot of the global limit.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open connections per client address, capped. A cap above the global connection limit
/// simply never binds.
#[derive(Debug)]
pub struct AddressSlots {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressSlots {
    pub fn new(limit: usize) -> Arc<AddressSlots> {
        Arc::new(AddressSlots {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `addr`, or `None` when it already holds `limit` connections.
    pub fn acquire(self: &Arc<Self>, addr: IpAddr) -> Option<AddressSlot> {
        // A poisoned map only means a panic elsewhere mid-update of plain counters.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(addr).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            addr,
        })
    }

    /// Connections open from `addr` now.
    pub fn open_from(&self, addr: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&addr).copied().unwrap_or(0)
    }
}

/// One connection's place in [`AddressSlots`]; freed on drop.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    addr: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// What a connection's watchdog reads: when bytes last moved and how many requests are being
/// answered now.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read or write that moved bytes.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has moved no bytes.
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Marks a request as being answered until the returned guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request being answered; see [`Activity::request`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// An I/O stream that notes in [`Activity`] every read or write that moved bytes.
pub struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Tracked<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Tracked<I> {
        Tracked { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_cap_each_address_and_free_on_drop() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let one = slots.acquire(a).expect("first");
        let two = slots.acquire(a).expect("second");
        assert!(slots.acquire(a).is_none(), "third from the same address");
        assert!(slots.acquire(b).is_some(), "another address is unaffected");
        drop(one);
        assert_eq!(slots.open_from(a), 1);
        assert!(slots.acquire(a).is_some());
        drop(two);
    }

    #[tokio::test]
    async fn tracked_io_notes_bytes_and_requests() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut tracked = Tracked::new(server, activity.clone());
        client.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        tracked.read_exact(&mut b).await.unwrap();
        assert!(activity.quiet_for() < Duration::from_secs(1));
        let guard = activity.request();
        assert_eq!(activity.in_flight(), 1);
        drop(guard);
        assert_eq!(activity.in_flight(), 0);
    }
}
