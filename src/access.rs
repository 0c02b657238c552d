//! What a caller may touch ([`Access`]), checked by the cart and order actors, and the one
//! constant-time comparison of secrets.

/// Who is asking: the admin, or the holder of a cart token (identified by the hash of its
/// secret). Cart and order actors check it against their own token hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The admin token: everything.
    Admin,
    /// A cart token: its own cart and the orders made from it.
    Token([u8; 32]),
}

impl Access {
    /// Whether these credentials may use an aggregate guarded by `token_hash`.
    pub fn allows(&self, token_hash: &[u8; 32]) -> bool {
        match self {
            Access::Admin => true,
            Access::Token(hash) => constant_time_eq(hash, token_hash),
        }
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
        assert!(Access::Admin.allows(&[8; 32]));
    }
}
