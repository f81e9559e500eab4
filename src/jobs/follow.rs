//! A reader following a job's output closely enough that the job holds output back for it instead of dropping it.

use std::time::Instant;

/// Where a following reader is, and until when it counts as following.
#[derive(Debug, Clone, Copy)]
pub struct Follower {
    /// The offset the reader will read from next.
    pub offset: u64,
    /// When it stops counting as following unless it reads again.
    pub until: Instant,
}

impl Follower {
    /// Whether appending `len` bytes to a log of `cap` bytes ending at `end` would drop bytes this
    /// reader has not read yet, while it is still following at `now`.
    ///
    /// An append larger than the whole log cannot fit: it waits only until everything before it
    /// has been read.
    pub fn must_wait(&self, end: u64, len: usize, cap: usize, now: Instant) -> bool {
        if now >= self.until {
            return false;
        }
        if len > cap {
            return self.offset < end;
        }
        end + len as u64 > self.offset + cap as u64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FOLLOW_GRACE: Duration = Duration::from_secs(2);

    #[test]
    fn waits_only_when_unread_bytes_would_be_dropped() {
        let now = Instant::now();
        let reader = Follower {
            offset: 100,
            until: now + FOLLOW_GRACE,
        };
        // A log of 50 bytes: the reader at 100 can take output up to 150 without losing any.
        assert!(!reader.must_wait(140, 10, 50, now));
        assert!(reader.must_wait(140, 11, 50, now));
        assert!(reader.must_wait(150, 1, 50, now));
        // Once the reader has read on, there is room again.
        let caught_up = Follower {
            offset: 150,
            ..reader
        };
        assert!(!caught_up.must_wait(150, 50, 50, now));
    }

    #[test]
    fn a_reader_that_stopped_following_holds_nothing_back() {
        let now = Instant::now();
        let gone = Follower {
            offset: 0,
            until: now,
        };
        assert!(!gone.must_wait(1_000, 10, 50, now));
    }

    #[test]
    fn an_append_larger_than_the_log_waits_for_everything_before_it() {
        let now = Instant::now();
        let behind = Follower {
            offset: 10,
            until: now + FOLLOW_GRACE,
        };
        assert!(behind.must_wait(20, 100, 50, now));
        let read_all = Follower {
            offset: 20,
            ..behind
        };
        assert!(!read_all.must_wait(20, 100, 50, now));
    }
}
