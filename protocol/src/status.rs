//! Status lifecycles that converge under concurrent edits.
//!
//! A document's status is not a last-writer-wins field: every move appends an
//! entry to the document's status log (an Automerge list, so concurrent
//! appends all survive), and the status shown is the most advanced one in the
//! log. Two offline edits that both move a request forward therefore end in
//! the more advanced of the two states, never in a state neither side meant,
//! and the log keeps who moved it when.

/// One step of a lifecycle.
#[derive(Debug)]
pub struct Stage {
    /// The status code.
    pub code: &'static str,
    /// How advanced it is; the status shown is the highest rank in the log.
    pub rank: u8,
    /// No move is allowed out of a final status.
    pub terminal: bool,
    /// French label.
    pub fr: &'static str,
    /// English label.
    pub en: &'static str,
}

/// The statuses of one kind of document.
#[derive(Debug)]
pub struct Lifecycle {
    /// Where a new document starts unless told otherwise.
    pub initial: &'static str,
    /// Every status, by rank; at equal rank the earlier one wins ties.
    pub stages: &'static [Stage],
}

const fn st(code: &'static str, rank: u8, terminal: bool, fr: &'static str, en: &'static str) -> Stage {
    Stage { code, rank, terminal, fr, en }
}

/// request: draft → open → matched → answered → closed (or withdrawn, expired).
pub static REQUEST: Lifecycle = Lifecycle {
    initial: "open",
    stages: &[
        st("draft", 0, false, "brouillon", "draft"),
        st("open", 1, false, "ouverte", "open"),
        st("matched", 2, false, "appariée", "matched"),
        st("answered", 3, false, "répondue", "answered"),
        st("closed", 4, true, "clôturée", "closed"),
        st("withdrawn", 4, true, "retirée", "withdrawn"),
        st("expired", 4, true, "expirée", "expired"),
    ],
};

/// offer: proposed → accepted → delivered (or declined).
pub static OFFER: Lifecycle = Lifecycle {
    initial: "proposed",
    stages: &[
        st("proposed", 0, false, "proposée", "proposed"),
        st("accepted", 1, false, "acceptée", "accepted"),
        st("declined", 1, true, "déclinée", "declined"),
        st("delivered", 2, true, "réalisée", "delivered"),
    ],
};

/// project: idea → co-decided → in progress → completed → evaluated (or abandoned).
pub static PROJECT: Lifecycle = Lifecycle {
    initial: "idea",
    stages: &[
        st("idea", 0, false, "idée", "idea"),
        st("co_decided", 1, false, "co-décidé", "co-decided"),
        st("in_progress", 2, false, "en cours", "in progress"),
        st("completed", 3, false, "terminé", "completed"),
        st("evaluated", 4, true, "évalué", "evaluated"),
        st("abandoned", 5, true, "abandonné", "abandoned"),
    ],
};

/// practice sheet: draft → published → archived.
pub static PRACTICE: Lifecycle = Lifecycle {
    initial: "published",
    stages: &[
        st("draft", 0, false, "brouillon", "draft"),
        st("published", 1, false, "publiée", "published"),
        st("archived", 2, true, "archivée", "archived"),
    ],
};

/// follow-up: open → done (or dropped).
pub static FOLLOWUP: Lifecycle = Lifecycle {
    initial: "open",
    stages: &[
        st("open", 0, false, "en cours", "open"),
        st("done", 1, true, "fait", "done"),
        st("dropped", 1, true, "abandonné", "dropped"),
    ],
};

/// Why a status move is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// The status is not part of the lifecycle.
    #[error("unknown status {status:?}; expected one of: {expected}")]
    Unknown {
        /// What was asked.
        status: String,
        /// The lifecycle's codes.
        expected: String,
    },
    /// The move goes backwards or leaves a final status.
    #[error("status can only move forward: it is {from:?}, it cannot become {to:?}")]
    Backwards {
        /// Current status.
        from: String,
        /// Requested status.
        to: String,
    },
}

impl Lifecycle {
    /// The stage of a code.
    pub fn stage(&self, code: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.code == code)
    }

    /// The codes, comma-separated.
    pub fn list(&self) -> String {
        self.stages.iter().map(|s| s.code).collect::<Vec<_>>().join(", ")
    }

    /// The status a log converges to: the most advanced entry; at equal rank,
    /// the stage listed first. Entries this release does not know are ignored
    /// (they stay in the log for newer releases).
    pub fn current<'a>(&self, log: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
        let mut best: Option<(usize, &Stage)> = None;
        for code in log {
            if let Some((pos, stage)) = self.stages.iter().enumerate().find(|(_, s)| s.code == code) {
                let better = match best {
                    None => true,
                    Some((bpos, b)) => stage.rank > b.rank || (stage.rank == b.rank && pos < bpos),
                };
                if better {
                    best = Some((pos, stage));
                }
            }
        }
        best.map(|(_, s)| s.code)
    }

    /// Checks a local move from `from` (None: a new document) to `to`.
    ///
    /// # Errors
    /// [`StatusError`] when `to` is unknown or not ahead of `from`.
    pub fn check_move(&self, from: Option<&str>, to: &str) -> Result<(), StatusError> {
        let target =
            self.stage(to).ok_or_else(|| StatusError::Unknown { status: to.to_owned(), expected: self.list() })?;
        let Some(from) = from else { return Ok(()) };
        let Some(current) = self.stage(from) else {
            return Ok(());
        };
        if current.terminal || target.rank <= current.rank {
            return Err(StatusError::Backwards { from: from.to_owned(), to: to.to_owned() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_most_advanced_status_wins() {
        assert_eq!(REQUEST.current(["open", "matched", "answered"]), Some("answered"));
        assert_eq!(REQUEST.current(["open", "answered", "matched"]), Some("answered"));
        assert_eq!(REQUEST.current(["open", "withdrawn", "closed"]), Some("closed"));
        assert_eq!(REQUEST.current(["open", "from-a-newer-release"]), Some("open"));
        assert_eq!(REQUEST.current([]), None);
    }

    #[test]
    fn moves_go_forward_only() {
        REQUEST.check_move(Some("open"), "matched").unwrap();
        REQUEST.check_move(Some("open"), "answered").unwrap();
        assert!(matches!(REQUEST.check_move(Some("answered"), "open"), Err(StatusError::Backwards { .. })));
        assert!(matches!(REQUEST.check_move(Some("closed"), "withdrawn"), Err(StatusError::Backwards { .. })));
        assert!(matches!(REQUEST.check_move(None, "done"), Err(StatusError::Unknown { .. })));
    }

    proptest! {
        #[test]
        fn the_current_status_ignores_log_order(mut log in proptest::collection::vec(0usize..7, 0..12), seed in any::<u64>()) {
            let codes: Vec<&str> = log.iter().map(|i| REQUEST.stages[*i].code).collect();
            let a = REQUEST.current(codes.iter().copied());
            // A deterministic shuffle.
            let n = log.len();
            for i in 0..n {
                let j = (seed as usize).wrapping_mul(i + 7) % n.max(1);
                log.swap(i, j);
            }
            let shuffled: Vec<&str> = log.iter().map(|i| REQUEST.stages[*i].code).collect();
            prop_assert_eq!(a, REQUEST.current(shuffled.iter().copied()));
        }
    }
}
