//! Counts of the gRPC calls a server received, by method, for the Prometheus metrics of the
//! board's HTTP listener (`lienthong_grpc_requests_total`).
//!
//! Counted when a request arrives, before authentication: refused calls count too (that is
//! what an operator watching for a misconfigured agency wants to see). The method is the
//! request's path (`/lienthong.v1.AgencyService/CompleteStep`); a path outside the served
//! packages, or any path beyond [`METHODS_MAX`] distinct ones, is counted as `other`, so that a
//! client sending made-up paths cannot grow the metrics without bound.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Distinct methods counted by name; beyond them, `other`.
pub const METHODS_MAX: usize = 64;

/// The label of every path not counted by name.
pub const OTHER: &str = "other";

/// Calls received by method. Cheap to clone: clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct RequestCounts {
    /// Calls by method path (at most [`METHODS_MAX`] keys plus [`OTHER`]).
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounts {
    /// Counts one call to `path`.
    pub fn record(&self, path: &str) {
        let known = ["/lienthong.v1.", "/grpc.health.v1.", "/grpc.reflection.v1."]
            .iter()
            .any(|p| path.starts_with(p));
        let mut counts = self.counts.lock();
        let key = if known && (counts.contains_key(path) || counts.len() < METHODS_MAX) {
            path
        } else {
            OTHER
        };
        *counts.entry(key.to_string()).or_insert(0) += 1;
    }

    /// The counts so far, by method.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_bounds_the_names() {
        let c = RequestCounts::default();
        c.record("/lienthong.v1.DossierService/Submit");
        c.record("/lienthong.v1.DossierService/Submit");
        c.record("/evil/path");
        assert_eq!(c.snapshot()["/lienthong.v1.DossierService/Submit"], 2);
        assert_eq!(c.snapshot()[OTHER], 1);
        for i in 0..2 * METHODS_MAX {
            c.record(&format!("/lienthong.v1.X/M{i}"));
        }
        let s = c.snapshot();
        assert!(s.len() <= METHODS_MAX + 1, "{}", s.len());
        assert_eq!(s.values().sum::<u64>(), 3 + 2 * METHODS_MAX as u64);
    }
}
