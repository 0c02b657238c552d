//! Who may do what: the roles of named credentials ([`Role`]), who is calling ([`Caller`]),
//! the rule each route declares ([`Rule`]), what the cart and order actors check
//! ([`Access`]), and the one constant-time comparison of secrets.
//!
//! The rules, by caller:
//! - the admin token may do everything;
//! - a named credential may use the routes whose rule lists one of its roles;
//! - a cart token may use its own cart and the orders made from it (another cart's token
//!   finds nothing: `404`, never `403`), and nothing that needs a role;
//! - anyone may use the public routes.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::domain::CartId;

/// A role of a named credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// SKUs, locations, stock writes, reservations, batch sync.
    Inventory,
    /// Order lists, status moves, fulfilments, returns.
    Fulfilment,
    /// Paying orders.
    Payments,
    /// Every read.
    Read,
}

impl Role {
    /// Every role, in the order they are documented.
    pub const ALL: [Role; 4] = [Role::Inventory, Role::Fulfilment, Role::Payments, Role::Read];

    /// The role's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Inventory => "inventory",
            Role::Fulfilment => "fulfilment",
            Role::Payments => "payments",
            Role::Read => "read",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// The admin token.
    Admin,
    /// A named credential and its roles.
    Named {
        /// The credential's name (recorded as `by`).
        name: Arc<str>,
        /// Its roles.
        roles: Arc<[Role]>,
    },
    /// A cart token: the cart it names and the hash of its secret (checked by the cart and
    /// its orders, which hold the hash).
    Cart {
        /// The cart the token names.
        cart: CartId,
        /// SHA-256 of the token's secret.
        hash: [u8; 32],
    },
}

/// Who made a change, as recorded with its events (`by`): a credential's name, `admin`,
/// `cart` (a cart token), `anonymous`, or `system` (the server on its own: expiries,
/// timeouts, recovery).
pub type By = Arc<str>;

/// What the server records as `by` for a change made without a request.
pub const BY_SYSTEM: &str = "system";

static SYSTEM: LazyLock<By> = LazyLock::new(|| Arc::from(BY_SYSTEM));
static ADMIN: LazyLock<By> = LazyLock::new(|| Arc::from("admin"));
static CART: LazyLock<By> = LazyLock::new(|| Arc::from("cart"));
static ANONYMOUS: LazyLock<By> = LazyLock::new(|| Arc::from("anonymous"));

/// `by` of a change the server makes on its own.
pub fn by_system() -> By {
    Arc::clone(&SYSTEM)
}

impl Caller {
    /// Whether the caller holds `role` (the admin holds every role).
    pub fn has_role(&self, role: Role) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Named { roles, .. } => roles.contains(&role),
            Caller::Anonymous | Caller::Cart { .. } => false,
        }
    }

    /// Whether the caller is staff: the admin or a named credential (any role). Staff see
    /// every stock counter, whatever the public may see.
    pub fn is_staff(&self) -> bool {
        matches!(self, Caller::Admin | Caller::Named { .. })
    }

    /// What the actors check: a cart token opens only its own aggregates; the admin and
    /// named credentials (whose roles the route already checked) open any.
    pub fn access(&self) -> Access {
        match self {
            Caller::Cart { hash, .. } => Access::Token(*hash),
            Caller::Admin | Caller::Named { .. } => Access::Staff,
            Caller::Anonymous => Access::Nothing,
        }
    }

    /// The name recorded with the changes this caller makes (`by`).
    pub fn by(&self) -> By {
        Arc::clone(match self {
            Caller::Anonymous => &ANONYMOUS,
            Caller::Admin => &ADMIN,
            Caller::Named { name, .. } => name,
            Caller::Cart { .. } => &CART,
        })
    }

    /// The scope of the idempotency keys this caller sends: keys of different callers never
    /// replay each other's answers.
    pub fn scope(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".to_owned(),
            Caller::Admin => "admin".to_owned(),
            Caller::Named { name, .. } => format!("credential:{name}"),
            Caller::Cart { cart, .. } => format!("cart:{cart}"),
        }
    }
}

/// The rule a route declares: who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, with or without credentials.
    Public,
    /// The admin, or a named credential with one of these roles.
    Roles(&'static [Role]),
    /// The cart token of the cart the route names (or of the cart its order came from), the
    /// admin, or a named credential with one of these roles.
    Owner(&'static [Role]),
    /// The admin token only.
    Admin,
}

/// Why a rule refuses a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials where some are needed: `401`.
    Unauthenticated,
    /// Valid credentials without the right: `403`.
    Forbidden,
}

impl Rule {
    /// Whether `caller` may call a route with this rule. A cart token passes an `Owner` rule
    /// here; the cart or order then checks that it is the owner's.
    pub fn admits(self, caller: &Caller) -> Result<(), Refusal> {
        match (self, caller) {
            (Rule::Public, _) | (_, Caller::Admin) => Ok(()),
            (_, Caller::Anonymous) => Err(Refusal::Unauthenticated),
            (Rule::Owner(_), Caller::Cart { .. }) => Ok(()),
            (Rule::Roles(roles) | Rule::Owner(roles), Caller::Named { .. })
                if roles.iter().any(|role| caller.has_role(*role)) =>
            {
                Ok(())
            }
            _ => Err(Refusal::Forbidden),
        }
    }
}

/// What the cart and order actors check: may these credentials use an aggregate guarded by
/// a cart token's hash?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The admin or a named credential whose role the route checked: any aggregate.
    Staff,
    /// A cart token: its own cart and the orders made from it.
    Token([u8; 32]),
    /// No credentials: no cart or order.
    Nothing,
}

impl Access {
    /// Whether these credentials may use an aggregate guarded by `token_hash`.
    pub fn allows(&self, token_hash: &[u8; 32]) -> bool {
        match self {
            Access::Staff => true,
            Access::Token(hash) => constant_time_eq(hash, token_hash),
            Access::Nothing => false,
        }
    }

    /// Whether this is a shopper's cart token (which may do less than staff on an order).
    pub fn is_cart_token(&self) -> bool {
        matches!(self, Access::Token(_))
    }
}

/// Compares secrets in time independent of where they differ (only their lengths leak).
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter().zip(right).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(roles: &[Role]) -> Caller {
        Caller::Named {
            name: Arc::from("erp"),
            roles: Arc::from(roles),
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }

    #[test]
    fn a_cart_token_opens_only_its_own_aggregate() {
        assert!(Access::Token([7; 32]).allows(&[7; 32]));
        assert!(!Access::Token([7; 32]).allows(&[8; 32]));
        assert!(Access::Staff.allows(&[8; 32]));
    }

    #[test]
    fn roles_admit_only_the_routes_that_list_them() {
        let inventory = named(&[Role::Inventory]);
        assert_eq!(Rule::Roles(&[Role::Inventory]).admits(&inventory), Ok(()));
        assert_eq!(
            Rule::Roles(&[Role::Payments]).admits(&inventory),
            Err(Refusal::Forbidden)
        );
        assert_eq!(Rule::Owner(&[Role::Read]).admits(&inventory), Err(Refusal::Forbidden));
        assert_eq!(Rule::Admin.admits(&named(&Role::ALL)), Err(Refusal::Forbidden));
        assert_eq!(Rule::Admin.admits(&Caller::Admin), Ok(()));
        assert_eq!(Rule::Public.admits(&Caller::Anonymous), Ok(()));
        assert_eq!(
            Rule::Roles(&[Role::Read]).admits(&Caller::Anonymous),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn a_cart_token_passes_owner_rules_only() {
        let cart = Caller::Cart {
            cart: CartId::generate(),
            hash: [1; 32],
        };
        assert_eq!(Rule::Owner(&[]).admits(&cart), Ok(()));
        assert_eq!(Rule::Roles(&[Role::Payments]).admits(&cart), Err(Refusal::Forbidden));
        assert_eq!(Rule::Admin.admits(&cart), Err(Refusal::Forbidden));
    }
}
