//! Closed-loop broadcast (`--pipeline` with `--workload broadcast`): each sender keeps a
//! window of lines in flight, and a line is answered once every other member has it,
//! whichever loader thread that member is on. This is the one place threads touch shared
//! state per message: one uncontended atomic add per delivery, and a wake-up of the sender's
//! thread only when a line it sent is complete.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::load::plan::Plan;

/// See the module documentation.
#[derive(Debug)]
pub struct LineAcks {
    /// Lines in flight per sender.
    window: u32,
    /// Deliveries so far of line `seq` of connection `id`, at `id * window + seq % window`:
    /// a slot is reused only after its line was answered and reset.
    counts: Vec<AtomicU32>,
    /// The first connection id of each thread, in order: which thread a sender is on.
    first_ids: Vec<u32>,
    /// Each thread's waker, set when its reactor starts.
    wakers: Vec<OnceLock<mio::Waker>>,
}

impl LineAcks {
    /// Acknowledgements for `window` lines in flight per sender, connection ids below
    /// `id_space`, shared by the threads of `plans`.
    pub fn new(window: u32, id_space: usize, plans: &[Plan]) -> LineAcks {
        LineAcks {
            window,
            counts: (0..id_space * window as usize).map(|_| AtomicU32::new(0)).collect(),
            first_ids: plans.iter().map(|plan| plan.first_id).collect(),
            wakers: plans.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// Thread `thread`'s waker, to be woken when a line one of its connections sent is
    /// answered by a delivery on another thread.
    pub fn set_waker(&self, thread: usize, waker: mio::Waker) {
        let _ = self.wakers[thread].set(waker);
    }

    /// Thread `thread` saw line `seq` of `sender` delivered; the line is answered once
    /// `members` deliveries were seen. Wakes the sender's thread, if it is another, when
    /// this delivery completes the line; returns whether it did (its time is the line's
    /// reach).
    pub fn delivered(&self, sender: u32, seq: u64, members: u32, thread: usize) -> bool {
        let seen = self.slot(sender, seq).fetch_add(1, Ordering::AcqRel) + 1;
        if seen == members {
            let owner = self.first_ids.partition_point(|&first| first <= sender).saturating_sub(1);
            if owner != thread {
                if let Some(waker) = self.wakers[owner].get() {
                    let _ = waker.wake();
                }
            }
        }
        seen == members
    }

    /// If line `seq` of `sender` has reached all `members`, frees its slot for the line
    /// `window` later and returns true.
    pub fn take_answered(&self, sender: u32, seq: u64, members: u32) -> bool {
        let slot = self.slot(sender, seq);
        if slot.load(Ordering::Acquire) < members {
            return false;
        }
        slot.store(0, Ordering::Release);
        true
    }

    fn slot(&self, sender: u32, seq: u64) -> &AtomicU32 {
        let window = u64::from(self.window);
        &self.counts[(u64::from(sender) * window + seq % window) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line is answered after exactly `members` deliveries, and its slot is then free.
    #[test]
    fn a_line_is_answered_when_every_member_has_it() {
        let plans = crate::load::LoadConfig { connections: 4, threads: 2, ..Default::default() }.plans();
        let acks = LineAcks::new(2, 4, &plans);
        acks.delivered(3, 0, 2, 0);
        assert!(!acks.take_answered(3, 0, 2));
        acks.delivered(3, 0, 2, 1);
        assert!(acks.take_answered(3, 0, 2));
        assert!(!acks.take_answered(3, 2, 2), "the slot was freed for line 2");
        acks.delivered(3, 1, 1, 0);
        assert!(acks.take_answered(3, 1, 1), "lines of one sender are counted apart");
    }

    /// The delivery that completes a line wakes the sender's thread, if it is another one.
    #[test]
    fn the_last_delivery_wakes_the_senders_thread() {
        use std::time::Duration;
        let plans = crate::load::LoadConfig { connections: 4, threads: 2, ..Default::default() }.plans();
        let acks = LineAcks::new(1, 4, &plans);
        let mut polls: Vec<mio::Poll> = (0..2).map(|_| mio::Poll::new().unwrap()).collect();
        for (thread, poll) in polls.iter().enumerate() {
            acks.set_waker(thread, mio::Waker::new(poll.registry(), mio::Token(7)).unwrap());
        }
        let mut events = mio::Events::with_capacity(4);
        let mut woken = |poll: &mut mio::Poll| {
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            !events.is_empty()
        };
        // Connection 0 is thread 0's; its line goes to 2 members, both on thread 1.
        acks.delivered(0, 0, 2, 1);
        assert!(!woken(&mut polls[0]), "not complete yet");
        acks.delivered(0, 0, 2, 1);
        assert!(woken(&mut polls[0]), "complete: its sender's thread is woken");
        assert!(!woken(&mut polls[1]));
        // Connection 3 is thread 1's own: completing its line there wakes nobody.
        acks.delivered(3, 0, 1, 1);
        assert!(!woken(&mut polls[0]) && !woken(&mut polls[1]));
        assert!(acks.take_answered(3, 0, 1));
    }
}
