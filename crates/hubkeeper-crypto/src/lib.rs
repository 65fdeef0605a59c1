//! Envelope encryption for Hubkeeper's secrets (OAuth tokens, client secrets).
//!
//! # Why envelopes
//!
//! Tokens live in an append-only event store: they can never be updated or deleted there.
//! Encrypting them directly with one global key would make key rotation a rewrite of history
//! and deletion of one tenant impossible. Instead there are two layers:
//!
//! * **Master keys** ([`MasterKeyring`]) come from configuration, never touch the database and
//!   only ever encrypt ("wrap") data keys.
//! * **Data keys** ([`DataKey`]) are random, one per tenant (installation or app). They seal
//!   the actual secrets into [`Sealed`] values, which are what events and read models carry.
//!   At rest a data key exists only as a [`WrappedKey`] in a mutable table, keyed by tenant.
//!
//! # How it is meant to be used
//!
//! 1. First connect of an installation: [`DataKey::generate`], store
//!    `keyring.wrap(&dk, &installation_id)` in the tenant key table.
//! 2. Before emitting an event: [`seal`] each token with that data key and an [`Aad`] naming the
//!    installation and the token kind; the domain only ever sees [`Sealed`].
//! 3. To use a token: load the wrapped key, [`MasterKeyring::unwrap`] it, [`open_string`] the
//!    sealed value; the plaintext comes back as a `SecretString`.
//! 4. Master key rotation (`hubkeeper keys rotate`): configure the new key as active next to
//!    the old one, [`MasterKeyring::rewrap`] every row for which
//!    [`MasterKeyring::needs_rewrap`] holds, then drop the old key from configuration. Sealed
//!    tokens are untouched; only the small wrapped keys change.
//!
//! # Crypto-shredding
//!
//! Forgetting a tenant means deleting its wrapped data key (and any cached copy). Every
//! [`Sealed`] value of that tenant in the event store and in backups then becomes permanently
//! unreadable, which is how "delete my data" is honoured in an immutable log. Only sealed
//! fields are shredded: anything the domain stores in clear (hub domain, e-mail addresses) is
//! not covered by this mechanism.
//!
//! # Algorithms
//!
//! AES-256-GCM with random 96-bit nonces for both layers. Associated data is a versioned,
//! length-prefixed encoding of ids and labels, so values are bound to their owner, their kind
//! and the key id they claim.

mod datakey;
mod encoding;
mod error;
mod keyring;
mod sealed;

pub use datakey::{DataKey, WrappedKey};
pub use error::CryptoError;
pub use keyring::{generate_key_b64, MasterKeyring};
pub use sealed::{open, open_string, seal, Aad, Sealed, SecretKind};

/// Re-exported so callers can read opened secrets without adding `secrecy` themselves.
pub use secrecy::{ExposeSecret, SecretSlice, SecretString};
