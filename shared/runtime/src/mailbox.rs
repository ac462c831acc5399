//! One writer per execution in a process. Events for an execution that
//! arrive while another task of this process is applying events to it wait
//! in the execution's mailbox; that task (its writer) takes them all into
//! its next transition, so a burst of results for one execution (the
//! branches of a fan-out, the elements of a map) costs one load and one
//! commit, not a version conflict each.
//!
//! A writer that stops without answering (its task was cancelled) drops the
//! mailbox with it; its waiters see their answer channel closed and try
//! again, one of them becoming the writer.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

pub(crate) type Reply<R> = oneshot::Sender<R>;

/// Items waiting for an execution's writer, by execution.
type Waiting<T, R> = HashMap<String, Vec<(T, Reply<R>)>>;

pub(crate) struct Mailboxes<T, R> {
    boxes: Mutex<Waiting<T, R>>,
}

impl<T, R> Default for Mailboxes<T, R> {
    fn default() -> Self {
        Mailboxes {
            boxes: Mutex::new(HashMap::new()),
        }
    }
}

/// What [`Mailboxes::enter`] made of the caller.
pub(crate) enum Entered<'a, T, R> {
    /// No one was writing: the caller is the writer, with its item back.
    Writer(Writer<'a, T, R>, T),
    /// A writer is at work: the answer comes on this channel.
    Waiting(oneshot::Receiver<R>),
}

impl<T, R> Mailboxes<T, R> {
    fn lock(&self) -> MutexGuard<'_, Waiting<T, R>> {
        self.boxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn enter(&self, key: &str, item: T) -> Entered<'_, T, R> {
        let mut boxes = self.lock();
        match boxes.get_mut(key) {
            Some(waiting) => {
                let (reply, answer) = oneshot::channel();
                waiting.push((item, reply));
                Entered::Waiting(answer)
            }
            None => {
                boxes.insert(key.to_string(), Vec::new());
                Entered::Writer(
                    Writer {
                        boxes: self,
                        key: key.to_string(),
                        done: false,
                    },
                    item,
                )
            }
        }
    }
}

/// The writer's hold on an execution's mailbox.
pub(crate) struct Writer<'a, T, R> {
    boxes: &'a Mailboxes<T, R>,
    key: String,
    done: bool,
}

impl<T, R> Writer<'_, T, R> {
    /// Up to `max` waiting items, oldest first.
    pub(crate) fn take(&self, max: usize) -> Vec<(T, Reply<R>)> {
        let mut boxes = self.boxes.lock();
        match boxes.get_mut(&self.key) {
            Some(waiting) => {
                let n = waiting.len().min(max);
                waiting.drain(..n).collect()
            }
            None => Vec::new(),
        }
    }

    /// Gives the mailbox up if nothing waits in it; false if something does.
    pub(crate) fn leave_if_empty(&mut self) -> bool {
        let mut boxes = self.boxes.lock();
        if boxes.get(&self.key).is_some_and(|w| !w.is_empty()) {
            return false;
        }
        boxes.remove(&self.key);
        self.done = true;
        true
    }
}

impl<T, R> Drop for Writer<'_, T, R> {
    fn drop(&mut self) {
        if !self.done {
            // Waiters' channels close with the mailbox: they try again.
            self.boxes.lock().remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_caller_writes_and_later_ones_wait_for_it() {
        let boxes: Mailboxes<u32, u32> = Mailboxes::default();
        let Entered::Writer(mut writer, first) = boxes.enter("x", 1) else {
            panic!("the first caller writes");
        };
        assert_eq!(first, 1);
        let Entered::Waiting(mut answer) = boxes.enter("x", 2) else {
            panic!("a second caller waits");
        };
        assert!(
            matches!(boxes.enter("y", 3), Entered::Writer(..)),
            "another execution has its own writer"
        );
        assert!(!writer.leave_if_empty(), "an item waits");
        let taken = writer.take(10);
        assert_eq!(taken.len(), 1);
        let (item, reply) = taken.into_iter().next().unwrap();
        reply.send(item * 10).unwrap();
        assert_eq!(answer.try_recv().unwrap(), 20);
        assert!(writer.leave_if_empty());
        assert!(
            matches!(boxes.enter("x", 4), Entered::Writer(..)),
            "the mailbox was given up"
        );
    }

    #[test]
    fn a_writer_that_stops_closes_its_waiters_channels() {
        let boxes: Mailboxes<u32, u32> = Mailboxes::default();
        let Entered::Writer(writer, _) = boxes.enter("x", 1) else {
            panic!("the first caller writes");
        };
        let Entered::Waiting(mut answer) = boxes.enter("x", 2) else {
            panic!("a second caller waits");
        };
        drop(writer);
        assert!(matches!(
            answer.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(boxes.enter("x", 3), Entered::Writer(..)));
    }
}
