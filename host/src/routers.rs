//! Router names to the `u32` ids a detector batch carries, and back.

use std::collections::HashMap;

/// Gives each router name a small, stable id, in order of first sight.
#[derive(Debug, Default, Clone)]
pub struct RouterTable {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl RouterTable {
    /// The id of `name`, assigning the next free one on first sight.
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 routers");
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
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
