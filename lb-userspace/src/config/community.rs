//! BGP community values: standard `A:B` and large `large:A:B:C`.

use super::model::Community;

/// Why a community string did not parse. MetalLB treats a wrong field count as a possible
/// alias name (transient), and a bad number or marker as a hard error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommunityError {
    /// Not of the form `A:B` or `large:A:B:C` (it may be an alias name).
    Format(String),
    /// The right shape with a bad field.
    Value(String),
}

impl CommunityError {
    pub fn message(&self) -> &str {
        match self {
            Self::Format(m) | Self::Value(m) => m,
        }
    }
}

/// Parses a literal community value.
pub fn parse(text: &str) -> Result<Community, CommunityError> {
    let fields: Vec<&str> = text.split(':').collect();
    match fields.as_slice() {
        [high, low] => {
            let part = |f: &str| {
                f.parse::<u16>().map_err(|_| {
                    CommunityError::Value(format!(
                        "invalid community value {text:?}: section {f:?} is not a number in 0..=65535"
                    ))
                })
            };
            Ok(Community::Standard(part(high)?, part(low)?))
        }
        [marker, a, b, c] => {
            if *marker != "large" {
                return Err(CommunityError::Value(format!(
                    "invalid community value {text:?}: a large community is written large:<uint32>:<uint32>:<uint32>"
                )));
            }
            let part = |f: &str| {
                f.parse::<u32>().map_err(|_| {
                    CommunityError::Value(format!(
                        "invalid community value {text:?}: section {f:?} is not a number in 0..=4294967295"
                    ))
                })
            };
            Ok(Community::Large(part(a)?, part(b)?, part(c)?))
        }
        _ => Err(CommunityError::Format(format!(
            "invalid community format {text:?}: expected A:B, large:A:B:C or the name of a Community alias"
        ))),
    }
}

impl std::fmt::Display for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Community::Standard(a, b) => write!(f, "{a}:{b}"),
            Community::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn table() {
        assert_eq!(parse("65000:100"), Ok(Community::Standard(65000, 100)));
        assert_eq!(parse("0:0"), Ok(Community::Standard(0, 0)));
        assert_eq!(
            parse("large:4294967295:1:2"),
            Ok(Community::Large(u32::MAX, 1, 2))
        );
        for value in [
            "65536:1",
            "1:-1",
            "a:1",
            "1:",
            "large:1:2:4294967296",
            "big:1:2:3",
            "large:x:1:1",
        ] {
            assert!(
                matches!(parse(value), Err(CommunityError::Value(_))),
                "{value}"
            );
        }
        for format in ["no-export", "1:2:3", "large:1:2", "1:2:3:4:5", ""] {
            assert!(
                matches!(parse(format), Err(CommunityError::Format(_))),
                "{format}"
            );
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(a in any::<u16>(), b in any::<u16>(), x in any::<u32>(), y in any::<u32>(), z in any::<u32>()) {
            let standard = Community::Standard(a, b);
            prop_assert_eq!(parse(&standard.to_string()), Ok(standard));
            let large = Community::Large(x, y, z);
            prop_assert_eq!(parse(&large.to_string()), Ok(large));
        }
    }
}
