//! The map of a self-pacing generator program (the cycling live-frames generator, the flood
//! loop): pacing set from user space, counts read back. Laid out as in `programs::cycle`, with
//! room for more fields after it.

use std::os::fd::OwnedFd;

use anyhow::{Result, bail};

use super::programs::cycle;
use super::sys::{array_map, map_lookup, map_update, word};

/// What a self-pacing generator program counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CycleCounts {
    /// Frames it sent.
    pub sent: u64,
    /// Runs its pacer held back.
    pub held: u64,
}

pub struct PacerMap {
    pub(super) map: OwnedFd,
    size: usize,
    what: &'static str,
}

impl PacerMap {
    /// A one-element array map of `size` bytes (at least `cycle::VALUE_SIZE`); `what` names
    /// it in errors.
    pub fn new(size: u32, what: &'static str) -> Result<PacerMap> {
        if size < cycle::VALUE_SIZE {
            bail!("{what}: a value of {size} bytes has no room for the pacer");
        }
        Ok(PacerMap {
            map: array_map(size, what)?,
            size: size as usize,
            what,
        })
    }

    fn value(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.size];
        if let Err(e) = map_lookup(&self.map, &mut v) {
            bail!("reading {}: {e}", self.what);
        }
        Ok(v)
    }

    /// Sets the u64 fields at these byte offsets, the others kept.
    pub fn set(&self, fields: &[(i16, u64)]) -> Result<()> {
        let mut v = self.value()?;
        for &(at, x) in fields {
            let at = at as usize;
            v[at..at + 8].copy_from_slice(&x.to_ne_bytes());
        }
        if let Err(e) = map_update(&self.map, &v) {
            bail!("writing {}: {e}", self.what);
        }
        Ok(())
    }

    /// The fields that pace at `rate` per second from now on (`None`: unpaced).
    pub fn pacing(rate: Option<u64>) -> Result<[(i16, u64); 2]> {
        let interval = match rate {
            None => 0,
            Some(0) => bail!("a paced generator needs a rate above 0"),
            Some(r) => (1_000_000_000 / r).max(1),
        };
        Ok([(cycle::INTERVAL, interval), (cycle::NEXT, 0)])
    }

    pub fn counts(&self) -> Result<CycleCounts> {
        let v = self.value()?;
        Ok(CycleCounts {
            sent: word(&v, cycle::SENT),
            held: word(&v, cycle::HELD),
        })
    }
}
