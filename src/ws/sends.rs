//! The sends of one connection that wait for their commit.
//!
//! An ack means durable, so a send waits for the store's commit. A connection that
//! waited for each commit before reading its next frame put at most one message in each
//! commit: one hot room's rate was its publishers times the commits per second, however
//! fast the disk batched. So the session reads on while up to [`SENDS_IN_FLIGHT`] sends
//! wait, and they share commits with each other and with every other connection's.
//!
//! Nothing about order changes for the client. The sends reach the store in the order
//! the client sent them (each is first polled after every older one, and the store
//! queues appends in the order they are first polled), so their `seq`s and acks follow
//! that order; and the session answers any other frame only once these are answered
//! (see `Session::answer_sends`), so every reply still leaves in the order of the frames
//! it answers. The bound keeps what one connection can hold in the server at a few
//! frames' worth, and a client that wants more in flight is simply read more slowly.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use sync_wrapper::SyncWrapper;

/// Most sends one connection has waiting for their commit; the next frame is read
/// only once one is answered. Eight keep a client that pipelines (a window of eight is
/// what `loadgen` uses) busy on a hot room, and bound what a connection holds at
/// eight frames.
pub(crate) const SENDS_IN_FLIGHT: usize = 8;

/// A send on its way to the store, boxed: the connection holds it only while it waits.
pub(crate) type Sending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum InFlight<T> {
    /// Wrapped so the connection stays `Sync`: only `&mut` ever reaches the future.
    Waiting(SyncWrapper<Sending<T>>),
    /// Finished while an older one still waits: its answer must wait too.
    Done(T),
}

/// The connection's waiting sends, oldest first.
pub(crate) struct SendsInFlight<T>(VecDeque<InFlight<T>>);

impl<T> Default for SendsInFlight<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<T> SendsInFlight<T> {
    /// True when no more may start: the session stops reading until one is answered.
    pub(crate) fn is_full(&self) -> bool {
        self.0.len() >= SENDS_IN_FLIGHT
    }

    /// Adds a send; it starts (is first polled) at the next [`SendsInFlight::poll_answers`],
    /// after every older one.
    pub(crate) fn start(&mut self, sending: Sending<T>) {
        self.0
            .push_back(InFlight::Waiting(SyncWrapper::new(sending)));
    }

    /// Polls every waiting send, oldest first, and hands the outcomes of the finished
    /// ones to `answer` oldest first, stopping at the first that still waits. Ready once
    /// none is left; the storage is given back then, so a connection that sent a burst
    /// does not keep room for the next one.
    pub(crate) fn poll_answers(
        &mut self,
        cx: &mut Context<'_>,
        mut answer: impl FnMut(T),
    ) -> Poll<()> {
        // Polled on every wake-up of the connection: a connection with nothing in flight
        // (nearly always) pays one check, not a loop and a fresh deque.
        if self.0.is_empty() {
            return Poll::Ready(());
        }
        for sending in &mut self.0 {
            if let InFlight::Waiting(future) = sending
                && let Poll::Ready(outcome) = future.get_mut().as_mut().poll(cx)
            {
                *sending = InFlight::Done(outcome);
            }
        }
        while let Some(InFlight::Done(_)) = self.0.front() {
            if let Some(InFlight::Done(outcome)) = self.0.pop_front() {
                answer(outcome);
            }
        }
        if self.0.is_empty() {
            self.0 = VecDeque::new();
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::Waker;
    use tokio::sync::oneshot;

    /// A send that notes when it is first polled and finishes when its sender says.
    fn sending(n: u32, started: &Arc<Mutex<Vec<u32>>>) -> (Sending<u32>, oneshot::Sender<()>) {
        let (finish, finished) = oneshot::channel();
        let started = Arc::clone(started);
        let future = async move {
            started.lock().map(|mut s| s.push(n)).ok();
            let _ = finished.await;
            n
        };
        (Box::pin(future), finish)
    }

    fn answers(sends: &mut SendsInFlight<u32>) -> (Vec<u32>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut answered = Vec::new();
        let done = sends.poll_answers(&mut cx, |n| answered.push(n)).is_ready();
        (answered, done)
    }

    #[test]
    fn sends_start_in_the_order_given_and_are_answered_in_that_order_whatever_order_they_finish_in()
    {
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut sends = SendsInFlight::default();
        let mut finishers = Vec::new();
        for n in 1..=3 {
            let (future, finish) = sending(n, &started);
            sends.start(future);
            finishers.push(finish);
        }
        assert_eq!(answers(&mut sends), (vec![], false));
        assert_eq!(*started.lock().unwrap(), vec![1, 2, 3]);

        let mut finishers = finishers.into_iter();
        let (first, second, third) = (finishers.next(), finishers.next(), finishers.next());
        third.map(|f| f.send(()));
        assert_eq!(
            answers(&mut sends),
            (vec![], false),
            "the third waits for the first"
        );
        first.map(|f| f.send(()));
        assert_eq!(answers(&mut sends), (vec![1], false));
        second.map(|f| f.send(()));
        assert_eq!(answers(&mut sends), (vec![2, 3], true));
        assert_eq!(
            sends.0.capacity(),
            0,
            "an answered burst gives its storage back"
        );
    }

    #[test]
    fn no_more_than_the_bound_may_wait_at_once() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut sends = SendsInFlight::default();
        let mut finishers = Vec::new();
        for n in 0..SENDS_IN_FLIGHT {
            assert!(!sends.is_full());
            let (future, finish) = sending(u32::try_from(n).unwrap(), &started);
            sends.start(future);
            finishers.push(finish);
        }
        assert!(sends.is_full());
        finishers.remove(0).send(()).unwrap();
        assert_eq!(answers(&mut sends), (vec![0], false));
        assert!(!sends.is_full(), "an answer makes room for the next");
    }
}
