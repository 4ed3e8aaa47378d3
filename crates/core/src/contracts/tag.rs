//! The versioned `schema` field every message carries.

/// Defines a unit type that serializes as one fixed schema id and refuses any other on input.
macro_rules! schema_tag {
    ($(#[$doc:meta])* $name:ident = $id:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            pub const ID: &'static str = $id;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($id)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                if value == $id {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(format_args!(
                        "expected schema `{}`, found `{}`",
                        $id, value
                    )))
                }
            }
        }
    };
}

pub(crate) use schema_tag;
