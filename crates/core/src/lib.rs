//! Pure domain logic of quiesce.
//!
//! Everything here decides; nothing here talks. The adapters (`quiesce-kube`, `quiesce-aws`,
//! `quiesce-sandbox`) feed it plain data and carry out what it decides, so the same rules run
//! against a real cluster, the sandbox, and unit tests without a network.
