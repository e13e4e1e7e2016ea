//! The strategy names and their registration: one line per strategy in
//! [`strategies!`] ties a config name to the type that decides with it.

use std::fmt;
use std::str::FromStr;

use super::Balance;

/// Declares [`Strategy`] (the names used in config and per task) and which
/// [`Balance`] type makes each one's per-set state.
macro_rules! strategies {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal => $state:ty, )+) => {
        /// A placement strategy, chosen in config and overridable per task.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum Strategy {
            $( $(#[$doc])* $variant, )+
        }

        impl Strategy {
            /// How many strategies there are.
            pub const COUNT: usize = [$($name),+].len();
            pub const ALL: [Strategy; Self::COUNT] = [$(Strategy::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( Strategy::$variant => $name, )+
                }
            }

            /// This strategy's decision state for a new eligible set.
            pub(super) fn new_state(self) -> Box<dyn Balance> {
                match self {
                    $( Strategy::$variant => Box::<$state>::default(), )+
                }
            }
        }
    };
}

strategies! {
    RoundRobin = "round_robin" => super::round_robin::RoundRobin,
    WeightedRoundRobin = "weighted_round_robin" => super::weighted_round_robin::WeightedRoundRobin,
    LeastConnections = "least_connections" => super::least_connections::LeastConnections,
    ResponseTime = "response_time" => super::response_time::ResponseTime,
    ConsistentHash = "consistent_hash" => super::consistent_hash::ConsistentHash,
    /// Power of two choices: the default, O(1) and near-optimal under load.
    #[default]
    P2c = "p2c" => super::p2c::P2c,
    Adaptive = "adaptive" => super::adaptive::Adaptive,
    CostAware = "cost_aware" => super::cost_aware::CostAware,
}

impl Strategy {
    /// Position in [`Strategy::ALL`], for per-strategy tables.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name; the message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStrategy(pub String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown placement strategy {:?} (one of: ", self.0)?;
        for (i, s) in Strategy::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(s.as_str())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownStrategy {}

impl FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownStrategy(s.chars().take(64).collect()))
    }
}
