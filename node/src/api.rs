//! The local HTTP API: what the CLI and local tools use to drive the node.
//!
//! JSON over HTTP/1.1 on a loopback address. Reads are open to local users;
//! requests that change anything need `Authorization: Bearer <token>`, the
//! token the node keeps in `api.token` in its home (mode 0600). Every error is
//! a 4xx or 5xx with an [`types::ApiErrorBody`] naming the reason.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | the coordinators' dashboard (HTML, `?lang=fr\|en\|nl\|ar`) |
//! | GET | `/v1/status` | ids, addresses, document counts |
//! | GET | `/metrics` | Prometheus text format, names prefixed `passerelle_` |
//! | GET | `/v1/network/heartbeats` | the latest signed heartbeat of every node |
//! | GET | `/v1/network/state` | members, nodes, links, requests board, response times, timeline |
//! | GET | `/v1/docs?kind=&status=` | list documents |
//! | POST | `/v1/docs` | create a document |
//! | GET | `/v1/docs/{id}?lang=` | one document |
//! | PATCH | `/v1/docs/{id}` | change fields or status |
//! | GET | `/v1/docs/{id}/history` | its changes, authors, times |
//! | POST | `/v1/verify` | re-check every stored signature |
//! | GET | `/v1/peers` | known peers and their sync state |
//! | POST | `/v1/peers` | add a peer (`{node, addr}`) and dial it |
//! | DELETE | `/v1/peers/{node}` | forget a peer |

/// The request and response bodies, defined beside the engine that fills
/// them ([`crate::views`]) and named here as the API serves them.
pub use crate::views as types;

pub mod access;
mod dashboard;
mod error;
pub mod metrics;
pub mod openapi;
mod routes;

pub use error::ApiError;
pub use routes::{ApiState, LIST_PAGE, MAX_EVENT_STREAMS, MAX_LIST_PAGE, router};
