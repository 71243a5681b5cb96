//! What a flushed batch made durable goes on to the peers (see `gossip`):
//! roster news first (a revocation reaches peers before documents), then
//! new changes, local or received, to every ready peer but the one they
//! came from, pushed or announced. A peer never learns of something this
//! node could still lose.

use super::io::Announcement;
use super::{DocSource, Millis, Replica};

impl Replica {
    /// The driver flushed a batch: what it stored (local writes, material
    /// received from peers) and the roster statements added since the last
    /// flush are passed on.
    pub fn committed(&mut self, now: Millis, announcements: Vec<Announcement>, _docs: &mut impl DocSource) {
        if announcements.is_empty() && self.roster_news.is_empty() {
            return;
        }
        self.disseminate(now, announcements);
    }

    /// The driver's flush failed: nothing of the batch may be announced.
    pub fn flush_failed(&mut self) {
        self.roster_news.clear();
    }
}
