//! Bounds on a fetch and a checkout: bytes received and written, and wall
//! time. A hostile or broken server cannot make imgpack download forever:
//! gix checks the interrupt flag while it reads, and a watcher raises the
//! flag when a limit is passed (gix bumps its byte counters directly, so
//! they are polled rather than hooked).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::progress::{Id, MessageLevel, Step, StepShared, Unit};

/// How much a git source may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fetch and checkout together.
    pub timeout: Duration,
    /// Pack bytes received plus file bytes written.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(600),
            max_bytes: 4 << 30,
        }
    }
}

/// How long work may go on after the interrupt flag went up before it is abandoned.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// Which limit stopped the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Size,
    Time,
}

/// The shared state of one fetch: counters, the interrupt flag gix polls, and why it went up.
pub(crate) struct Budget {
    limits: Limits,
    started: Instant,
    /// The counters of every byte meter handed out.
    byte_counters: Mutex<Vec<StepShared>>,
    pub(crate) interrupt: AtomicBool,
    exceeded: AtomicU8,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            started: Instant::now(),
            byte_counters: Mutex::new(Vec::new()),
            interrupt: AtomicBool::new(false),
            exceeded: AtomicU8::new(0),
        })
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Pack bytes received and file bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        let counters = self.byte_counters.lock().expect("not poisoned");
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed) as u64)
            .sum()
    }

    /// Raises the interrupt flag if the byte limit is passed.
    pub(crate) fn check_size(&self) {
        if self.bytes() > self.limits.max_bytes {
            self.stop(Exceeded::Size);
        }
    }

    fn stop(&self, why: Exceeded) {
        let code = match why {
            Exceeded::Size => 1,
            Exceeded::Time => 2,
        };
        let _ = self
            .exceeded
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.interrupt.store(true, Ordering::SeqCst);
    }

    pub(crate) fn exceeded(&self) -> Option<Exceeded> {
        match self.exceeded.load(Ordering::SeqCst) {
            1 => Some(Exceeded::Size),
            2 => Some(Exceeded::Time),
            _ => None,
        }
    }

    /// Raises the interrupt flag if the time is up or too many bytes went through.
    pub(crate) fn check(&self) {
        if self.started.elapsed() >= self.limits.timeout {
            self.stop(Exceeded::Time);
        }
        self.check_size();
    }

    /// Whether the time is up and [`GRACE`] has passed since: work that has
    /// not stopped by then ignores the interrupt flag (it waits for a server).
    pub(crate) fn overdue(&self) -> bool {
        self.started.elapsed() >= self.limits.timeout + GRACE
    }

    /// What is left of the time: the most any one wait for a server may take.
    pub(crate) fn remaining(&self) -> Duration {
        self.limits.timeout.saturating_sub(self.started.elapsed())
    }

    /// A progress tree whose byte counters draw on this budget.
    pub(crate) fn meter(self: &Arc<Self>) -> Meter {
        self.meter_with_id(*b"IMGP", false)
    }

    /// A counter for bytes written by a checkout.
    pub(crate) fn byte_meter(self: &Arc<Self>) -> Meter {
        self.meter_with_id(*b"IMGB", true)
    }

    fn meter_with_id(self: &Arc<Self>, id: Id, counts_bytes: bool) -> Meter {
        let step: StepShared = Arc::new(AtomicUsize::new(0));
        if counts_bytes {
            self.byte_counters
                .lock()
                .expect("not poisoned")
                .push(step.clone());
        }
        Meter {
            budget: self.clone(),
            id,
            step,
        }
    }
}

/// gix's id for the bytes of a pack as they are read from the server.
const READ_PACK_BYTES: Id = *b"BWRB";

/// A silent progress implementation whose byte counters the budget watches.
#[derive(Clone)]
pub(crate) struct Meter {
    budget: Arc<Budget>,
    id: Id,
    step: StepShared,
}

impl gix::Count for Meter {
    fn set(&self, step: Step) {
        self.step.store(step, Ordering::Relaxed);
    }

    fn step(&self) -> Step {
        self.step.load(Ordering::Relaxed)
    }

    fn inc_by(&self, step: Step) {
        self.step.fetch_add(step, Ordering::Relaxed);
    }

    fn counter(&self) -> StepShared {
        self.step.clone()
    }
}

impl gix::Progress for Meter {
    fn init(&mut self, _max: Option<Step>, _unit: Option<Unit>) {}

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> Id {
        self.id
    }

    fn message(&self, _level: MessageLevel, _message: String) {}
}

impl gix::NestedProgress for Meter {
    type SubProgress = Meter;

    fn add_child(&mut self, _name: impl Into<String>) -> Meter {
        self.budget.meter()
    }

    fn add_child_with_id(&mut self, _name: impl Into<String>, id: Id) -> Meter {
        self.budget.meter_with_id(id, id == READ_PACK_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gix::{Count, NestedProgress};

    #[test]
    fn pack_bytes_past_the_limit_raise_the_interrupt() {
        let budget = Budget::new(Limits {
            timeout: Duration::from_secs(60),
            max_bytes: 100,
        });
        let mut root = budget.meter();
        let objects = root.add_child_with_id("objects", *b"OBJS");
        objects.inc_by(1000);
        budget.check_size();
        assert!(!budget.interrupt.load(Ordering::SeqCst), "only bytes count");
        let pack = root.add_child_with_id("read pack", READ_PACK_BYTES);
        pack.inc_by(60);
        budget.check_size();
        assert_eq!(budget.exceeded(), None);
        // gix bumps the shared counter itself.
        pack.counter().fetch_add(60, Ordering::Relaxed);
        budget.check_size();
        assert_eq!(budget.exceeded(), Some(Exceeded::Size));
        assert_eq!(budget.bytes(), 120);
        assert!(budget.interrupt.load(Ordering::SeqCst));
    }

    #[test]
    fn the_clock_raises_the_interrupt_then_gives_up() {
        let budget = Budget::new(Limits {
            timeout: Duration::from_millis(100),
            max_bytes: u64::MAX,
        });
        budget.check();
        assert_eq!(budget.exceeded(), None);
        assert!(budget.remaining() > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(120));
        budget.check();
        assert_eq!(budget.exceeded(), Some(Exceeded::Time));
        assert!(budget.interrupt.load(Ordering::SeqCst));
        assert_eq!(budget.remaining(), Duration::ZERO);
        assert!(!budget.overdue(), "the grace has not passed");
        std::thread::sleep(GRACE);
        assert!(budget.overdue());
    }
}
