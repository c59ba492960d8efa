//! Identifiers: the internal dossier id and the human dossier code.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Internal dossier id: a UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DossierId(pub Uuid);

impl DossierId {
    /// A fresh v7 id.
    pub fn new() -> Self {
        DossierId(Uuid::now_v7())
    }

    /// The 16 bytes, big-endian: the key prefix of the dossier's stream in the store.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The partition that owns the dossier when the dossier space is split into `count`
    /// partitions: FNV-1a 64 over the 16 bytes, modulo `count` (the bus contract's
    /// `partition_of`, docs/nats.md; a test in crates/node checks that both agree).
    pub fn partition(&self, count: u32) -> u32 {
        let hash = self
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        // The remainder is below `count`, a u32.
        (hash % u64::from(count.max(1))) as u32
    }
}

impl Default for DossierId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DossierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DossierId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DossierId(Uuid::parse_str(s)?))
    }
}

/// The human dossier code for life: `<receiving agency prefix>-<yymmdd>-<daily sequence>`, e.g.
/// `UBND.XA-261122-0001`. The sequence has at least four digits (more past 9,999 a day).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DossierCode(pub String);

impl DossierCode {
    /// Builds a code from its parts.
    pub fn new(prefix: &str, yymmdd: &str, daily_seq: u64) -> Self {
        DossierCode(format!("{prefix}-{yymmdd}-{daily_seq:04}"))
    }
}

impl fmt::Display for DossierCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_match_the_bus_contracts_vectors() {
        // The vectors of docs/nats.md and lienthong_bus::contract, with 16 partitions.
        let nil: DossierId = "00000000-0000-0000-0000-000000000000"
            .parse()
            .expect("uuid");
        assert_eq!(nil.partition(16), 5);
        let v7: DossierId = "0190f5c2-7d1e-7a3b-9c4d-5e6f708192a3"
            .parse()
            .expect("uuid");
        assert_eq!(v7.partition(16), 11);
        assert_eq!(v7.partition(1), 0);
    }

    #[test]
    fn code_has_four_digits_at_least() {
        assert_eq!(
            DossierCode::new("UBND.XA", "261122", 1).0,
            "UBND.XA-261122-0001"
        );
        assert_eq!(
            DossierCode::new("UBND.XA", "261122", 12345).0,
            "UBND.XA-261122-12345"
        );
    }

    #[test]
    fn ids_round_trip_as_text() {
        let id = DossierId::new();
        assert_eq!(id.to_string().parse::<DossierId>().unwrap(), id);
    }
}
