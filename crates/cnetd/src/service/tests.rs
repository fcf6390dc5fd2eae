//! Lifecycle tests against the fake dataplane.
