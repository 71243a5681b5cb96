//! Membership: networks, their signed statements, the roster folded from
//! them, and invitations.
//!
//! A network is founded by a coordinator's commune key; coordinators admit
//! communes and observers, remove them and revoke node keys; members declare
//! partnerships. Every fact is a statement signed by a commune key, the
//! roster is what they mean together, and nodes refuse anything from keys
//! the roster does not admit.

pub mod invitation;
pub mod roster;
pub mod statement;

pub use invitation::{Invitation, InvitationError, InvitationTerms};
pub use roster::{Member, Partnership, Roster, RosterError};
pub use statement::{Role, SignedStatement, Statement, network_id};
