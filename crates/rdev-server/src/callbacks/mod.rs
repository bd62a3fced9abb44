//! Result callbacks: which URLs rdev may call ([`url_policy`]) and how a delivery is signed
//! ([`signing`], Standard Webhooks). Delivery itself reads the outbox the store writes in
//! the transaction that finishes a task.

pub mod dispatcher;
pub mod keys;
pub mod signing;
pub mod url_policy;
