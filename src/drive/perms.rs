//! Permission levels, per-item permissions, and how a user's level on an
//! item is decided.
//!
//! # The rules
//! An item's [`Permissions`] hold levels for users, for roles, and a default.
//! For a user with some roles:
//! 1. if the user's entry or any of their roles' entries is [`Level::Deny`],
//!    the level is `Deny` — an explicit deny always wins;
//! 2. otherwise, if any entry matches, the level is the highest of them;
//! 3. otherwise the default, if the item has one;
//! 4. otherwise `Read`.
//!
//! # Inheritance
//! Permissions **inherit down the tree**: an item whose permissions are
//! empty (no user or role entry and no default) takes its level from its
//! parent, and so on up to the root, whose permissions the unchecked drive
//! sets like any item's (an empty root gives everyone `Read`). An item with
//! any entry of its own is decided by its own permissions alone — so a
//! folder's deny protects everything below it that has no permissions of its
//! own, and a child can be opened up (or closed) explicitly.

use std::collections::BTreeMap;

use crate::lmdb::{encode_len_prefixed, malformed, Decoder};
use crate::{Error, Result};

/// What a user may do with an item. Ordered: `Deny < Read < Edit < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing; not even see it.
    Deny = 0,
    /// See it, its data and its children.
    Read = 1,
    /// Also change its data, create children under it, move or rename it.
    Edit = 2,
    /// Also change its permissions and delete it.
    Admin = 3,
}

impl Level {
    /// The level's name: `"deny"`, `"read"`, `"edit"`, `"admin"`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Deny => "deny",
            Level::Read => "read",
            Level::Edit => "edit",
            Level::Admin => "admin",
        }
    }

    /// The level with this name (as [`name`](Level::name) spells it).
    pub fn parse(name: &str) -> Result<Level> {
        match name {
            "deny" => Ok(Level::Deny),
            "read" => Ok(Level::Read),
            "edit" => Ok(Level::Edit),
            "admin" => Ok(Level::Admin),
            other => Err(Error::invalid_argument(format!(
                "permission level {other:?} is not one of deny, read, edit, admin"
            ))),
        }
    }

    fn from_byte(byte: u8) -> Option<Level> {
        [Level::Deny, Level::Read, Level::Edit, Level::Admin]
            .get(byte as usize)
            .copied()
    }
}

/// One item's permissions: levels for users and roles, and a default for
/// everyone else. Empty permissions inherit the parent's (see the module
/// docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// The level of anyone with no matching user or role entry.
    pub default: Option<Level>,
    /// Levels by user name.
    pub users: BTreeMap<String, Level>,
    /// Levels by role name.
    pub roles: BTreeMap<String, Level>,
}

impl Permissions {
    /// Whether the item has no permissions of its own (and so inherits).
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.users.is_empty() && self.roles.is_empty()
    }

    /// The level these permissions give `user` with `roles`, or `None` if
    /// they are empty and the parent decides.
    pub fn level_for(&self, user: &str, roles: &[String]) -> Option<Level> {
        if self.is_empty() {
            return None;
        }
        let matching = self
            .users
            .get(user)
            .into_iter()
            .chain(roles.iter().filter_map(|role| self.roles.get(role)));
        let mut best: Option<Level> = None;
        for &level in matching {
            if level == Level::Deny {
                return Some(Level::Deny);
            }
            best = best.max(Some(level));
        }
        Some(best.or(self.default).unwrap_or(Level::Read))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.default.map_or(0xff, |level| level as u8));
        for map in [&self.users, &self.roles] {
            out.extend_from_slice(&(map.len() as u32).to_be_bytes());
            for (name, level) in map {
                encode_len_prefixed(out, name.as_bytes());
                out.push(*level as u8);
            }
        }
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Permissions> {
        let level = |byte| Level::from_byte(byte).ok_or_else(|| malformed(format!("permission level {byte}")));
        let default = match d.u8()? {
            0xff => None,
            byte => Some(level(byte)?),
        };
        let mut maps = [BTreeMap::new(), BTreeMap::new()];
        for map in maps.iter_mut() {
            for _ in 0..d.u32()? {
                let name = d.str()?.to_owned();
                map.insert(name, level(d.u8()?)?);
            }
        }
        let [users, roles] = maps;
        Ok(Permissions { default, users, roles })
    }
}

/// Who is calling, and whether their levels are enforced. The unchecked
/// drive acts as the system (empty user name, not enforced).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Actor {
    pub user: String,
    pub roles: Vec<String>,
    pub enforced: bool,
}

impl Actor {
    /// The level this actor gets from `own` permissions, given the level it
    /// has on the parent (which an empty `own` inherits).
    pub fn level(&self, own: &Permissions, inherited: Level) -> Level {
        if !self.enforced {
            return Level::Admin;
        }
        own.level_for(&self.user, &self.roles).unwrap_or(inherited)
    }

    /// `Ok` if `level` is at least `needed`, else PermissionDenied naming the
    /// user, the action and the item.
    pub fn require(&self, level: Level, needed: Level, action: &str, item: &dyn std::fmt::Display) -> Result<()> {
        if level >= needed {
            return Ok(());
        }
        Err(Error::permission_denied(format!(
            "user {:?} may not {action} item {item}: needs {}, has {}",
            self.user,
            needed.name(),
            level.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(default: Option<Level>, users: &[(&str, Level)], roles: &[(&str, Level)]) -> Permissions {
        Permissions {
            default,
            users: users.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
            roles: roles.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
        }
    }

    #[test]
    fn an_explicit_deny_wins_over_any_grant() {
        let p = perms(Some(Level::Admin), &[("ann", Level::Admin)], &[("ops", Level::Deny)]);
        assert_eq!(p.level_for("ann", &["ops".into()]), Some(Level::Deny));
        let p = perms(None, &[("ann", Level::Deny)], &[("ops", Level::Admin)]);
        assert_eq!(p.level_for("ann", &["ops".into()]), Some(Level::Deny));
    }

    #[test]
    fn the_highest_matching_entry_then_the_default_then_read() {
        let p = perms(Some(Level::Deny), &[("ann", Level::Read)], &[("ops", Level::Edit)]);
        assert_eq!(p.level_for("ann", &["ops".into()]), Some(Level::Edit));
        assert_eq!(p.level_for("ann", &[]), Some(Level::Read));
        assert_eq!(p.level_for("bob", &[]), Some(Level::Deny));
        let p = perms(None, &[("ann", Level::Admin)], &[]);
        assert_eq!(p.level_for("bob", &[]), Some(Level::Read));
        assert_eq!(Permissions::default().level_for("bob", &[]), None);
    }

    #[test]
    fn permissions_round_trip_through_bytes() {
        let p = perms(
            Some(Level::Edit),
            &[("ann", Level::Admin), ("bob", Level::Deny)],
            &[("ops", Level::Read)],
        );
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        let mut d = Decoder::new(&bytes);
        assert_eq!(Permissions::decode(&mut d).unwrap(), p);
        assert!(d.finish(()).is_ok());
    }

    #[test]
    fn levels_parse_by_name() {
        for level in [Level::Deny, Level::Read, Level::Edit, Level::Admin] {
            assert_eq!(Level::parse(level.name()).unwrap(), level);
        }
        assert_eq!(
            Level::parse("owner").unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
    }
}
