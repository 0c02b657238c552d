//! Named API credentials: each has a name and roles, and a token shown once when it is
//! created. Only the SHA-256 of the token is stored (a `a<name>` row, written through the
//! writer like every change), and the table in memory answers which credential a token is.
//! Creating and revoking take effect for the next request, with no restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::{By, Caller, Role, BY_SYSTEM};
use crate::persistence::{codec, keys, Op, StateView, Ticket, Writer};

/// Every credential token starts with this, so that it is told from a cart token at a glance
/// (and by secret scanners).
pub const TOKEN_PREFIX: &str = "sr_";

/// Length of a token's secret, in bytes (hex-encoded after the prefix).
const SECRET_BYTES: usize = 32;

/// Names the server records as `by` for callers that are not credentials; no credential may
/// take them.
const RESERVED_NAMES: [&str; 4] = ["admin", "cart", "anonymous", BY_SYSTEM];

/// Longest credential name (the rule of merchant ids).
pub const NAME_LENGTH_MAX: usize = crate::domain::ids::SKU_ID_LENGTH_MAX;

/// A stored credential (its row).
///
/// Roles are stored by their position in [`Role`]: new roles go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRow {
    /// Its roles.
    pub roles: Vec<Role>,
    /// SHA-256 of its token.
    pub token_hash: [u8; 32],
    /// When it was created.
    pub created_at_ms: u64,
    /// Who created it.
    pub created_by: String,
}

/// A credential as listed: never its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// Its name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// When it was created.
    pub created_at_ms: u64,
    /// Who created it.
    pub created_by: String,
}

/// Why a credential could not be created or revoked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// The name breaks the naming rule, or is reserved.
    #[error("{0}")]
    InvalidName(String),
    /// No roles, or a role that does not exist.
    #[error("{0}")]
    InvalidRoles(String),
    /// A credential with that name exists.
    #[error("a credential named {0:?} exists; revoke it first to reuse the name")]
    Exists(String),
    /// No credential with that name.
    #[error("no credential named {0:?}")]
    NotFound(String),
    /// The writer's queue is full.
    #[error("the writer is overloaded")]
    Overloaded,
}

#[derive(Default)]
struct Table {
    /// The credential of each token hash.
    by_hash: HashMap<[u8; 32], Caller>,
    /// Every credential by name.
    by_name: HashMap<String, (CredentialRow, Caller)>,
}

impl Table {
    fn insert(&mut self, name: String, row: CredentialRow) {
        let caller = Caller::Named {
            name: Arc::from(name.as_str()),
            roles: Arc::from(row.roles.as_slice()),
        };
        self.by_hash.insert(row.token_hash, caller.clone());
        self.by_name.insert(name, (row, caller));
    }
}

/// The credentials, in memory and in the store.
pub struct Credentials {
    table: RwLock<Table>,
    /// Serialises creating and revoking (rare), so that a name is checked and taken at once.
    changes: Mutex<()>,
}

/// A credential just created: its token (shown this once) and what is listed.
#[derive(Debug)]
pub struct Created {
    /// The token.
    pub token: String,
    /// The credential.
    pub info: CredentialInfo,
    /// When the row is durable.
    pub ticket: Ticket,
}

impl Credentials {
    /// The credentials stored in `store`.
    pub fn load(store: &StateView) -> anyhow::Result<Self> {
        let mut table = Table::default();
        crate::persistence::recovery::for_each_row(store, keys::CREDENTIAL, |key, bytes| {
            let row: CredentialRow = store.decode(key, bytes)?;
            table.insert(String::from_utf8_lossy(&key[1..]).into_owned(), row);
            Ok(())
        })?;
        Ok(Self {
            table: RwLock::new(table),
            changes: Mutex::new(()),
        })
    }

    /// The credential a token stands for, if any (`None` for a revoked or unknown token).
    pub fn resolve(&self, token: &str) -> Option<Caller> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // A poisoned lock means a panic mid-insert; the table is still a valid map.
        let table = self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.by_hash.get(&hash).cloned()
    }

    /// Every credential, by name.
    pub fn list(&self) -> Vec<CredentialInfo> {
        let table = self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut items: Vec<CredentialInfo> = table.by_name.iter().map(|(name, (row, _))| info(name, row)).collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        items
    }

    /// Creates a credential named `name` with `roles` (both checked here), made by `by`.
    /// The answer waits for its ticket; the token works from the next request on.
    pub fn create(
        &self,
        writer: &Writer,
        name: &str,
        roles: &[String],
        by: &By,
        now_ms: u64,
    ) -> Result<Created, CredentialError> {
        check_name(name)?;
        let roles = parse_roles(roles)?;
        let _change = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.read_table().by_name.contains_key(name) {
            return Err(CredentialError::Exists(name.to_owned()));
        }
        let (token, token_hash) = new_token();
        let row = CredentialRow {
            roles,
            token_hash,
            created_at_ms: now_ms,
            created_by: by.to_string(),
        };
        let ops = vec![Op::Put(keys::credential(name), codec::encode(&row))];
        let ticket = crate::actors::persist(writer, ops, Vec::new(), now_ms, by).ok_or(CredentialError::Overloaded)?;
        let info = info(name, &row);
        self.write_table().insert(name.to_owned(), row);
        tracing::info!(credential = name, by = &**by, roles = ?info.roles, "credential created");
        Ok(Created { token, info, ticket })
    }

    /// Revokes the credential named `name`: its token stops working at once (before the
    /// removal is durable; a crash before then brings the row back, never a lost revocation
    /// that was acknowledged).
    pub fn revoke(
        &self,
        writer: &Writer,
        name: &str,
        by: &By,
        now_ms: u64,
    ) -> Result<(CredentialInfo, Ticket), CredentialError> {
        let _change = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let row = {
            let mut table = self.write_table();
            let (row, _) = table
                .by_name
                .remove(name)
                .ok_or_else(|| CredentialError::NotFound(name.to_owned()))?;
            table.by_hash.remove(&row.token_hash);
            row
        };
        let ops = vec![Op::Delete(keys::credential(name))];
        let Some(ticket) = crate::actors::persist(writer, ops, Vec::new(), now_ms, by) else {
            // Not revoked after all: the caller is told to retry.
            self.write_table().insert(name.to_owned(), row);
            return Err(CredentialError::Overloaded);
        };
        tracing::info!(credential = name, by = &**by, "credential revoked");
        Ok((info(name, &row), ticket))
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn info(name: &str, row: &CredentialRow) -> CredentialInfo {
    CredentialInfo {
        name: name.to_owned(),
        roles: row.roles.clone(),
        created_at_ms: row.created_at_ms,
        created_by: row.created_by.clone(),
    }
}

/// Names follow the SKU id rule (1 to 64 of `[A-Za-z0-9._-]`) and are not reserved.
fn check_name(name: &str) -> Result<(), CredentialError> {
    if !crate::domain::ids::is_merchant_id(name) {
        return Err(CredentialError::InvalidName(format!(
            "credential names are 1 to {NAME_LENGTH_MAX} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        )));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(CredentialError::InvalidName(format!(
            "{name:?} is reserved: changes by the admin token, cart tokens and the server are recorded under it"
        )));
    }
    Ok(())
}

fn parse_roles(names: &[String]) -> Result<Vec<Role>, CredentialError> {
    let all = || Role::ALL.map(Role::as_str).join(", ");
    if names.is_empty() {
        return Err(CredentialError::InvalidRoles(format!(
            "roles must name at least one of {}",
            all()
        )));
    }
    let mut roles = Vec::with_capacity(names.len());
    for name in names {
        let role = Role::parse(name)
            .ok_or_else(|| CredentialError::InvalidRoles(format!("unknown role {name:?}: roles are {}", all())))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    roles.sort();
    Ok(roles)
}

/// A new credential token and the hash to store.
fn new_token() -> (String, [u8; 32]) {
    use rand::RngCore;
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let hash = Sha256::digest(token.as_bytes()).into();
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_id_rule_and_reserved_names_are_refused() {
        assert!(check_name("erp-sync.1").is_ok());
        for bad in ["", "with space", "admin", "cart", "system", &"x".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(CredentialError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roles_must_be_known_and_at_least_one() {
        let roles = |names: &[&str]| parse_roles(&names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            roles(&["read", "inventory", "read"]),
            Ok(vec![Role::Inventory, Role::Read])
        );
        assert!(matches!(roles(&[]), Err(CredentialError::InvalidRoles(_))));
        assert!(matches!(roles(&["owner"]), Err(CredentialError::InvalidRoles(_))));
    }

    #[test]
    fn a_token_is_prefixed_and_only_its_hash_is_kept() {
        let (token, hash) = new_token();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 2 * SECRET_BYTES);
        let stored: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert_eq!(hash, stored);
        assert_ne!(new_token().0, token);
    }
}
