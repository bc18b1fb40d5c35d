//! Remediation actions: the vocabulary shared by routewatch's self-healing policies and the
//! automation endpoint that carries them out (the simulator here, a real one in production).

use serde::{Deserialize, Serialize};

/// An action an automation endpoint can take on a router (`POST /routers/{id}/actions` with
/// `{"action": NAME}`). [`Action::iter`] lists them, and the wire name (kebab-case) is the one
/// serde, `Display` and `FromStr` use, all derived from this one declaration.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Action {
    /// Restart the leaking or runaway process (routing daemon); BGP sessions re-establish.
    RestartProcess,
    /// Bounce a flapping or erroring interface.
    ResetInterface,
    /// Apply route-flap dampening to a flapping BGP peer.
    DampenPeer,
    /// Move the load to the redundant power supply.
    FailoverPsu,
    /// Steer traffic away from the router (drain), for overload, loss or heat.
    RerouteTraffic,
}

impl Action {
    /// Every action, in declaration order.
    pub fn iter() -> impl Iterator<Item = Action> {
        <Action as strum::IntoEnumIterator>::iter()
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Every wire name, comma-separated: for error messages.
    pub fn names() -> String {
        Action::iter().map(Action::name).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_is_the_same_for_serde_display_and_parsing() {
        for action in Action::iter() {
            assert_eq!(serde_json::to_string(&action).unwrap(), format!("\"{}\"", action.name()));
            assert_eq!(action.to_string(), action.name());
            assert_eq!(action.name().parse::<Action>().unwrap(), action);
        }
        assert_eq!(Action::names(), "restart-process, reset-interface, dampen-peer, failover-psu, reroute-traffic");
        assert!("reboot".parse::<Action>().is_err());
    }
}
