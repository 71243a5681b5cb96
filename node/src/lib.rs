//! # passerelle-node
//!
//! The Passerelle daemon as a library: everything that touches disk,
//! sockets, clocks and signals, around the pure core in
//! `passerelle-protocol`. The `passerelle` binary is a thin layer over it.
//!
//! ## Layout
//!
//! - [`home`], [`config`], [`identity`]: where a node keeps its files, its
//!   configuration, and the commune and node keys (created by `init`).
//! - [`store`]: durable storage behind the [`store::Store`] trait;
//!   [`store::SledStore`] is the sled implementation.
//! - [`engine`]: one thread that owns the store and the loaded Automerge
//!   documents; commands in on a bounded channel, writes acknowledged after
//!   one flush per batch.
//! - [`api`]: the local HTTP API (axum) and its request/response
//!   types, [`views`] (the engine fills them, the API serves them, the CLI
//!   renders them); [`client`] is the CLI's side.
//! - [`net`]: the libp2p swarm task; the sync logic itself is the sans-IO
//!   replica core in `passerelle_protocol::replica`, driven by the engine
//!   (`engine/replication.rs`).
//! - [`runtime`]: starts and stops a whole node.
//! - [`netem`]: a loopback proxy that adds latency, caps bandwidth, cuts
//!   and partitions links, for tests, benchmarks and the demo.
//! - [`mod@bench`]: the benchmarks of `passerelle bench ingest`, `sync`,
//!   `scale` (the simulator) and `network` (real nodes).
//! - [`demo`]: the local demo federation of `passerelle demo`.
//!
//! ## Flow of a write
//!
//! CLI → `client` → HTTP → `api` handler → `EngineHandle::update` (bounded
//! channel) → engine thread: schema checks, Automerge change, signed
//! envelope, `Store::write` → one `Store::flush` for the batch → reply →
//! HTTP 200 → CLI prints. Nothing is acknowledged before the flush.
#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod home;
pub mod identity;
pub mod net;
pub mod netem;
pub mod runtime;
pub mod store;
pub mod views;
