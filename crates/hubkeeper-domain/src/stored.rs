//! Building blocks of the stored event format.
//!
//! Event payloads are a contract with every row already in the store, so they are built only
//! from types defined for them (the `Stored*` types next to each aggregate's events) and from
//! primitives whose serialized form is fixed on its own (ids, `Sealed`, timestamps, `Currency`,
//! `DailyTime`, strings and numbers). State and command types convert to and from the stored
//! types explicitly: a change to state that would change what is stored fails to compile at the
//! conversion instead of silently changing the format. The fixtures under
//! `tests/fixtures/events` prove the format unchanged.

/// A stored mirror of a field-less domain enum: same variant names, each with its stored name
/// spelled out here, and conversions both ways that stop compiling when either side changes.
macro_rules! stored_enum {
    (
        $(#[$doc:meta])*
        $stored:ident <=> $domain:ident { $($variant:ident = $name:literal),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $stored {
            $(
                #[doc = concat!("Stored as `", $name, "`.")]
                #[serde(rename = $name)]
                $variant
            ),+
        }

        impl $stored {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $stored {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$domain> for $stored {
            fn from(value: $domain) -> Self {
                match value {
                    $($domain::$variant => Self::$variant),+
                }
            }
        }

        impl From<$stored> for $domain {
            fn from(value: $stored) -> Self {
                match value {
                    $($stored::$variant => Self::$variant),+
                }
            }
        }
    };
}

pub(crate) use stored_enum;

/// `From` both ways between two structs with fields of the same names: each field converted with
/// `Into` (the identity for primitives), or with the function named after `via` (generic in both
/// directions). Both sides are spelled out in full (a destructuring pattern without `..`, a struct
/// literal), so a field added to either side stops the build here.
macro_rules! convert_fields {
    ($a:ident <=> $b:ident { $($field:ident $(via $convert:path)?),+ $(,)? }) => {
        convert_fields!(@one $a => $b { $($field $(via $convert)?),+ });
        convert_fields!(@one $b => $a { $($field $(via $convert)?),+ });
    };
    (@one $from:ident => $to:ident { $($field:ident $(via $convert:path)?),+ }) => {
        impl From<$from> for $to {
            fn from(value: $from) -> Self {
                let $from { $($field),+ } = value;
                Self {
                    $($field: convert_fields!(@field $field $(, $convert)?)),+
                }
            }
        }
    };
    (@field $field:ident) => {
        $field.into()
    };
    (@field $field:ident, $convert:path) => {
        $convert($field)
    };
}

pub(crate) use convert_fields;

/// Converts an optional value.
pub(crate) fn convert_option<T, U: From<T>>(value: Option<T>) -> Option<U> {
    value.map(U::from)
}

/// Converts every element (lists and sets of stored or domain values).
pub(crate) fn convert_all<T, U: From<T>, C: FromIterator<U>>(
    values: impl IntoIterator<Item = T>,
) -> C {
    values.into_iter().map(U::from).collect()
}
