//! Router names to the `u32` ids a detector batch carries, and back.

use std::collections::HashMap;

use crate::state::RouterInfo;

/// Gives each router name a small, stable id, in order of first sight, and keeps what the
/// first record of the router said about it (its site and role).
#[derive(Debug, Default, Clone)]
pub struct RouterTable {
    ids: HashMap<String, u32>,
    routers: Vec<RouterInfo>,
}

impl RouterTable {
    /// The table a saved state had (ids are positions).
    pub fn from_infos(routers: Vec<RouterInfo>) -> RouterTable {
        let mut table = RouterTable::default();
        for info in routers {
            table.insert(info);
        }
        table
    }

    /// The id of `name`, assigning the next free one on first sight.
    pub fn id(&mut self, name: &str) -> u32 {
        self.id_with(name, None, None)
    }

    /// The id of `name`; on first sight the router is given the next free id and `site` and
    /// `role` are kept for its events.
    pub fn id_with(&mut self, name: &str, site: Option<&str>, role: Option<&str>) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        self.insert(RouterInfo {
            name: name.to_owned(),
            site: site.unwrap_or_default().to_owned(),
            role: role.unwrap_or_default().to_owned(),
        })
    }

    fn insert(&mut self, info: RouterInfo) -> u32 {
        let id = u32::try_from(self.routers.len()).expect("fewer than 2^32 routers");
        // A saved table never names a router twice; if one did, its first id stays.
        self.ids.entry(info.name.clone()).or_insert(id);
        self.routers.push(info);
        id
    }

    /// The name of router `id`.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.info(id).map(|r| r.name.as_str())
    }

    /// What the table knows of router `id`.
    pub fn info(&self, id: u32) -> Option<&RouterInfo> {
        self.routers.get(id as usize)
    }

    /// Every router, in id order.
    pub fn infos(&self) -> &[RouterInfo] {
        &self.routers
    }

    /// Routers in the table.
    pub fn len(&self) -> usize {
        self.routers.len()
    }

    /// No router yet.
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_stable_and_reversible() {
        let mut table = RouterTable::default();
        assert_eq!(table.id("b"), 0);
        assert_eq!(table.id("a"), 1);
        assert_eq!(table.id("b"), 0);
        assert_eq!(table.name(1), Some("a"));
        assert_eq!(table.name(2), None);
        assert_eq!(table.len(), 2);
    }
}
