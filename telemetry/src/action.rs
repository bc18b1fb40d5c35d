//! Remediation actions: the vocabulary shared by routewatch's self-healing policies and the
//! automation endpoint that carries them out (the simulator here, a real one in production).

use serde::{Deserialize, Serialize};

/// An action an automation endpoint can take on a router (`POST /routers/{id}/actions` with
/// `{"action": NAME}`). [`Action::all`] lists them, and the wire name (kebab-case) is the one
/// serde, `Display` and `FromStr` use, all derived from this one declaration: the simulator's
/// actions API, the self-healing policies and the OpenAPI document read it from here.
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
    strum::VariantArray,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Action {
    /// Restart the routing process (`process restart bgp`, `restart routing`).
    RestartProcess,
    /// Shut and re-enable an interface (`shutdown` / `no shutdown`).
    ResetInterface,
    /// Dampen the flapping BGP peer (route-flap damping, or shut the peer).
    DampenPeer,
    /// Move the load to the redundant power supply and power the failing one off.
    FailoverPsu,
    /// Steer traffic off the congested or lossy path (IGP metrics, BGP policy).
    RerouteTraffic,
    /// Run the fans at full speed (compensates for a hot room or blocked airflow).
    BoostFans,
    /// Have remote hands hot-swap the fan tray.
    ReplaceFanTray,
}

impl Action {
    /// Every action, in declaration order.
    pub fn all() -> &'static [Action] {
        <Action as strum::VariantArray>::VARIANTS
    }

    /// The wire name (`restart-process`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Every action's wire name.
    pub fn names() -> Vec<&'static str> {
        Action::all().iter().map(|a| a.name()).collect()
    }

    /// The action of a wire name.
    pub fn from_name(name: &str) -> Option<Action> {
        name.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_is_the_same_for_serde_display_and_parsing() {
        for &action in Action::all() {
            assert_eq!(serde_json::to_string(&action).unwrap(), format!("\"{}\"", action.name()));
            assert_eq!(action.to_string(), action.name());
            assert_eq!(Action::from_name(action.name()), Some(action));
        }
        assert_eq!(Action::names()[..2], ["restart-process", "reset-interface"]);
        assert_eq!(Action::from_name("reboot"), None);
    }
}
