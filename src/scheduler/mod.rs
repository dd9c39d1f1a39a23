//! The cache-aware scheduler: which model is resident, who is admitted, when
//! to swap. `state.rs` is the synchronous state machine, `policy.rs` the pure
//! decisions.

pub mod policy;
pub mod state;

#[cfg(test)]
#[path = "state_tests.rs"]
mod state_tests;
